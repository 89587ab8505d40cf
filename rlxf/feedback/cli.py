"""`rlxf feedback <action> key=value ...`: set up labeling and export its answers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rlxf.config import Checked, field_docs

ACTIONS = (
    "add-user",
    "set-password",
    "create-project",
    "import",
    "generate",
    "add-member",
    "judge",
    "prioritize",
    "quality",
    "export",
)


@dataclass
class FeedbackConfig(Checked):
    action: str = "export"
    """add-user, set-password (ends the account's web sessions), create-project, import (items from a file), generate (items sampled from a
    model for a file of prompts), add-member, judge (an LLM judge
    answers a pairwise project in both orders), prioritize (reward models set the active order),
    quality (labeler accuracy, consistency and agreement as JSON) or export."""
    db: str = "feedback.db"
    """The store: a SQLite file, or a SQLAlchemy URL."""
    name: str = ""
    """add-user, set-password: the account; create-project: the project; add-member: the account to add;
    judge: the judge's account (default judge)."""
    role: str = "labeler"
    """add-user: labeler or admin."""
    password: str = ""
    """add-user, set-password: a password for the web page (else the account uses its API token only)."""
    project: str = ""
    """import, add-member, generate, judge, prioritize, quality: the project's name."""
    question: str = "pairwise"
    """create-project: pairwise, ranking, reaction, rating, spans or verbal."""
    overlap: int = 1
    """create-project: answers wanted per item."""
    aspects: list[str] = field(default_factory=list)
    """create-project (rating): the aspects to rate."""
    span_tags: list[str] = field(default_factory=list)
    """create-project (spans): the error categories."""
    ordering: str = "random"
    """create-project: random, or active (items the reward models are least sure of first)."""
    gold_rate: float = 0.0
    """create-project: share of tasks that are gold items (rows with a "gold" answer)."""
    repeat_rate: float = 0.0
    """create-project: share of tasks that repeat an item the labeler answered (self-consistency)."""
    guidelines: str = ""
    """create-project: guidelines shown to labelers (markdown), or a path to a .md file."""
    file: str = ""
    """import: a file of {"prompt", "responses"} rows (or preference pairs); generate: prompts."""
    model: str = ""
    """generate: the model that writes the candidates (a run's model/ folder or an embedded name)."""
    n: int = 2
    """generate: responses per prompt."""
    temperature: float = 0.8
    """generate: sampling temperature."""
    max_new_tokens: int = 256
    """generate: longest response."""
    limit: int = 0
    """generate: use only the first N prompts (0 = all)."""
    judge_model: str = "smollm2-135m-instruct"
    """judge: the judge model (embedded name or local folder)."""
    rubric: str = ""
    """judge: what to compare (default: helpful, correct and harmless)."""
    reward_models: list[str] = field(default_factory=list)
    """prioritize: reward model folders (from `rlxf rm`); several form an ensemble."""
    out: str = "feedback-snapshots"
    """export: where snapshot folders go."""
    min_gold_accuracy: float = 0.0
    """export: leave out labelers whose gold accuracy is below this."""
    weight_by_reliability: bool = False
    """export: give each example a weight, its labeler's measured reliability (the learners
    weigh its loss by it)."""
    projects: list[str] = field(default_factory=list)
    """export: project names (all when empty)."""

    def check(self):
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {self.action!r}")


_ACTION_PREFIX = re.compile(r"(?:^|; )([a-z-]+(?:, [a-z-]+)*)(?: \([^)]*\))?: ")


def action_fields(action: str) -> set[str]:
    """The fields ``action`` reads: those whose description names it (``export: ...``), and those
    that name no action at all (the store)."""
    fields = set()
    for name, doc in field_docs(FeedbackConfig).items():
        named = {a for group in _ACTION_PREFIX.findall(doc) for a in group.split(", ")} & set(ACTIONS)
        if not named or action in named or name == "action":
            fields.add(name)
    return fields


def run_feedback(config: FeedbackConfig) -> None:
    from sqlalchemy import select

    from rlxf.feedback import admin
    from rlxf.feedback.ai import generate_items, judge_pairs, prioritize
    from rlxf.feedback.export import export_snapshot
    from rlxf.feedback.quality import quality_report
    from rlxf.feedback.store import Project, Store, User

    store = Store(config.db)
    store.upgrade()
    if config.action == "export":
        for folder in export_snapshot(
            store,
            config.out,
            config.projects or None,
            min_gold_accuracy=config.min_gold_accuracy,
            weight_by_reliability=config.weight_by_reliability,
        ):
            print(f"wrote {folder}")
        return
    with store.session() as session:

        def named(model, name: str, what: str):
            found = session.scalar(select(model).where(model.name == name))
            if found is None:
                raise ValueError(f"no {what} named {name!r}")
            return found

        if config.action == "add-user":
            user, token = admin.create_user(session, config.name, config.role, config.password or None)
            print(f"created {user.role} {user.name}; API token (shown once): {token}")
        elif config.action == "set-password":
            admin.set_password(named(User, config.name, "user"), config.password)
            print(f"set a new password for {config.name}; its web sessions have ended")
        elif config.action == "create-project":
            guidelines = config.guidelines
            if guidelines.endswith(".md") and Path(guidelines).is_file():
                guidelines = Path(guidelines).read_text(encoding="utf-8")
            project = admin.create_project(
                session,
                config.name,
                config.question,
                overlap=config.overlap,
                aspects=config.aspects,
                span_tags=config.span_tags,
                guidelines=guidelines,
                ordering=config.ordering,
                gold_rate=config.gold_rate,
                repeat_rate=config.repeat_rate,
            )
            print(f"created project {project.name} (id {project.id}, {project.question})")
        elif config.action == "generate":
            from rlxf.data.formats import read_prompts
            from rlxf.data.templating import ChatEncoder
            from rlxf.models import load_causal_lm, load_tokenizer
            from rlxf.rollout import HFEngine, SamplingParams

            prompts, _ = read_prompts(config.file)
            prompts = prompts[: config.limit] if config.limit else prompts
            tokenizer = load_tokenizer(config.model)
            encoder = ChatEncoder(tokenizer, max_length=2048 + config.max_new_tokens, max_prompt_length=2048)
            engine = HFEngine(load_causal_lm(config.model).eval(), encoder)
            sampling = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature, n=config.n)
            added = generate_items(
                session, named(Project, config.project, "project"), prompts, engine, sampling, model_name=config.model
            )
            print(f"generated {added} items ({config.n} responses each) into {config.project} with {config.model}")
        elif config.action == "judge":
            from rlxf.rewards.registry import build_reward_source

            judge = build_reward_source("judge", model=config.judge_model, mode="pairwise", rubric=config.rubric)
            counts = judge_pairs(session, named(Project, config.project, "project"), judge, config.name or "judge")
            print(f"judge answered {counts['items']} items: {counts['answers']} answers, {counts['unparsed']} unparsed")
        elif config.action == "prioritize":
            from rlxf.rewards.registry import build_reward_source

            models = [build_reward_source("reward_model", model=path) for path in config.reward_models]
            if not models:
                raise ValueError("prioritize needs reward_models=[path, ...]")
            scored = prioritize(session, named(Project, config.project, "project"), models)
            print(f"scored {scored} items of {config.project}; set ordering=active to ask the least sure first")
        elif config.action == "quality":
            import json

            report = quality_report(session, named(Project, config.project, "project"))
            print(json.dumps(report, indent=2, default=str))
        elif config.action == "import":
            count = admin.import_items(session, named(Project, config.project, "project"), config.file)
            print(f"imported {count} items into {config.project}")
        else:
            admin.add_member(session, named(Project, config.project, "project"), named(User, config.name, "user"))
            print(f"{config.name} labels {config.project}")
