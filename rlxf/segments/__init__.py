"""Preference models over trajectory segments, fitted to real human labels: the partial-return and
regret models of Knox et al., "Models of human preference for learning reward functions", 2022
(TMLR 2024, arXiv 2206.02231), and CPL (Hejna et al., ICLR 2024), on the delivery-domain data of
Hatgis-Kessell et al., 2025 (arXiv 2501.06416) (``rlxf segments``; docs/games.md)."""

from rlxf.segments.data import CONDITIONS, SegmentPairs, load_condition, load_conditions
from rlxf.segments.models import PREFERENCE_MODELS, fit_scale, partial_return_feature, regret_feature

__all__ = [
    "CONDITIONS",
    "PREFERENCE_MODELS",
    "SegmentPairs",
    "fit_scale",
    "load_condition",
    "load_conditions",
    "partial_return_feature",
    "regret_feature",
]
