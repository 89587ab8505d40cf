"""Contrastive Preference Learning on the delivery segments: a tabular policy learned from the labels.

Hejna et al., "Contrastive Preference Learning: Learning from Human Feedback without RL", 2023
(ICLR 2024, arXiv 2310.13639), the CPL loss with its conservative bias λ: under the regret
preference model of Knox et al. (2022, arXiv 2206.02231) with the optimal advantage A*(s, a) =
α log π*(a|s), a segment's score is S = α Σ_t log π(a_t|s_t) (undiscounted, as the authors' code)
and the loss of a preferred segment S⁺ over S⁻ is softplus(λ S⁻ − S⁺) (rlxf.losses.preference.cpl,
β = α). A soft label y = P(right ≻ left) (½ for a tie) gives the expected loss over both orders,
y · softplus(λ S_l − S_r) + (1 − y) · softplus(λ S_r − S_l).

The policy is a table of logits over the 100 cells × 4 moves, trained by full-batch gradient
descent from the uniform policy for a fixed number of steps: stopping early is the only
regularizer (a cell seen rarely moves little; Adam, which moves every logit alike, overfits the
small conditions, held-out cross-entropy mostly above log 2).

Probability of a preference: P(right ≻ left) = σ(S_r − S_l), the regret model CPL assumes. With
λ = 1 this is exactly the model the loss fits (the loss is then its soft-label cross-entropy), so
λ = 1 is the main CPL preference model reported; λ < 1 is read as a training-time regularizer
(Hejna et al. motivate it as a pull toward in-distribution actions), since the biased pair
σ(S_r − λ S_l), σ(S_l − λ S_r) does not sum to one and so is no probability.

States: the board (houses, which block moves) is not shipped (the upstream repository has no
license), so each segment's states are rebuilt from its start cell and moves, clipped at the
grid's edge; a move into a house is treated as a move (about 6% of segments bump into one, so their
later states are off by a cell). A padding move (0, 0), after a segment reached a terminal cell,
takes no action and adds nothing to S.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from rlxf.losses.preference import cpl
from rlxf.segments.data import GRID, MOVES

CELLS = GRID * GRID


def segment_steps(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cell where each move is taken and the move's index in MOVES (-1 for padding).

    ``segments`` (N, 2, 4, 2) as read by rlxf.segments.data; returns two (N, 2, 3) int64 arrays,
    cells numbered x · 10 + y. A move off the board leaves the position where it was.
    """
    position = segments[:, :, 0, :].copy()
    moves = segments[:, :, 1:, :]
    matches = (moves[..., None, :] == np.array(MOVES)).all(axis=-1)  # (N, 2, 3, 4)
    actions = np.where(matches.any(axis=-1), matches.argmax(axis=-1), -1)
    cells = np.empty(actions.shape, dtype=np.int64)
    for t in range(moves.shape[2]):
        cells[..., t] = position[..., 0] * GRID + position[..., 1]
        position = np.clip(position + moves[:, :, t, :], 0, GRID - 1)
    return cells, actions


def segment_log_probs(logits: Tensor, cells: Tensor, actions: Tensor) -> Tensor:
    """Σ_t log π(a_t|s_t) of each segment, (N, 2); padding steps (action -1) add 0.

    ``logits`` (CELLS, 4) is the tabular policy, π = softmax over the 4 moves; ``cells`` and
    ``actions`` (N, 2, 3) from :func:`segment_steps`.
    """
    log_policy = torch.log_softmax(logits, dim=-1)[cells, actions.clamp(min=0)]  # (N, 2, 3)
    return torch.where(actions >= 0, log_policy, torch.zeros_like(log_policy)).sum(dim=-1)


def soft_cpl_loss(log_probs: Tensor, labels: Tensor, *, alpha: float, bias: float) -> Tensor:
    """Per pair y · CPL(right ≻ left) + (1 − y) · CPL(left ≻ right), y = P(right ≻ left).

    ``log_probs`` (N, 2): Σ_t log π of the left and the right segment.
    """
    left, right = log_probs[:, 0], log_probs[:, 1]
    right_wins, _ = cpl(right, left, beta=alpha, bias=bias)
    left_wins, _ = cpl(left, right, beta=alpha, bias=bias)
    return labels * right_wins + (1 - labels) * left_wins


def train_cpl(
    cells: np.ndarray, actions: np.ndarray, labels: np.ndarray, *, alpha: float, bias: float, steps: int, lr: float
) -> Tensor:
    """The tabular policy's logits (CELLS, 4) after ``steps`` full-batch gradient-descent steps on
    the mean soft CPL loss, from the uniform policy (so the result is deterministic).

    ``cells``, ``actions`` (N, 2, 3) from :func:`segment_steps`; ``labels`` (N,) P(right ≻ left).
    """
    logits = torch.zeros(CELLS, len(MOVES), dtype=torch.float64, requires_grad=True)
    cells_t, actions_t = torch.as_tensor(cells), torch.as_tensor(actions)
    labels_t = torch.as_tensor(labels, dtype=torch.float64)
    optimizer = torch.optim.SGD([logits], lr=lr)
    with _one_thread():
        for _ in range(steps):
            optimizer.zero_grad()
            loss = soft_cpl_loss(segment_log_probs(logits, cells_t, actions_t), labels_t, alpha=alpha, bias=bias)
            loss.mean().backward()
            optimizer.step()
    return logits.detach()


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: on tensors this small, intra-op threads only add overhead (each
    step took 20-30x longer with two threads on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cpl_logits(logits: Tensor, cells: np.ndarray, actions: np.ndarray, *, alpha: float) -> np.ndarray:
    """The logit of P(right ≻ left) = σ(S_r − S_l), S = α Σ_t log π(a_t|s_t), for each pair."""
    with torch.no_grad():
        sums = segment_log_probs(logits, torch.as_tensor(cells), torch.as_tensor(actions))
    return (alpha * (sums[:, 1] - sums[:, 0])).numpy()
