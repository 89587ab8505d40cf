"""Human preferences between trajectory segments in the delivery grid world.

Hatgis-Kessell et al., "Influencing Humans to Conform to Preference Models for RLHF", 2025 (arXiv
2501.06416), collected these labels in the delivery domain of Knox et al., "Models of human
preference for learning reward functions", 2022 (TMLR 2024, arXiv 2206.02231). Each condition
has three files, ``<condition>_full_filtered_{X,Y,segment_pairs}.npy``:

- ``X`` (N, 3): [ΔPR, ΔV*(s_0), ΔV*(s_T)], right segment minus left (partial return, the optimal
  value of the start state and of the end state);
- ``Y`` (N,): P(right ≻ left), 0, ½ (the rater called them the same) or 1;
- ``segment_pairs`` (N, 2, 4, 2): per segment (left, right) the start cell (x, y in 0-9), then
  three moves, each one of (-1, 0), (1, 0), (0, -1), (0, 1), or (0, 0): in the Privileged
  conditions a segment that reaches a terminal cell (the goal or a sheep) is padded with (0, 0)
  to its end (147-584 such moves per Privileged condition); such a step takes no action.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONDITIONS = (
    "Privileged-Control",
    "Pr-Privileged",
    "Regret-Privileged",
    "Question-Control",
    "Pr-Question",
    "Regret-Question",
    "Trained-Control",
    "Pr-Trained",
    "Regret-Trained",
)
"""The 9 conditions: an intervention (Privileged: raters see the model's quantities; Question: the
question is reworded; Trained: raters are taught a model) aimed at a preference model (Pr: partial
return, Regret: regret) or at none (Control)."""

MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))
"""The four actions of the delivery domain, in the order of the upstream environment."""

PADDING = (0, 0)
"""The move that pads a segment after it reached a terminal cell: no action."""

GRID = 10
"""The board is GRID x GRID cells."""


@dataclass(frozen=True)
class SegmentPairs:
    """One condition's labelled pairs of 3-move segments."""

    condition: str
    features: np.ndarray  # (N, 3) float64 [ΔPR, ΔV*(s_0), ΔV*(s_T)], right minus left
    labels: np.ndarray  # (N,) float64 P(right ≻ left) in {0, 0.5, 1}
    segments: np.ndarray  # (N, 2, 4, 2) int64 per side: start cell (x, y), then 3 moves (dx, dy)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def ties(self) -> int:
        """Pairs the rater called the same (label ½)."""
        return int(np.sum(self.labels == 0.5))


def condition_paths(folder: str | Path, condition: str) -> dict[str, Path]:
    """The three files of ``condition`` in ``folder``, by kind (X, Y, segment_pairs)."""
    return {kind: Path(folder) / f"{condition}_full_filtered_{kind}.npy" for kind in ("X", "Y", "segment_pairs")}


def load_condition(folder: str | Path, condition: str) -> SegmentPairs:
    """Read and check one condition; a missing or malformed file is a ValueError naming it."""
    paths = condition_paths(folder, condition)
    features, labels, segments = (_read(path) for path in paths.values())
    n = len(labels) if labels.ndim == 1 else -1
    _expect(labels.ndim == 1 and n > 0, paths["Y"], f"shape {labels.shape}, expected (N,) with N > 0")
    _expect(features.shape == (n, 3), paths["X"], f"shape {features.shape}, expected ({n}, 3) to match Y")
    _expect(segments.shape == (n, 2, 4, 2), paths["segment_pairs"], f"shape {segments.shape}, expected ({n}, 2, 4, 2)")
    _check_labels(labels, paths["Y"])
    _check_rows(~np.isfinite(features).all(axis=1), paths["X"], "a value that is not finite")
    _check_segments(segments, paths["segment_pairs"])
    return SegmentPairs(condition, features.astype(np.float64), labels.astype(np.float64), segments.astype(np.int64))


def load_conditions(folder: str | Path, conditions: tuple[str, ...] | list[str] = CONDITIONS) -> list[SegmentPairs]:
    """Read every condition in ``conditions`` (all 9 by default), in that order."""
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; known: {list(CONDITIONS)}")
    return [load_condition(folder, condition) for condition in conditions]


def _read(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path}: file not found (expected a .npy array of the delivery_human_prefs data)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npy array ({error})") from None
    _expect(np.issubdtype(array.dtype, np.number), path, f"dtype {array.dtype}, expected numbers")
    return array


def _expect(ok: bool, path: Path, problem: str) -> None:
    if not ok:
        raise ValueError(f"{path}: {problem}")


def _check_rows(bad: np.ndarray, path: Path, problem: str) -> None:
    """Name the first bad row (the file's "line") and how many there are."""
    rows = np.flatnonzero(bad)
    if len(rows):
        raise ValueError(f"{path}: row {rows[0]} has {problem} ({len(rows)} such rows)")


def _check_labels(labels: np.ndarray, path: Path) -> None:
    bad = ~np.isin(labels, (0.0, 0.5, 1.0))
    rows = np.flatnonzero(bad)
    if len(rows):
        raise ValueError(
            f"{path}: row {rows[0]} is {float(labels[rows[0]])!r}, expected 0, 0.5 or 1 ({len(rows)} such rows)"
        )


def _check_segments(segments: np.ndarray, path: Path) -> None:
    starts, moves = segments[:, :, 0, :], segments[:, :, 1:, :]
    off_board = ((starts < 0) | (starts >= GRID)).any(axis=(1, 2))
    _check_rows(off_board, path, f"a start cell outside 0-{GRID - 1}")
    is_move = (moves[..., None, :] == np.array(MOVES)).all(axis=-1).any(axis=-1)  # (N, 2, 3)
    padded = (moves == np.array(PADDING)).all(axis=-1)
    _check_rows(~(is_move | padded).all(axis=(1, 2)), path, f"a move that is none of {[*MOVES, PADDING]}")
    moves_after_padding = (np.cumsum(padded, axis=-1) > 0) & is_move
    _check_rows(moves_after_padding.any(axis=(1, 2)), path, f"a move after the padding {PADDING}")
