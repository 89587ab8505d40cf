"""`rlxf overoptimization`: Gao et al.'s best-of-n curve — how a gold reward model scores the sample
that a proxy reward model picks out of n, against the KL of best-of-n sampling.

Gao, Schulman & Hilton, "Scaling Laws for Reward Model Overoptimization" (ICML 2023), Sec. 3: as n
grows, the proxy's pick scores ever higher under the proxy, while under the gold model it first rises
and then, when the proxy's errors are what is being selected, falls. Stages:
    prompts (the held-out split of a preference file) -> N samples each -> proxy and gold scores
    -> the exact best-of-n expectation for n = 1, 2, 4, ..., N -> curve.json, curve.png, report.md
Samples are written as they are drawn (samples.jsonl), so an interrupted run picks up where it was.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from rlxf.config import Checked, ConfigError, DataSection, ModelSection
from rlxf.eval.overoptimization import best_of_n_curve, gold_fall
from rlxf.eval.report import pyplot
from rlxf.models import load_causal_lm, load_tokenizer
from rlxf.models.packing import use_packed_attention
from rlxf.recipes.common import encoder_for, load_preference_splits, read_appended_rows, say, write_json
from rlxf.rewards.learned import LearnedReward
from rlxf.rollout import HFEngine, SamplingParams


@dataclass
class OveroptimizationConfig(Checked):
    output_dir: str = "runs/overoptimization"
    """Where samples.jsonl, curve.json, curve.png and report.md go."""
    policy: ModelSection = field(default_factory=ModelSection)
    """The policy whose samples are picked from (the embedded model by default)."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=512))
    """Preference data; the prompts are its held-out split's (the pairs the reward models did not see)."""
    proxy: str = ""
    """The reward model that picks (a folder saved by `rlxf rm`, e.g. trained on few pairs)."""
    gold: str = ""
    """The reward model that judges the pick (a folder saved by `rlxf rm`, trained on more pairs)."""
    prompts: int = 64
    """Held-out prompts (0 = all)."""
    samples: int = 32
    """N samples per prompt; the curve goes to best-of-N."""
    max_new_tokens: int = 64
    """Longest sample."""
    temperature: float = 1.0
    """Sampling temperature (best-of-n's KL formula assumes samples from the policy itself: 1)."""
    prompts_per_batch: int = 4
    """Prompts sampled together (each with all its samples)."""
    seed: int = 0
    """Sampling seed."""

    def check(self):
        if not self.proxy or not self.gold:
            raise ValueError("give both reward models: proxy=runs/rm_small/model gold=runs/rm_large/model")
        if self.proxy == self.gold:
            raise ValueError("proxy and gold are the same model: the curve needs a gold model the proxy is not")
        if self.samples < 2 or self.prompts < 0 or self.prompts_per_batch < 1 or self.max_new_tokens < 1:
            raise ValueError("need samples >= 2, prompts >= 0, prompts_per_batch >= 1 and max_new_tokens >= 1")
        if not 0 < self.temperature < math.inf:
            raise ValueError(f"temperature must be > 0 (best-of-n picks among samples), got {self.temperature}")


def run_overoptimization(config: OveroptimizationConfig) -> dict:
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    prompts = held_out_prompts(config)
    samples = draw_samples(config, prompts, output_dir / "samples.jsonl")
    texts = [text for row in samples for text in row["samples"]]
    messages = [row["prompt"] for row in samples for _ in row["samples"]]
    scores = {}
    for role in ("proxy", "gold"):
        say(f"scoring {len(texts)} samples with the {role} reward model")
        scores[role] = LearnedReward(getattr(config, role)).score(messages, texts).rewards.view(len(samples), -1)
    ns = sorted({*(2**k for k in range(int(math.log2(config.samples)) + 1)), config.samples})
    curve = best_of_n_curve(scores["proxy"], scores["gold"], ns)
    results = {
        "prompts": len(samples),
        "samples_per_prompt": config.samples,
        "curve": curve,
        "peak": {k: v for k, v in peak_of(curve).items() if k != "gold_per_prompt"},
        "gold_fall": gold_fall(curve),
    }
    write_json(output_dir / "curve.json", results)
    write_report(output_dir, config, results)
    say(
        f"best-of-n: gold peaks at n={results['peak']['n']} (KL {results['peak']['kl']:.2f}); report: {output_dir / 'report.md'}"
    )
    return results


def held_out_prompts(config: OveroptimizationConfig) -> list[list[dict]]:
    _, held, _ = load_preference_splits(config.data)
    seen, prompts = set(), []
    for record in held:
        if (key := repr(record.prompt)) not in seen:
            seen.add(key)
            prompts.append(record.prompt)
    return prompts[: config.prompts] if config.prompts else prompts


def draw_samples(config: OveroptimizationConfig, prompts: list, path: Path) -> list[dict]:
    """``samples`` completions per prompt, appended to ``path`` a batch at a time; a batch already in
    the file (from an interrupted run with the same settings) is read back instead of drawn again."""
    done = read_appended_rows(path)
    if done and (done[0]["settings"] != settings_of(config) or any(r["prompt"] != p for r, p in zip(done, prompts))):
        raise ConfigError(f"{path} holds samples drawn with other settings or prompts: use another output_dir")
    if len(done) >= len(prompts):
        return done[: len(prompts)]
    tokenizer = load_tokenizer(config.policy.name)
    policy = load_causal_lm(config.policy.name, dtype=config.policy.dtype, seed=config.seed).eval()
    use_packed_attention(policy)
    engine = HFEngine(policy, encoder_for(tokenizer, config.data), batch_size=config.prompts_per_batch * config.samples)
    sampling = SamplingParams(config.max_new_tokens, config.temperature, 1.0, config.samples)
    with path.open("a", encoding="utf-8") as out:
        for start in tqdm(range(len(done), len(prompts), config.prompts_per_batch), desc="sampling", unit="batch"):
            batch = prompts[start : start + config.prompts_per_batch]
            seeds = [config.seed * 1_000_003 + start + i for i in range(len(batch))]
            with torch.no_grad():
                rollout = engine.generate(batch, sampling, seeds=seeds)
            for i, prompt in enumerate(batch):
                texts = [t for t, owner in zip(rollout.texts, rollout.prompt_index) if owner == i]
                row = {"prompt": prompt, "samples": texts, "settings": settings_of(config)}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                done.append(row)
            out.flush()
    return done


def settings_of(config: OveroptimizationConfig) -> dict:
    return {
        "policy": config.policy.name,
        "samples": config.samples,
        "max_new_tokens": config.max_new_tokens,
        "temperature": config.temperature,
        "seed": config.seed,
        "prompts_per_batch": config.prompts_per_batch,
    }


def peak_of(curve: list[dict]) -> dict:
    return max(curve, key=lambda point: point["gold"])


def write_report(output_dir: Path, config: OveroptimizationConfig, results: dict) -> None:
    """curve.png (gold and proxy, each minus its n = 1 value, against KL) and report.md."""
    curve = results["curve"]
    plot_curve(output_dir / "curve.png", curve)
    lines = [
        f"# Over-optimization: best-of-n on {results['prompts']} held-out prompts",
        "",
        f"Proxy `{config.proxy}` picks the best of n of {config.samples} samples per prompt from "
        f"`{config.policy.name}`; gold `{config.gold}` judges the pick. KL = log n − (n − 1)/n.",
        "",
        "| n | KL | proxy | gold | gold's standard error |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {p['n']} | {p['kl']:.3f} | {p['proxy']:.4f} | {p['gold']:.4f} | {p['gold_se']:.4f} |" for p in curve),
        "",
        verdict(curve, results["gold_fall"]),
        "",
        "![curve](curve.png)",
    ]
    (output_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot_curve(path: Path, curve: list[dict]) -> None:
    """Gold and proxy reward of the pick, each minus its value at n = 1, against best-of-n's KL."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    kl = [p["kl"] for p in curve]
    for key in ("proxy", "gold"):
        ax.plot(kl, [p[key] - curve[0][key] for p in curve], marker="o", label=key)
    for p in curve:
        ax.annotate(f"n={p['n']}", (p["kl"], p["gold"] - curve[0]["gold"]), fontsize=7, alpha=0.7)
    ax.set(
        xlabel="KL(best-of-n ‖ policy), nats", ylabel="reward − reward at n = 1", title="best-of-n over-optimization"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def verdict(curve: list[dict], fall: dict) -> str:
    """In words, with the fall judged against two standard errors of it (paired over prompts)."""
    peak, last = peak_of(curve), curve[-1]
    if peak is last:
        return f"The gold reward rose with n all the way to n = {last['n']}: no over-optimization within this KL."
    numbers = (
        f"peaked at n = {peak['n']} (KL {peak['kl']:.2f}) and fell by {fall['fall']:.4f} "
        f"(standard error {fall['fall_se']:.4f}) by n = {last['n']}, while the proxy rose by {last['proxy'] - peak['proxy']:.4f}"
    )
    if fall["fall"] > 2 * fall["fall_se"]:
        return f"**Over-optimization**: the gold reward {numbers}. Past the peak, the proxy picks its own errors."
    return f"The gold reward {numbers}: a fall within two standard errors, not a clear one."
