"""Agora: AI on demand for research computing centres."""

__version__ = "0.1.0"
