"""Machinery shared by the training loops: optimizer, batches, checkpoints, metrics."""

from rlxf.train.run import NonFiniteLoss, Run

__all__ = ["NonFiniteLoss", "Run"]
