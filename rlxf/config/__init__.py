"""Dataclass configs: loading from YAML and dotted overrides (loading.py), the sections the
recipes share (sections.py), and checks that also run when a field is set later (checked.py)."""

from rlxf.config.checked import Checked
from rlxf.config.loading import ConfigError, describe, field_docs, load_config, to_dict, to_yaml
from rlxf.config.sections import (
    DataSection,
    DistributedSection,
    LoraSection,
    ModelSection,
    ReferenceSection,
    TrainSection,
)

__all__ = [
    "Checked",
    "ConfigError",
    "DataSection",
    "DistributedSection",
    "LoraSection",
    "ModelSection",
    "ReferenceSection",
    "TrainSection",
    "describe",
    "field_docs",
    "load_config",
    "to_dict",
    "to_yaml",
]
