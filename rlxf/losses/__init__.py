"""Pure loss functions over tensors.

Each function takes tensors and explicit keyword hyperparameters and returns
``(per_example_loss, metrics)``; reduction over a (global) batch lives in
:mod:`rlxf.losses.reduce`. Importing this package imports only torch.
"""

from rlxf.losses.preference import PREFERENCE_LOSSES, kto
from rlxf.losses.reduce import sequence_mean, token_mean
from rlxf.losses.reward import bradley_terry, general_preference

__all__ = ["PREFERENCE_LOSSES", "bradley_terry", "general_preference", "kto", "sequence_mean", "token_mean"]
