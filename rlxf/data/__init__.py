"""Feedback records, readers for the formats users bring, chat templating and batching."""

from rlxf.data.batching import TokenBatch, pack, pad
from rlxf.data.errors import BadRows, DataError
from rlxf.data.formats import (
    read_demonstrations,
    read_feedback,
    read_labeled,
    read_preferences,
    read_prompts,
)
from rlxf.data.preference_formats import PREFERENCE_FORMATS, parse_dialogue
from rlxf.data.records import Labeled, Message, Preference, Prompt
from rlxf.data.split import split_by_group
from rlxf.data.templating import ChatEncoder, Encoded, TruncationStats

__all__ = [
    "BadRows",
    "ChatEncoder",
    "DataError",
    "Encoded",
    "Labeled",
    "Message",
    "PREFERENCE_FORMATS",
    "Preference",
    "Prompt",
    "TokenBatch",
    "TruncationStats",
    "pack",
    "pad",
    "parse_dialogue",
    "read_demonstrations",
    "read_feedback",
    "read_labeled",
    "read_preferences",
    "read_prompts",
    "split_by_group",
]
