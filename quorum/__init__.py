"""Quorum: one OpenAI-compatible endpoint in front of every model on every machine you run."""

__version__ = "0.1.0"
