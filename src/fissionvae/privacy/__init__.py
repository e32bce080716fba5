"""Differential privacy for federated VAEs (docs/privacy.md).

- :mod:`settings`: the rules of the ``privacy:`` config section and which models support DP-SGD.
- :mod:`accounting`: per-client and server (epsilon, delta) accounting with Opacus's RDP/PRV
  accountants; the accountant state lives in the server state (checkpoint).
- :mod:`record`: record-level DP-SGD inside :func:`~fissionvae.federation.client.client_update`.
- :mod:`client_level`: client-level DP-FedAvg (joint update clip + Gaussian noise on every sum).
- :mod:`plan`: a run's resolved privacy settings (noise multiplier, sample rates) and its hooks
  into the round loop.
"""
