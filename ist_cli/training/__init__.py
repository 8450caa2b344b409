"""Training-procedure math shared by every MLP method: the learning-rate schedule, pruning
masks, the gradient-noise-scale estimator and the local Lipschitz estimate (docs/sparsity.md).

Plain numpy, no processes: the methods in ``ist_cli.algorithms`` call these."""
