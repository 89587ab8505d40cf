"""rlxf: train language models from feedback of every kind."""

__version__ = "0.1.0"
