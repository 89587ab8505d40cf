"""Record types: what every feedback source writes and every learner reads.

A prompt is a conversation: a list of chat messages ``{"role": ..., "content": ...}``
ending with a user turn. A completion is the text of the next assistant turn.
``source`` says where a record came from (``file, line N``) so errors can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Message = dict[str, str]


@dataclass
class Prompt:
    """A conversation waiting for an assistant reply."""

    messages: list[Message]
    source: str = ""
    context: dict = field(default_factory=dict)
    """What a reward source needs besides the completion, e.g. {"answer": "72"} or {"tests": [...]}: the
    prompt file's other columns."""
    conversational: bool = False
    """The prompt came as a message list (TRL's conversational format), not as a string."""


@dataclass
class Preference:
    """A pairwise judgement: ``chosen`` is preferred to ``rejected`` after ``prompt``."""

    prompt: list[Message]
    chosen: str
    rejected: str
    tie: bool = False
    """Neither completion is preferred; ``chosen``/``rejected`` order carries no meaning."""
    margin: float | None = None
    """How clearly ``chosen`` is preferred (e.g. a score difference); larger is clearer."""
    aspects: dict[str, float] = field(default_factory=dict)
    """Per-aspect preference of chosen over rejected in [-1, 1], e.g. {"harmlessness": 1.0}."""
    annotator: str | None = None
    """Who gave the judgement (labeler id, judge name)."""
    weight: float = 1.0
    """How much this judgement counts relative to the others (e.g. its labeler's reliability)."""
    chosen_safe: bool | None = None
    """Whether ``chosen`` is harmless (True) or harmful (False); None: not labeled. A cost model
    (`rlxf cm`) reads it, with ``chosen`` the safer response."""
    rejected_safe: bool | None = None
    """The same for ``rejected``."""
    source: str = ""

    @property
    def group_key(self) -> str:
        """The first user turn: pairs that share it must land in the same split."""
        return next((m["content"] for m in self.prompt if m["role"] == "user"), "")


@dataclass
class Labeled:
    """One completion with a binary or scalar label (a reaction, a verifier verdict)."""

    prompt: list[Message]
    completion: str
    label: float
    """1 (desirable) or 0 (undesirable)."""
    annotator: str | None = None
    weight: float = 1.0
    """How much this example counts relative to the others (e.g. its labeler's reliability)."""
    source: str = ""

    @property
    def desirable(self) -> bool:
        return self.label > 0

    @property
    def group_key(self) -> str:
        return next((m["content"] for m in self.prompt if m["role"] == "user"), "")


@dataclass
class ResponseSet:
    """A prompt with candidate responses, waiting for feedback (a labeling item)."""

    prompt: list[Message]
    responses: list[str]
    models: list[str] = field(default_factory=list)
    """The model or checkpoint that wrote each response ("" when unknown)."""
    gold: dict | None = None
    """A known answer, making this a gold item that measures labelers' accuracy."""
    source: str = ""
