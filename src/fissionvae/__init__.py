"""fissionvae: federated VAEs for non-IID client groups."""

__version__ = "0.1.0"
