"""``ist study``'s library half: study files expanded into sweeps, search sequences, trial
outcomes, trial step budgets and the steps-to-result fit (docs/study.md)."""
