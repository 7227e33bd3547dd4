"""skrecon: reconstruct a federated-learning client's batch from one gradient."""

__version__ = "0.1.0"
