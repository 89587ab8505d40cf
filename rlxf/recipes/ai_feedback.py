"""AI feedback at scale, and a judge of one's own trained from people's labels.

`rlxf annotate` (UltraFeedback, Cui et al. 2023; juries of judges, Verga et al. 2024): several
judges rate every candidate on several rubric aspects, 1–5 in a call per aspect (or compare two
candidates per aspect in both orders); the ratings are aggregated (mean, majority, per aspect —
`rlxf.eval.juries`), binarized into preference pairs for `rlxf dpo` / `rlxf rm`, and each judge and
each aggregate is measured against the people's labels the file carries (agreement, Cohen's kappa,
as the feedback app's quality page measures judges). Stages:
    candidates -> ratings (judges × aspects, appended chunk by chunk, resumable) -> aggregates
    -> pairs.jsonl, agreement.json, report.md

`rlxf judge-data`: people's pairwise labels as training rows for a judge (JudgeLM, Zhu et al. 2023;
PandaLM, Wang et al. 2023: the judge is fine-tuned to answer the verdict), each pair in both orders
so that the judge learns no position; `rlxf sft policy.lora.rank=16` trains it and the saved model is
a judge for `rlxf annotate`, `rlxf feedback judge` and `{kind: judge, mode: pairwise}` rewards.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rlxf.config import Checked, ConfigError, DataSection
from rlxf.data import BadRows, Preference, read_preferences
from rlxf.data.formats import read_response_sets
from rlxf.data.readers import iter_rows
from rlxf.eval.juries import agreement, binarize, candidate_scores, panel_agreement, winner
from rlxf.recipes.common import (
    load_preference_splits,
    read_appended_rows,
    report_bad_rows,
    resolve_path,
    say,
    write_json,
)
from rlxf.rewards.judge import ASPECTS, DEFAULT_RUBRIC, LLMJudge, verdict_chat


@dataclass
class AnnotateConfig(Checked):
    output_dir: str = "runs/annotate"
    """Where annotations.jsonl, pairs.jsonl, agreement.json and report.md go."""
    data: DataSection = field(default_factory=DataSection)
    """Candidates: {prompt, responses: [...]} rows (a `gold: {better: i}` is a person's label), or a
    preference file, whose pairs are shown in a random order and whose people's choice is the label."""
    judges: list[str] = field(default_factory=lambda: ["smollm2-135m-instruct"])
    """Judge models: embedded names or folders (e.g. a judge trained from `rlxf judge-data` rows)."""
    aspects: list[str] = field(default_factory=lambda: list(ASPECTS))
    """Rubric aspects: UltraFeedback's (instruction_following, honesty, truthfulness, helpfulness), or
    "name: rubric" of your own; overall is the judges' default rubric (the one `rlxf judge-data` trains on)."""
    mode: str = "rating"
    """rating: each candidate rated 1–5 per aspect; pairwise: two candidates compared per aspect in both
    orders (a candidate's rating is then its share of wins)."""
    aggregate: str = "mean"
    """What picks pairs.jsonl's chosen and rejected: mean, majority or aspect:<name> (all are reported)."""
    max_new_tokens: int = 48
    """Longest judge reply."""
    batch_size: int = 16
    """Judge questions generated together."""
    items_per_chunk: int = 32
    """Items judged between two appends to annotations.jsonl (what an interrupted run loses at most)."""
    seed: int = 0
    """Seed of the candidates' order (preference files) and of the rejected candidate's draw."""

    def check(self):
        if not self.judges or len(set(self.judges)) != len(self.judges):
            raise ValueError(f"judges: give one or more different judge models, got {self.judges}")
        if self.mode not in ("rating", "pairwise"):
            raise ValueError(f"mode must be rating or pairwise, got {self.mode!r}")
        rubrics(self.aspects)
        names = [name for name, _ in rubrics(self.aspects)]
        if self.aggregate not in ("mean", "majority", *(f"aspect:{n}" for n in names)):
            raise ValueError(f"aggregate must be mean, majority or aspect:<one of {names}>, got {self.aggregate!r}")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.items_per_chunk < 1:
            raise ValueError("max_new_tokens, batch_size and items_per_chunk must be >= 1")


@dataclass
class Candidates:
    prompt: list  # messages
    responses: list[str]
    people: int | str | None  # the candidate people chose, "tie", or None when unlabeled


def rubrics(aspects: list[str]) -> list[tuple[str, str]]:
    """(name, rubric) of each aspect: a name of :data:`ASPECTS`, or "name: rubric" of one's own."""
    if not aspects:
        raise ValueError("aspects: give at least one (e.g. [helpfulness])")
    named = []
    for aspect in aspects:
        name, colon, rubric = str(aspect).partition(":")
        name = name.strip()
        if colon and rubric.strip():
            named.append((name, rubric.strip()))
        elif name in ASPECTS:
            named.append((name, ASPECTS[name]))
        elif name == "overall":  # the judges' default rubric, the one `rlxf judge-data` trains on
            named.append((name, DEFAULT_RUBRIC))
        else:
            raise ValueError(f"aspect {aspect!r}: not one of {sorted(ASPECTS)}; write your own as 'name: rubric'")
    if len({n for n, _ in named}) != len(named):
        raise ValueError(f"aspects: each name once, got {[n for n, _ in named]}")
    return named


def annotate(config: AnnotateConfig) -> dict:
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    items = load_candidates(config)
    ratings = judge_all(config, items, output_dir / "annotations.jsonl")
    results = summarize(config, items, ratings)
    pairs = write_pairs(config, items, ratings, output_dir / "pairs.jsonl")
    results["pairs"] = pairs
    write_json(output_dir / "agreement.json", results)
    write_report(output_dir / "report.md", config, results)
    say(f"{pairs['written']} preference pairs in {output_dir / 'pairs.jsonl'}; report: {output_dir / 'report.md'}")
    return results


def load_candidates(config: AnnotateConfig) -> list[Candidates]:
    """The items to judge. A preference pair's two responses are put in a random order (seeded), so
    that a judge's position bias cannot pass for agreement with the people."""
    if not config.data.path:
        raise ConfigError("data.path is empty: give candidates or a preference file (data.path=...)")
    path = resolve_path(config.data.path)
    first = next(iter_rows(path, BadRows()), (None, {}))[1]
    rng = random.Random(config.seed)
    if "responses" in first:
        sets, bad = read_response_sets(path, on_bad_row=config.data.on_bad_row)
        items = [Candidates(s.prompt, s.responses, people_label(s, path, n)) for n, s in enumerate(sets, 1)]
    else:
        pairs, bad = read_preferences(path, format=config.data.format, on_bad_row=config.data.on_bad_row)
        items = [shuffled(pair, rng) for pair in pairs]
    report_bad_rows(bad, path)
    items = items[: config.data.limit] if config.data.limit else items
    if config.mode == "pairwise" and any(len(item.responses) != 2 for item in items):
        raise ConfigError(f"{path}: mode=pairwise compares two candidates; some rows have another number")
    say(f"data: {len(items)} items from {path}, {sum(i.people is not None for i in items)} with people's labels")
    return items


def people_label(candidates, path: Path, number: int) -> int | str | None:
    """A candidate set's ``gold.better``: a response's index, "tie", or None when there is none."""
    better = (candidates.gold or {}).get("better")
    valid = better == "tie" or (
        isinstance(better, int) and not isinstance(better, bool) and 0 <= better < len(candidates.responses)
    )
    if better is not None and not valid:
        raise ConfigError(
            f"{path}, item {number}, field 'gold.better': expected a response index 0..{len(candidates.responses) - 1} "
            f'or "tie", got {better!r}'
        )
    return better


def shuffled(pair: Preference, rng: random.Random) -> Candidates:
    if rng.random() < 0.5:
        return Candidates(pair.prompt, [pair.chosen, pair.rejected], "tie" if pair.tie else 0)
    return Candidates(pair.prompt, [pair.rejected, pair.chosen], "tie" if pair.tie else 1)


def judge_all(config: AnnotateConfig, items: list[Candidates], path: Path) -> list[np.ndarray]:
    """Each item's ratings, (judges, aspects, candidates); rows already in ``path`` from an interrupted
    run with the same settings are read back, the rest judged chunk by chunk and appended."""
    settings = {"judges": config.judges, "aspects": config.aspects, "mode": config.mode, "seed": config.seed}
    done = read_appended_rows(path)
    if done and (done[0]["settings"] != settings or any(r["responses"] != i.responses for r, i in zip(done, items))):
        raise ConfigError(f"{path} holds ratings of other items or settings: use another output_dir")
    ratings = [as_array(row["ratings"]) for row in done[: len(items)]]
    if len(ratings) == len(items):
        return ratings
    judges = [
        LLMJudge(m, low=1, high=5, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, name=m)
        for m in config.judges
    ]
    with path.open("a", encoding="utf-8") as out:
        for start in tqdm(range(len(ratings), len(items), config.items_per_chunk), desc="judging", unit="chunk"):
            chunk = items[start : start + config.items_per_chunk]
            judged = [
                [rate_chunk(judge, rubric, chunk, config.mode) for _, rubric in rubrics(config.aspects)]
                for judge in judges
            ]  # judges × aspects × (ratings, replies) × items × candidates
            for index, item in enumerate(chunk):
                per_item = [[aspect[0][index] for aspect in judge] for judge in judged]
                row = {
                    "prompt": item.prompt,
                    "responses": item.responses,
                    "people": item.people,
                    "ratings": per_item,
                    "replies": [[aspect[1][index] for aspect in judge] for judge in judged],
                    "settings": settings,
                }
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                ratings.append(as_array(per_item))
            out.flush()
    return ratings


def rate_chunk(judge: LLMJudge, rubric: str, items: list[Candidates], mode: str) -> tuple[list, list]:
    """One judge's ratings of each item's candidates under one rubric (None where it gave none), and
    its replies (one per candidate; pairwise: the two orders'), kept to see why a rating is missing."""
    if mode == "pairwise":
        verdicts = judge.compare(
            [i.prompt for i in items], [i.responses[0] for i in items], [i.responses[1] for i in items], rubric=rubric
        )
        return [first_candidate_share(ab, ba) for ab, ba, _ in verdicts], [list(replies) for *_, replies in verdicts]
    prompts = [item.prompt for item in items for _ in item.responses]
    scores, replies = judge.rate(prompts, [r for item in items for r in item.responses], rubric=rubric)
    rated, said, start = [], [], 0
    for item in items:
        rated.append(scores[start : start + len(item.responses)])
        said.append(replies[start : start + len(item.responses)])
        start += len(item.responses)
    return rated, said


def first_candidate_share(ab: str | None, ba: str | None) -> list[float | None]:
    """The two candidates' shares of wins (a tie is half) over both orders; None when neither parsed."""
    wins = [w for w in (_win(ab, "A"), _win(ba, "B")) if w is not None]
    if not wins:
        return [None, None]
    share = sum(wins) / len(wins)
    return [share, 1 - share]


def _win(verdict: str | None, side: str) -> float | None:
    return None if verdict is None else 0.5 if verdict == "tie" else float(verdict == side)


def as_array(per_item: list) -> np.ndarray:
    """An item's ratings as (judges, aspects, candidates), NaN where a reply gave none."""
    return np.array([[[math.nan if r is None else r for r in c] for c in judge] for judge in per_item], dtype=float)


def verdicts_of(config: AnnotateConfig, ratings: list[np.ndarray]) -> dict[str, list]:
    """Every source's verdict per item: each judge alone (its mean over aspects), and each aggregate."""
    names = [n for n, _ in rubrics(config.aspects)]
    verdicts = {
        f"judge {m}": [winner(candidate_scores(r[j : j + 1], "mean", names)) for r in ratings]
        for j, m in enumerate(config.judges)
    }
    for how in ("mean", "majority", *(f"aspect:{n}" for n in names)):
        verdicts[how] = [winner(candidate_scores(r, how, names)) for r in ratings]
    return verdicts


def summarize(config: AnnotateConfig, items: list[Candidates], ratings: list[np.ndarray]) -> dict:
    verdicts = verdicts_of(config, ratings)
    people = [item.people for item in items]
    judge_verdicts = {m: verdicts[f"judge {m}"] for m in config.judges}
    return {
        "items": len(items),
        "labeled_by_people": sum(p is not None for p in people),
        "rated_share": {m: rated_share([r[j] for r in ratings]) for j, m in enumerate(config.judges)},
        "agreement_with_people": {source: agreement(v, people) for source, v in verdicts.items()},
        "judges_kappa": panel_agreement(judge_verdicts),
    }


def rated_share(ratings: list[np.ndarray]) -> float:
    """The share of the ratings asked of a judge that its replies gave."""
    asked = sum(r.size for r in ratings)
    return float(sum(np.isfinite(r).sum() for r in ratings) / asked) if asked else 0.0


def write_pairs(config: AnnotateConfig, items: list[Candidates], ratings: list[np.ndarray], path: Path) -> dict:
    """pairs.jsonl: per item, the candidate ``aggregate`` rates best against a random one rated lower."""
    names, rng, written, skipped = [n for n, _ in rubrics(config.aspects)], random.Random(config.seed), 0, 0
    with path.open("w", encoding="utf-8") as out:
        for item, rated in zip(items, ratings):
            scores = candidate_scores(rated, config.aggregate, names)
            pair = binarize(scores, rng)
            if pair is None:
                skipped += 1
                continue
            chosen, rejected = pair
            row = {
                "prompt": item.prompt,
                "chosen": item.responses[chosen],
                "rejected": item.responses[rejected],
                "scores": [float(scores[chosen]), float(scores[rejected])],
                "source": config.aggregate,
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
    return {"written": written, "tied_or_unrated": skipped, "aggregate": config.aggregate}


def write_report(path: Path, config: AnnotateConfig, results: dict) -> None:
    def cell(value):
        return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = [
        f"# AI feedback: {results['items']} items, {len(config.judges)} judges × {len(config.aspects)} aspects",
        "",
        f"Mode {config.mode}; aspects {', '.join(n for n, _ in rubrics(config.aspects))}.",
        f"{results['labeled_by_people']} items carry people's labels.",
        "",
        "| source | compared | agreement | Cohen's kappa | accuracy where people decided | unanswered |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {s} | {a['compared']} | {cell(a['agreement'])} | {cell(a['kappa'])} | "
            f"{cell(a['accuracy_on_decided'])} | {a['unanswered']} |"
            for s, a in results["agreement_with_people"].items()
        ),
        "",
        "Share of the ratings asked that each judge gave: "
        + ", ".join(f"{m} {share:.3f}" for m, share in results["rated_share"].items()),
        "",
        *(f"- kappa {pair}: {cell(k)}" for pair, k in results["judges_kappa"].items()),
        "",
        f"pairs.jsonl: {results['pairs']['written']} pairs by {config.aggregate}; "
        f"{results['pairs']['tied_or_unrated']} items left out (candidates tied or unrated).",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass
class JudgeDataConfig(Checked):
    output_dir: str = "runs/judge_data"
    """Where train.jsonl (for `rlxf sft`) and held_out.jsonl (for `rlxf annotate`) go."""
    data: DataSection = field(default_factory=DataSection)
    """People's pairwise labels: any preference file (ties become "tie" verdicts); its held-out split
    is written aside, untouched, to measure the trained judge on."""
    rubric: str = DEFAULT_RUBRIC
    """What the judge is asked to compare (the same rubric must be given to the judge when used)."""

    def check(self):
        if not self.rubric.strip():
            raise ValueError("rubric is empty")


def write_judge_data(config: JudgeDataConfig) -> dict:
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train, held, summary = load_preference_splits(config.data)
    with (output_dir / "train.jsonl").open("w", encoding="utf-8") as out:
        for pair in train:
            for row in verdict_rows(config.rubric, pair):
                out.write(json.dumps({"messages": row}, ensure_ascii=False) + "\n")
    with (output_dir / "held_out.jsonl").open("w", encoding="utf-8") as out:
        for pair in held:
            row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected, "tie": pair.tie}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    results = {**summary, "train_rows": 2 * len(train), "rubric": config.rubric}
    write_json(output_dir / "judge_data.json", results)
    say(
        f"{2 * len(train)} judge training rows in {output_dir / 'train.jsonl'}; next: rlxf sft "
        f"data.path={output_dir / 'train.jsonl'} policy.lora.rank=16 output_dir=runs/judge, then rlxf annotate "
        f"data.path={output_dir / 'held_out.jsonl'} mode=pairwise judges=[runs/judge/model] aspects=[overall]"
    )
    return results


def verdict_rows(rubric: str, pair: Preference) -> list[list[dict]]:
    """The pair in both orders, each answered with the people's verdict."""
    if pair.tie:
        return [
            verdict_chat(rubric, pair.prompt, pair.chosen, pair.rejected, "tie"),
            verdict_chat(rubric, pair.prompt, pair.rejected, pair.chosen, "tie"),
        ]
    return [
        verdict_chat(rubric, pair.prompt, pair.chosen, pair.rejected, "A"),
        verdict_chat(rubric, pair.prompt, pair.rejected, pair.chosen, "B"),
    ]
