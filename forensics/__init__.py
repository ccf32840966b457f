"""Streaming video forensics daemon: shared core used by workers and the trainer."""

__version__ = "0.1.0"
