"""`rlxf c3po`: learn from one sentence of verbal feedback without applying it where it does not belong.

Stephan et al., "RLVF: Learning from Verbal Feedback without Overgeneralization" (ICML 2024), C3PO,
as the authors' code runs it. Stages:
    1. prompts of three scopes: in-scope (the feedback applies), near-scope (close to it, but it does
       not apply), out-of-scope (general chat); from files, or the first two written by the generator
       model from the scope in words, the third the shipped HH prompts; a share of each held out
    2. answers: the original model answers every training prompt (y0, sampled at `temperature`); for
       in-scope prompts it is then shown its answer and the feedback and asked to rewrite it (y+) —
       or a function of yours rewrites it
    3. DPO on (y+ ≻ y0) in scope, with the near- and out-of-scope (prompt, y0) as anchors of weight
       σ_near and σ_out (the authors' configs: β 0.1, σ_out 0.2, σ_near 0.1, their λ = 0: cross-entropy,
       no distillation KL)
    4. held-out prompts of each scope, greedy, before and after: adherence (a reward source that gives
       1 to a response that follows the feedback) and how far the original answers' log-probability moved
The authors write the prompts and revisions with GPT-4 and Mistral-7B; the defaults here use the
embedded model for both, which a 135M model does poorly — give files or `revise` for real use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlxf.config import Checked, ConfigError, DataSection, ModelSection, TrainSection
from rlxf.eval.stats import mean_interval, proportion
from rlxf.pipelines.verbal_prompts import SCOPES, exported_feedback, scoped_prompts
from rlxf.recipes.common import as_groups, group_logps, say, write_json
from rlxf.recipes.dpo import DPOConfig, train_dpo
from rlxf.rewards.judge import render_conversation
from rlxf.rewards.python_function import load_function
from rlxf.rewards.registry import build_reward_source
from rlxf.rollout import HFEngine, SamplingParams
from rlxf.rollout.hf import load_engine

_REVISE = "Rewrite your last answer so that it follows this feedback: {feedback} Reply with the rewritten answer only."


@dataclass
class C3POConfig(Checked):
    output_dir: str = "runs/c3po"
    """prompts/, answers/ (pairs.jsonl, anchors.jsonl), dpo/, and c3po.json and report.md."""
    feedback: str = ""
    """The verbal feedback, one sentence (e.g. "When you give a recipe, list the ingredients first.")."""
    feedback_from: str = ""
    """Instead of `feedback`: a verbal.jsonl exported by the feedback app and its line (path:line, e.g.
    snapshots/p/v0001/verbal.jsonl:3), whose written feedback is used."""
    scope: str = ""
    """What the feedback is about, in words (e.g. "cooking recipes"): how the generator writes prompts."""
    in_scope: str = ""
    """A prompt file the feedback applies to; empty: the generator writes `prompts_per_scope` of them."""
    near_scope: str = ""
    """A prompt file close to the scope, where the feedback does not apply; empty: the generator writes them."""
    out_of_scope: str = ""
    """General prompts; empty: the first user turns of the shipped HH demo pairs."""
    prompts_per_scope: int = 48
    """Prompts of each scope (written, or the first of a file)."""
    eval_fraction: float = 0.25
    """Share of each scope's prompts held out to measure on."""
    policy: ModelSection = field(default_factory=ModelSection)
    """The model taught the feedback (and, unless `generator` is set, the one that writes and rewrites)."""
    generator: str = ""
    """The model that writes prompts and rewrites answers; empty: the policy."""
    revise: str = ""
    """module:function(prompt, answer, feedback) -> rewritten answer, instead of the generator rewriting."""
    adherence: dict[str, Any] = field(default_factory=dict)
    """A reward source giving 1 to a response that follows the feedback ({kind: format, pattern: ...},
    {kind: python, function: ...}); empty: the judge model rating it (pointwise, mapped to [0, 1])."""
    max_new_tokens: int = 96
    """Longest answer."""
    temperature: float = 0.7
    """Sampling temperature of prompts and training answers (the authors' 0.7); evaluation is greedy."""
    sigma_near: float = 0.1
    """Weight of the near-scope anchors' cross-entropy."""
    sigma_out: float = 0.2
    """Weight of the out-of-scope anchors' cross-entropy."""
    dpo: DPOConfig = field(
        default_factory=lambda: DPOConfig(
            beta=0.1,
            data=DataSection(max_length=512, eval_fraction=0.0),
            train=TrainSection(epochs=2, batch_size=8, lr=5e-6),
        )
    )
    """Stage 3 (its data.path and anchor are set; its policy is `policy`; every pair trains: c3po measures on
    its own held-out prompts)."""
    seed: int = 0
    """Seed of the written prompts, the answers and the held-out split."""

    def check(self):
        if bool(self.feedback.strip()) == bool(self.feedback_from):
            raise ValueError(
                'give the verbal feedback, either feedback="When you give a recipe, list the ingredients first." '
                "or feedback_from=verbal.jsonl:LINE (one of them)"
            )
        if not self.scope.strip() and not (self.in_scope and self.near_scope):
            raise ValueError("give scope= (what the feedback is about), or both in_scope= and near_scope= prompt files")
        if self.prompts_per_scope < 4 or not 0 < self.eval_fraction < 1:
            raise ValueError("need prompts_per_scope >= 4 and eval_fraction in (0, 1)")
        if self.dpo.data.eval_fraction or self.dpo.data.eval_path or self.dpo.data.limit:
            raise ValueError(
                "c3po trains on every pair it builds and measures on its own held-out prompts (eval_fraction): "
                "leave dpo.data.eval_fraction, eval_path and limit unset, so that the anchors' weights hold"
            )
        training = self.prompts_per_scope - max(1, round(self.prompts_per_scope * self.eval_fraction))
        if training < self.dpo.train.batch_size:
            raise ValueError(
                f"{training} in-scope training prompts (prompts_per_scope less the held-out share) cannot fill one "
                f"DPO batch of {self.dpo.train.batch_size}: raise prompts_per_scope or lower dpo.train.batch_size"
            )
        if self.sigma_near < 0 or self.sigma_out < 0 or self.temperature <= 0:
            raise ValueError("sigma_near and sigma_out must be >= 0 and temperature > 0")


def run_c3po(config: C3POConfig) -> dict:
    output_dir = Path(config.output_dir)
    if config.feedback_from:
        config.feedback = exported_feedback(config.feedback_from)
    judge = adherence_source(config)  # a bad source is refused before any work
    models = Models(config)
    prompts = scoped_prompts(config, models, output_dir / "prompts")
    data = build_pairs(config, models, {s: prompts[s]["train"] for s in SCOPES}, output_dir / "answers", judge)
    dpo = config.dpo
    dpo.output_dir, dpo.policy, dpo.data.path, dpo.anchor = (
        str(output_dir / "dpo"),
        config.policy,
        data["pairs"],
        data["anchors"],
    )
    say(f"c3po: DPO on {data['counts']['pairs']} in-scope pairs with {data['counts']['anchors']} anchors")
    trained = train_dpo(dpo)
    results = {
        "feedback": config.feedback,
        "data": data["counts"],
        "dpo": trained.get("held_out", {}),
        "scopes": measure(config, models, judge, {s: prompts[s]["eval"] for s in SCOPES}, output_dir / "dpo" / "model"),
    }
    write_json(output_dir / "c3po.json", results)
    write_report(output_dir / "report.md", config, results)
    say(f"c3po: report {output_dir / 'report.md'}")
    return results


class Models:
    """The original policy (answers, measurement) and the generator (prompts, rewrites), loaded once."""

    def __init__(self, config: C3POConfig):
        self.config, self._engines = config, {}

    def engine(self, name: str) -> HFEngine:
        if name not in self._engines:
            self._engines[name] = load_engine(
                name,
                max_prompt_length=1536,
                max_new_tokens=self.config.max_new_tokens,
                batch_size=32,
                dtype=self.config.policy.dtype,
                seed=self.config.seed,
            )
        return self._engines[name]

    def answer(self, name: str, chats: list, *, temperature: float, n: int = 1, seed: int = 0) -> list[str]:
        sampling = SamplingParams(self.config.max_new_tokens, temperature, 1.0, n)
        with torch.no_grad():
            rollout = self.engine(name).generate(chats, sampling, seeds=[seed + i for i in range(len(chats))])
        return [text.strip() for text in rollout.texts]

    @property
    def generator(self) -> str:
        return self.config.generator or self.config.policy.name


def build_pairs(config: C3POConfig, models: Models, prompts: dict[str, list], folder: Path, judge=None) -> dict:
    """pairs.jsonl (in scope: the rewrite over the original answer) and anchors.jsonl (near and out of
    scope: the original answer, weighted σ_near / σ_out)."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs_path, anchors_path = folder / "pairs.jsonl", folder / "anchors.jsonl"
    policy = config.policy.name
    answers = {s: models.answer(policy, prompts[s], temperature=config.temperature, seed=config.seed) for s in SCOPES}
    rewrites = rewrite(config, models, prompts["in_scope"], answers["in_scope"])
    pairs = [
        {"prompt": p, "chosen": better, "rejected": original}
        for p, original, better in zip(prompts["in_scope"], answers["in_scope"], rewrites)
        if better and better != original
    ]
    if len(pairs) < 2:
        raise ConfigError(f"only {len(pairs)} rewrites differ from their original answers: nothing to learn")
    anchors, empty = [], 0
    for scope, sigma in (("near_scope", config.sigma_near), ("out_of_scope", config.sigma_out)):
        kept = [(p, a) for p, a in zip(prompts[scope], answers[scope]) if a]
        empty += len(prompts[scope]) - len(kept)
        # σ · pairs / rows: each row is used once an epoch, so a step's term is σ × the scope's mean NLL
        anchors += [
            {"prompt": p, "completion": a, "weight": sigma * len(pairs) / len(kept)} for p, a in kept if sigma > 0
        ]
    write_rows(pairs_path, pairs)
    write_rows(anchors_path, anchors)
    counts = {
        "pairs": len(pairs),
        "unchanged_rewrites": len(rewrites) - len(pairs),
        "anchors": len(anchors),
        "empty_answers_left_out": empty,
    }
    if judge is not None:  # how many rewrites do follow the feedback: the pairs are only as good as they are
        counts["rewrites_adherent"] = float(judge.score(prompts["in_scope"], rewrites).rewards.mean())
    return {"pairs": str(pairs_path), "anchors": str(anchors_path) if anchors else "", "counts": counts}


def rewrite(config: C3POConfig, models: Models, prompts: list, answers: list[str]) -> list[str]:
    if config.revise:
        function = load_function(config.revise)
        return [str(function(render_conversation(p), a, config.feedback)).strip() for p, a in zip(prompts, answers)]
    chats = [
        [*p, {"role": "assistant", "content": a}, {"role": "user", "content": _REVISE.format(feedback=config.feedback)}]
        for p, a in zip(prompts, answers)
    ]
    return models.answer(models.generator, chats, temperature=config.temperature, seed=config.seed + 7)


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def measure(config: C3POConfig, models: Models, judge, prompts: dict[str, list], trained: Path) -> dict[str, Any]:
    """Per scope, greedy answers before and after: adherence, and the mean token log-prob the trained
    model gives the original answers minus the original model's own (0: that behaviour is kept)."""
    results = {}
    for scope in SCOPES:
        before = models.answer(config.policy.name, prompts[scope], temperature=0)
        after = models.answer(str(trained), prompts[scope], temperature=0)
        scored = {
            when: judge.score(prompts[scope], texts).rewards.tolist()
            for when, texts in (("before", before), ("after", after))
        }
        results[scope] = {
            "prompts": len(prompts[scope]),
            "adherence_before": interval(scored["before"]),
            "adherence_after": interval(scored["after"]),
            "original_logp_change": logp_change(models, config.policy.name, str(trained), prompts[scope], before),
            "examples": [
                {"prompt": p[-1]["content"], "before": b, "after": a}
                for p, b, a in list(zip(prompts[scope], before, after))[:3]
            ],
        }
    return results


def interval(scores: list[float]) -> dict:
    """The mean with its 95% interval: Wilson's when every score is 0 or 1 (a share), else the mean's."""
    binary = all(score in (0.0, 1.0) for score in scores)
    return (proportion(scores) if binary else mean_interval(scores)).as_dict()


def adherence_source(config: C3POConfig):
    if config.adherence:
        options = {k: v for k, v in config.adherence.items() if k != "kind"}
        return build_reward_source(config.adherence.get("kind", ""), **options)
    rubric = f"Rate how well the response follows this feedback: {config.feedback}"
    return build_reward_source("judge", model=config.generator or config.policy.name, mode="pointwise", rubric=rubric)


def logp_change(models: Models, original: str, trained: str, prompts: list, answers: list[str]) -> float:
    """Mean over answers of the per-token log-prob change, trained minus original."""
    per_model = []
    for name in (trained, original):
        engine = models.engine(name)
        groups = []
        for prompt, answer in zip(prompts, answers):
            encoded = engine.encoder.encode(prompt, [answer])
            groups.append((encoded.prompt, encoded.completions[0]))
        logps, counts = group_logps(engine.model, as_groups(groups), desc="log-probs of the original answers")
        per_model.append(logps / counts.clamp(min=1))
    return float((per_model[0] - per_model[1]).mean())


def write_report(path: Path, config: C3POConfig, results: dict) -> None:
    def cell(estimate: dict) -> str:
        return f"{estimate['value']:.3f} ({estimate['low']:.3f}–{estimate['high']:.3f})"

    lines = [
        "# C3PO: verbal feedback without overgeneralization",
        "",
        f"Feedback: “{config.feedback}”" + (f" (scope: {config.scope})" if config.scope else ""),
        "",
        f"{results['data']['pairs']} in-scope pairs, {results['data']['anchors']} anchors "
        f"(σ_near {config.sigma_near}, σ_out {config.sigma_out}); "
        f"{results['data'].get('rewrites_adherent', float('nan')):.3f} of the rewrites follow the feedback.",
        "",
        "| scope | prompts | adherence before | adherence after | original answers' log-prob per token, change |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {scope.replace('_', '-')} | {r['prompts']} | {cell(r['adherence_before'])} | {cell(r['adherence_after'])} | "
            f"{r['original_logp_change']:+.3f} |"
            for scope, r in results["scopes"].items()
        ),
        "",
        "In scope, adherence should rise; near and out of scope it should stay where it was, and the original",
        "answers should keep their probability (a change near 0).",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
