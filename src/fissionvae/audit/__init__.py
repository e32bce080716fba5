"""``fissionvae audit``: what a trained VAE run leaks about its clients' training images.

Modules: :mod:`.stats` (AUC, TPR at a fixed FPR, the Mann-Whitney z and the data-copying statistic),
:mod:`.memorisation` (nearest-neighbour distances of samples, the data-copying test, the copy grid),
:mod:`.membership` (the loss-threshold membership-inference attack and cross-group leakage),
:mod:`.run` (the audit of a run folder -> ``<run>/audit.json``), :mod:`.cli` (the sub-command).
docs/privacy-audit.md says what every number means.
"""
