"""Shared core of the recommendation serving stack: data, training, evaluation, CLI and gRPC plumbing."""

__version__ = "0.1.0"
