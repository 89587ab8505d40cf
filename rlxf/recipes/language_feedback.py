"""Language feedback as a training signal.

`rlxf refine` (Align Anything's learning from language feedback, Ji et al. 2024): the policy answers
each prompt, a critic writes what is wrong with the answer (or a person did, in the feedback app's
verbal export), and the policy rewrites its answer following the critique; each rewrite over its
original is a preference pair for `rlxf dpo`, and each critique a training row for a critic of one's
own (`rlxf sft` on critiques.jsonl). Stages:
    prompts (or exported answers with people's feedback) -> answers -> critiques -> rewrites
    -> pairs.jsonl, critiques.jsonl, refine.json

`rlxf correction-data` (Zhou et al., "Sequence to Sequence Reward Modeling", AAAI 2025): preference
pairs as rows for a reward model that writes responses as they should be — the chosen response for the
rejected one (correction mapping) and for itself (identity mapping); `rlxf sft` learns them by sequence
maximum likelihood and `{kind: seq2seq, model: ...}` turns the model into token-level rewards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlxf.config import Checked, ConfigError, DataSection, ModelSection
from rlxf.data.formats import read_prompts
from rlxf.data.readers import iter_rows
from rlxf.recipes.common import load_preference_splits, report_bad_rows, resolve_path, say, write_json
from rlxf.rewards.judge import render_conversation
from rlxf.rewards.registry import build_reward_source
from rlxf.rewards.seq2seq import correction_chat
from rlxf.rollout import SamplingParams
from rlxf.rollout.hf import load_engine

CRITIQUE_REQUEST = "Say what is wrong or missing in the response above, in one or two sentences."
REFINE_REQUEST = (
    "Feedback on your answer: {critique}\nRewrite your answer following this feedback. Reply with the new answer only."
)


@dataclass
class RefineConfig(Checked):
    output_dir: str = "runs/refine"
    """Where pairs.jsonl, critiques.jsonl and refine.json go."""
    prompts: str = ""
    """A prompt file: the policy answers, the critic critiques, the policy rewrites."""
    critiques: str = ""
    """Instead of prompts: a verbal.jsonl from the feedback app; each row's prompt, first response shown and
    written feedback are the prompt, the answer and the critique."""
    limit: int = 0
    """Use only the first N rows (0 = all)."""
    policy: ModelSection = field(default_factory=ModelSection)
    """Writes the answers and the rewrites."""
    critic: str = ""
    """The model that writes critiques; empty: the policy."""
    max_new_tokens: int = 128
    """Longest answer, critique or rewrite."""
    temperature: float = 0.7
    """Sampling temperature of answers and rewrites; critiques are greedy."""
    seed: int = 0
    """Sampling seed."""
    keep_if_better: dict[str, Any] = field(default_factory=dict)
    """A reward source ({kind: reward_model, model: ...}, {kind: judge, ...}): only rewrites it scores above
    their originals become pairs (the others are counted); empty: every changed rewrite."""

    def check(self):
        if bool(self.prompts) == bool(self.critiques):
            raise ValueError("give prompts= (a prompt file) or critiques= (the app's verbal.jsonl), one of them")
        if self.limit < 0 or self.max_new_tokens < 1 or self.temperature <= 0:
            raise ValueError("need limit >= 0, max_new_tokens >= 1 and temperature > 0")


@dataclass
class Critiqued:
    prompt: list
    answer: str = ""
    critique: str = ""


def run_refine(config: RefineConfig) -> dict:
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    items = load_items(config)
    policy = load_engine(config.policy.name, max_new_tokens=config.max_new_tokens, dtype=config.policy.dtype)
    sampling = SamplingParams(config.max_new_tokens, config.temperature)
    if config.prompts:
        answers = generate(policy, [i.prompt for i in items], sampling, config.seed)
        for item, answer in zip(items, answers):
            item.answer = answer
        critic = policy if not config.critic else load_engine(config.critic, max_new_tokens=config.max_new_tokens)
        greedy = SamplingParams(config.max_new_tokens, 0.0)
        for item, critique in zip(items, generate(critic, [critique_chat(i) for i in items], greedy, config.seed)):
            item.critique = critique
    rewrites = generate(policy, [refine_chat(i) for i in items], sampling, config.seed + 1)
    better = judged_better(config, items, rewrites)
    results = write_outputs(output_dir, items, rewrites, better)
    write_json(output_dir / "refine.json", results)
    say(
        f"refine: {results['pairs']} pairs in {output_dir / 'pairs.jsonl'} ({results['unchanged']} rewrites "
        f"unchanged, {results['not_better']} not scored higher)"
    )
    return results


def load_items(config: RefineConfig) -> list[Critiqued]:
    if config.prompts:
        path = resolve_path(config.prompts)
        records, bad = read_prompts(path, on_bad_row="error")
        report_bad_rows(bad, path)
        items = [Critiqued(r.messages) for r in records]
    else:
        path = resolve_path(config.critiques)
        if not path.is_file():
            raise ConfigError(f"critiques={config.critiques}: no such file (the feedback app's verbal.jsonl export)")
        items = exported_critiques(path)
    items = items[: config.limit] if config.limit else items
    if not items:
        raise ConfigError(f"{config.prompts or config.critiques}: nothing to refine")
    return items


def exported_critiques(path: Path) -> list[Critiqued]:
    """The app's verbal.jsonl rows: the prompt, the first response shown, the written feedback."""
    items = []
    for location, row in iter_rows(path):
        where = f"{path}, {location}"
        shown, feedback = row.get("completions"), row.get("feedback")
        if not isinstance(shown, list) or not shown or not isinstance(shown[0], str):
            raise ConfigError(f"{where}, field 'completions': expected the responses shown (a list of text)")
        if not isinstance(feedback, str) or not feedback.strip():
            raise ConfigError(f"{where}, field 'feedback': expected the written feedback (non-empty text)")
        prompt = row.get("prompt")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if not isinstance(messages, list) or not messages or not all(is_message(m) for m in messages):
            raise ConfigError(f"{where}, field 'prompt': expected text or a list of {{role, content}} messages")
        items.append(Critiqued(messages, shown[0], feedback.strip()))
    return items


def is_message(value) -> bool:
    return isinstance(value, dict) and isinstance(value.get("role"), str) and isinstance(value.get("content"), str)


def critique_chat(item: Critiqued) -> list[dict]:
    question = f"[Conversation]\n{render_conversation(item.prompt)}\n\n[Response]\n{item.answer}\n\n{CRITIQUE_REQUEST}"
    return [{"role": "user", "content": question}]


def refine_chat(item: Critiqued) -> list[dict]:
    return [
        *item.prompt,
        {"role": "assistant", "content": item.answer},
        {"role": "user", "content": REFINE_REQUEST.format(critique=item.critique)},
    ]


def generate(engine, chats: list, sampling: SamplingParams, seed: int) -> list[str]:
    with torch.no_grad():
        rollout = engine.generate(chats, sampling, seeds=[seed * 1_000_003 + i for i in range(len(chats))])
    return [text.strip() for text in rollout.texts]


def judged_better(config: RefineConfig, items: list[Critiqued], rewrites: list[str]) -> list[bool]:
    """Whether ``keep_if_better`` scores each rewrite above its original (all True without it)."""
    if not config.keep_if_better:
        return [True] * len(items)
    options = {k: v for k, v in config.keep_if_better.items() if k != "kind"}
    source = build_reward_source(config.keep_if_better.get("kind", ""), **options)
    prompts = [i.prompt for i in items]
    new = source.score(prompts, rewrites).rewards
    old = source.score(prompts, [i.answer for i in items]).rewards
    return (new > old).tolist()


def write_outputs(output_dir: Path, items: list[Critiqued], rewrites: list[str], better: list[bool]) -> dict:
    """pairs.jsonl (each rewrite over its original; unchanged or empty rewrites, and those the check did
    not score higher, left out and counted) and critiques.jsonl (the critic's question answered with
    the critique, for `rlxf sft`)."""
    changed = [bool(r) and r != i.answer for i, r in zip(items, rewrites)]
    pairs = [
        {"prompt": i.prompt, "chosen": r, "rejected": i.answer, "critique": i.critique}
        for i, r, c, b in zip(items, rewrites, changed, better)
        if c and b
    ]
    critiques = [
        {"messages": [*critique_chat(i), {"role": "assistant", "content": i.critique}]} for i in items if i.critique
    ]
    for name, rows in (("pairs.jsonl", pairs), ("critiques.jsonl", critiques)):
        (output_dir / name).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    return {
        "items": len(items),
        "pairs": len(pairs),
        "unchanged": changed.count(False),
        "not_better": sum(c and not b for c, b in zip(changed, better)),
        "critiques": len(critiques),
    }


@dataclass
class CorrectionDataConfig(Checked):
    output_dir: str = "runs/correction_data"
    """Where train.jsonl (for `rlxf sft`) and held_out.jsonl go."""
    data: DataSection = field(default_factory=DataSection)
    """Preference pairs (ties are left out and counted); the held-out split is written aside, untouched."""


def write_correction_data(config: CorrectionDataConfig) -> dict:
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train, held, summary = load_preference_splits(config.data)
    decided = [pair for pair in train if not pair.tie]
    with (output_dir / "train.jsonl").open("w", encoding="utf-8") as out:
        for pair in decided:
            for response in (pair.rejected, pair.chosen):  # correction mapping, then identity mapping
                row = {"messages": correction_chat(pair.prompt, response, pair.chosen)}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (output_dir / "held_out.jsonl").open("w", encoding="utf-8") as out:
        for pair in held:
            row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected, "tie": pair.tie}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    results = {**summary, "train_rows": 2 * len(decided), "ties_left_out": len(train) - len(decided)}
    write_json(output_dir / "correction_data.json", results)
    say(
        f"{2 * len(decided)} rows in {output_dir / 'train.jsonl'}; next: rlxf sft data.path={output_dir / 'train.jsonl'} "
        "output_dir=runs/seq2seq_rm, then rewards=[{kind: seq2seq, model: runs/seq2seq_rm/model, weight: 0.05}]"
    )
    return results
