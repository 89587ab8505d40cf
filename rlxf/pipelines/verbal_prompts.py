"""C3PO's prompts of three scopes (`rlxf c3po`, Stephan et al. 2024): from files, or written by the
generator model from the scope in words; out of scope, the shipped HH prompts by default; and the
feedback itself from the feedback app's verbal export."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

from rlxf.config import ConfigError
from rlxf.data import read_preferences
from rlxf.data.formats import read_prompts
from rlxf.recipes.common import report_bad_rows, resolve_path, say, write_json

if TYPE_CHECKING:
    from rlxf.pipelines.verbal import C3POConfig, Models

SCOPES = ("in_scope", "near_scope", "out_of_scope")
_WRITE_IN = "Write one question that a user could ask an AI assistant about {scope}. Reply with the question only."
_WRITE_NEAR = (
    "Write one question that a user could ask an AI assistant about a topic close to {scope}, but not about "
    "{scope} itself. Reply with the question only."
)
_DEFAULT_GENERAL = Path(__file__).resolve().parents[2] / "data" / "hh_rlhf_harmless_demo.jsonl"


def exported_feedback(reference: str) -> str:
    """The feedback text on one line of the app's verbal.jsonl export (``path:line``)."""
    location, _, line = reference.rpartition(":")
    if not location or not line.isdigit() or int(line) < 1:
        raise ConfigError(f"feedback_from={reference!r}: expected path:line, e.g. verbal.jsonl:3")
    path = resolve_path(location)
    if not path.is_file():
        raise ConfigError(f"feedback_from={reference}: no such file (the feedback app's verbal.jsonl export)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if int(line) > len(lines):
        raise ConfigError(f"{path}, line {line}: the file has {len(lines)} lines")
    try:
        text = json.loads(lines[int(line) - 1]).get("feedback")
    except (ValueError, AttributeError):
        raise ConfigError(f"{path}, line {line}: not a JSON object") from None
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{path}, line {line}, field 'feedback': expected the written feedback (non-empty text)")
    say(f"c3po: feedback from {path}, line {line}: {text.strip()!r}")
    return text.strip()


def scoped_prompts(config: C3POConfig, models: Models, folder: Path) -> dict[str, dict[str, list]]:
    """Each scope's train and held-out prompts (messages), kept in ``folder`` for a rerun."""
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / "prompts.json"
    if kept.exists():
        saved = json.loads(kept.read_text(encoding="utf-8"))
        if saved["settings"] == prompt_settings(config):
            return saved["scopes"]
    rng, scopes = random.Random(config.seed), {}
    for scope in SCOPES:
        prompts = given_prompts(config, scope) or written_prompts(config, models, scope)
        held = max(1, round(len(prompts) * config.eval_fraction))
        rng.shuffle(prompts)
        scopes[scope] = {"train": prompts[held:], "eval": prompts[:held]}
        say(f"c3po: {len(prompts)} {scope.replace('_', '-')} prompts, {held} held out")
    write_json(kept, {"settings": prompt_settings(config), "scopes": scopes})
    return scopes


def prompt_settings(config: C3POConfig) -> dict:
    return {
        k: getattr(config, k) for k in ("scope", *SCOPES, "prompts_per_scope", "eval_fraction", "generator", "seed")
    }


def given_prompts(config: C3POConfig, scope: str) -> list[list[dict]]:
    path = getattr(config, scope) or (str(_DEFAULT_GENERAL) if scope == "out_of_scope" else "")
    if not path:
        return []
    path = resolve_path(path)
    if scope == "out_of_scope" and not getattr(config, scope):
        pairs, bad = read_preferences(path, on_bad_row="skip")
        report_bad_rows(bad, path)
        prompts = [pair.prompt[:1] for pair in pairs]  # the first user turn: a general request
    else:
        records, bad = read_prompts(path, on_bad_row="error")
        report_bad_rows(bad, path)
        prompts = [record.messages for record in records]
    unique = list({json.dumps(p, sort_keys=True): p for p in prompts}.values())
    if len(unique) < len(prompts):
        say(f"{path}: {len(prompts) - len(unique)} repeated prompts counted once")
    unique = unique[: config.prompts_per_scope]
    if len(unique) < 4:
        raise ConfigError(f"{path}: {len(unique)} distinct prompts; {scope} needs at least 4")
    return unique


def written_prompts(config: C3POConfig, models: Models, scope: str) -> list[list[dict]]:
    """``prompts_per_scope`` distinct questions the generator writes about (or near) the scope."""
    request = (_WRITE_IN if scope == "in_scope" else _WRITE_NEAR).format(scope=config.scope.strip())
    found: dict[str, None] = {}
    for round_ in range(4):
        texts = models.answer(
            models.generator,
            [[{"role": "user", "content": request}]],
            temperature=1.0,
            n=2 * config.prompts_per_scope,
            seed=config.seed * 1000 + round_ + (0 if scope == "in_scope" else 500),
        )
        for text in texts:
            line = text.strip().splitlines()[0].strip().strip('"') if text.strip() else ""
            if len(line) > 8:
                found.setdefault(line)
        if len(found) >= config.prompts_per_scope:
            break
    if len(found) < 4:
        raise ConfigError(f"the generator wrote {len(found)} usable {scope} prompts; give {scope}= a prompt file")
    return [[{"role": "user", "content": q}] for q in list(found)[: config.prompts_per_scope]]
