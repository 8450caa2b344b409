"""Columns of a network's offsets table (``offsets`` int64 (L, 4), ``ist_cli.models.mlp.NetLayout``):
where layer l's weights, bias, batch-norm scale and shift start in the flat parameter vector
(-1 when the layer has none). The kernels index by them; the model builds the table with them."""

W, B, GAMMA, BETA = 0, 1, 2, 3
