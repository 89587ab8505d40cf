"""Machinery shared by the training loops: optimizer, batches, checkpoints, metrics."""

from rlxf.train.run import Run, NonFiniteLoss

__all__ = ["NonFiniteLoss", "Run"]
