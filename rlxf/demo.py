"""`rlxf demo`: the whole loop on real human preferences and the embedded model.

1. a Bradley-Terry reward model (MiniLM) learns from HH-RLHF pairs;
2. DPO tunes SmolLM2-135M-Instruct on pairs from the same training split;
3. evaluation on held-out prompts: RM accuracy, DPO preference accuracy, and the
   DPO policy's win rate over the reference, judged by the reward model;
4. online RL: GRPO on generated one-digit additions with an exact-answer verifier, the
   reward rising step by step and greedy accuracy on held-out problems before and after,
   with a paired sign test;
5. a report folder with plots and intervals.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlxf.config import DataSection, ModelSection, TrainSection, to_dict
from rlxf.eval.report import estimate_from, load_json, plot_curves, plot_estimates, verdict
from rlxf.eval.stats import Estimate, binomial_two_sided_p, proportion
from rlxf.recipes.common import say, write_json
from rlxf.recipes.dpo import DPOConfig, train_dpo
from rlxf.recipes.evaluate import EvalConfig, GenerationSection, evaluate
from rlxf.recipes.online import train_online
from rlxf.recipes.online_config import OnlineConfig, SamplingSection, TaskSection
from rlxf.recipes.reward_model import RewardModelConfig, train_reward_model
from rlxf.train.metrics import read_metrics

DEMO_DATA = "data/hh_rlhf_harmless_demo.jsonl"


@dataclass
class DemoConfig:
    output_dir: str = "runs/demo"
    """Run folder; the report is written to <output_dir>/report."""
    data_path: str = DEMO_DATA
    """Preference pairs (shipped: HH-RLHF harmless-base, MIT)."""
    eval_fraction: float = 0.2
    """Share of prompt groups held out from every stage."""
    split_seed: int = 0
    """Seed of the grouped split, the same for every stage so no stage trains on another's held-out data."""
    seed: int = 0
    """Seed of every stage's training and sampling (the split keeps split_seed)."""
    rm: RewardModelConfig = field(
        default_factory=lambda: RewardModelConfig(
            model=ModelSection(name="minilm-l6-v2"),
            data=DataSection(max_length=128, max_prompt_length=96, on_bad_row="skip"),
            train=TrainSection(epochs=1, max_steps=72, batch_size=16, lr=5e-5, warmup_steps=10),
        )
    )
    """Stage 1: reward model."""
    dpo: DPOConfig = field(
        default_factory=lambda: DPOConfig(
            policy=ModelSection(name="smollm2-135m-instruct"),
            data=DataSection(max_length=256, max_prompt_length=96, on_bad_row="skip", limit=168, eval_limit=140),
            train=TrainSection(max_steps=42, batch_size=4, lr=3e-5, warmup_steps=5),
            beta=0.1,
        )
    )
    """Stage 2: DPO."""
    eval: EvalConfig = field(
        default_factory=lambda: EvalConfig(
            data=DataSection(max_length=256, max_prompt_length=96, on_bad_row="skip"),
            generation=GenerationSection(num_prompts=48, max_new_tokens=64, batch_size=16),
            rm_accuracy=False,
        )
    )
    """Stage 3: evaluation."""
    online: OnlineConfig = field(
        default_factory=lambda: OnlineConfig(
            algo="grpo",
            policy=ModelSection(name="smollm2-135m-instruct"),
            task=TaskSection(name="arithmetic", digits=1, eval_count=40),
            sampling=SamplingSection(n=8, max_new_tokens=16, temperature=1.0),
            train=TrainSection(max_steps=24, batch_size=2, lr=2e-5, warmup_steps=0, scheduler="constant"),
        )
    )
    """Stage 4: online RL on verifiable problems (train.max_steps=0 skips it). One-digit sums: the
    shipped model gets a third to a half right within 16 tokens, so most groups of 8 samples hold
    both right and wrong answers and every step has a signal (on two-digit sums nearly all are wrong)."""


def _with_data(section: DataSection, config: DemoConfig) -> DataSection:
    return dataclasses.replace(
        section, path=config.data_path, eval_path="", eval_fraction=config.eval_fraction, split_seed=config.split_seed
    )


def _seeded(section: TrainSection, config: DemoConfig) -> TrainSection:
    return dataclasses.replace(section, seed=config.seed)


def run_demo(config: DemoConfig) -> Path:
    root = Path(config.output_dir)
    timings = {}

    started = time.perf_counter()
    rm_config = dataclasses.replace(
        config.rm,
        output_dir=str(root / "rm"),
        data=_with_data(config.rm.data, config),
        train=_seeded(config.rm.train, config),
    )
    say("== 1/4 reward model ==")
    train_reward_model(rm_config)
    timings["reward model"] = time.perf_counter() - started

    started = time.perf_counter()
    dpo_config = dataclasses.replace(
        config.dpo,
        output_dir=str(root / "dpo"),
        data=_with_data(config.dpo.data, config),
        train=_seeded(config.dpo.train, config),
    )
    say("== 2/4 DPO ==")
    train_dpo(dpo_config)
    timings["DPO"] = time.perf_counter() - started

    started = time.perf_counter()
    eval_config = dataclasses.replace(
        config.eval,
        output_dir=str(root / "eval"),
        policy=str(root / "dpo" / "model"),
        reference=config.dpo.policy.name,
        reward_model=str(root / "rm" / "model"),
        data=_with_data(config.eval.data, config),
        generation=dataclasses.replace(config.eval.generation, seed=config.seed),
    )
    say("== 3/4 evaluation ==")
    evaluate(eval_config)
    timings["evaluation"] = time.perf_counter() - started

    if config.online.train.max_steps:
        started = time.perf_counter()
        say("== 4/4 online RL: GRPO on additions ==")
        online = config.online
        train_online(dataclasses.replace(online, output_dir=str(root / "online"), train=_seeded(online.train, config)))
        timings["online RL"] = time.perf_counter() - started

    report = write_report(root, timings, config)
    say(f"report: {report}")
    return report


def _cell(text: str) -> str:
    """Text made safe for one markdown table cell."""
    return text[:80].replace("|", "\\|").replace("\n", " ")


def online_section(root: Path, out: Path, config: DemoConfig) -> tuple[str, dict]:
    """The online-RL part of the report: reward per step, greedy accuracy before and after."""
    results = load_json(root / "online" / "eval.json")
    if not results.get("before"):
        return "", {}
    rows = read_metrics(root / "online" / "metrics.jsonl")
    plot_curves(
        out / "grpo_reward.png",
        [r for r in rows if r["split"] == "train"],
        ["reward"],
        title="GRPO: mean reward of the step's samples",
        ylabel="reward (1 = correct)",
        eval_rows=[r for r in rows if r["split"] == "eval"],
        eval_key="greedy_reward",
    )
    before, after = (proportion(results[k]["outcomes"]) for k in ("before", "after"))
    pairs = list(zip(results["before"]["outcomes"], results["after"]["outcomes"]))
    fixed, broken = sum(1 for b, a in pairs if a > b), sum(1 for b, a in pairs if a < b)
    p_value = binomial_two_sided_p(fixed, fixed + broken)
    online = config.online
    examples = "\n".join(
        f"| {b['prompt']} | {_cell(b['completion'])} ({b['reward']:.0f}) | {_cell(a['completion'])} ({a['reward']:.0f}) |"
        for b, a in zip(results["before"]["examples"], results["after"]["examples"])
    )
    text = f"""## Online RL: GRPO on {online.task.digits}-digit additions ({results["steps"]} steps)

The policy samples {online.sampling.n} answers per problem ({online.train.batch_size} problems a step, temperature
{online.sampling.temperature}, up to {online.sampling.max_new_tokens} new tokens); a verifier gives 1 for the exact sum and
0 otherwise (an answer still on its way when the tokens run out is wrong); GRPO pushes up answers that
beat their group's mean. Greedy accuracy on {before.n} held-out problems (none trained on; with
one-digit operands, a held-out "a + b" may have its "b + a" in training):

| | greedy accuracy [95% interval] |
|---|---|
| before (SmolLM2 as shipped) | {before.text()} |
| after {results["steps"]} GRPO steps | {after.text()} |

Paired on the same problems: {fixed} became right, {broken} became wrong (sign test p = {p_value:.2g}).
{online_verdict(fixed, broken, p_value)}
The verifier wants a number: restating the question ("3 + 4 is ...") parses as an expression
equal to the answer, a hack GRPO otherwise finds within a few steps.

![grpo reward](grpo_reward.png)

| problem | greedy answer before | greedy answer after |
|---|---|---|
{examples}
"""
    summary = {"greedy_accuracy_before": before.as_dict(), "greedy_accuracy_after": after.as_dict()}
    return text, summary


def online_verdict(fixed: int, broken: int, p_value: float) -> str:
    """What the paired outcome says, in words."""
    if p_value < 0.05:
        moved = "rose" if fixed > broken else "fell"
        return f"Greedy accuracy **{moved} significantly**: the online stage {'learned' if fixed > broken else 'got worse'}."
    return (
        "Greedy accuracy did **not** change significantly: the online stage did not learn enough to tell "
        "(more steps, online.train.max_steps, or more problems a step, online.train.batch_size)."
    )


def write_report(root: Path, timings: dict[str, float], config: DemoConfig) -> Path:
    out = root / "report"
    out.mkdir(parents=True, exist_ok=True)
    rm_eval, dpo_eval, final = (load_json(root / d / "eval.json") for d in ("rm", "dpo", "eval"))
    rm_rows, dpo_rows = read_metrics(root / "rm" / "metrics.jsonl"), read_metrics(root / "dpo" / "metrics.jsonl")
    rm_train = [r for r in rm_rows if r["split"] == "train"]
    dpo_train = [r for r in dpo_rows if r["split"] == "train"]
    plot_curves(out / "rm_loss.png", rm_train, ["loss"], title="Reward model: Bradley-Terry loss", ylabel="loss")
    plot_curves(
        out / "rm_accuracy.png",
        rm_train,
        ["rewards/accuracy"],
        title="Reward model: pairwise accuracy",
        ylabel="accuracy",
        eval_rows=[r for r in rm_rows if r["split"] == "eval"],
        eval_key="accuracy",
        hline=0.5,
    )
    plot_curves(out / "dpo_loss.png", dpo_train, ["loss"], title="DPO loss", ylabel="loss", hline=0.6931)
    plot_curves(
        out / "dpo_reward_margin.png",
        dpo_train,
        ["rewards/margin", "rewards/chosen", "rewards/rejected"],
        title="DPO implicit rewards (β·log-ratio)",
        ylabel="reward",
        hline=0.0,
    )
    plot_curves(
        out / "dpo_accuracy.png",
        dpo_train,
        ["rewards/accuracy"],
        title="DPO implicit-reward accuracy",
        ylabel="accuracy",
        eval_rows=[r for r in dpo_rows if r["split"] == "eval"],
        eval_key="preference_accuracy",
        hline=0.5,
    )

    rm_acc = estimate_from(rm_eval["held_out"], "accuracy", "accuracy_interval")
    dpo_acc = estimate_from(dpo_eval["held_out"], "preference_accuracy", "preference_accuracy_interval")
    win = Estimate(**final["win_rate"])
    plot_estimates(
        out / "win_rate.png",
        {"RM accuracy": rm_acc, "DPO pref. accuracy": dpo_acc, "DPO win rate": win},
        title="Held-out results",
    )
    baseline = rm_eval["length_baseline"]
    kl = Estimate(**final["kl_to_reference"])
    lengths = Estimate(**final["policy_length_tokens"]), Estimate(**final["reference_length_tokens"])
    online_text, online_summary = online_section(root, out, config)
    summary = {
        "reward_model_accuracy": rm_acc.as_dict(),
        "dpo_preference_accuracy": dpo_acc.as_dict(),
        "win_rate": win.as_dict(),
        "kl_to_reference": kl.as_dict(),
        **online_summary,
        "timings_seconds": timings,
    }
    write_json(out / "summary.json", summary)
    examples = "\n\n".join(
        f"**Prompt:** {e['prompt'][:300]}\n\n- *DPO policy* (reward {e.get('policy_reward', float('nan')):.2f}): "
        f"{e['policy'][:300]}\n- *reference* (reward {e.get('reference_reward', float('nan')):.2f}): {e['reference'][:300]}"
        for e in final.get("examples", [])[:3]
    )
    text = f"""# rlxf demo report

Data: `{config.data_path}` — Anthropic HH-RLHF harmless-base pairs (MIT); {config.eval_fraction:.0%} of
prompt groups (first human turn) held out from every stage. Intervals are 95% (Wilson for rates,
normal for means); p-values are exact sign tests against 0.5.

| result | value [95% interval] | n | what it says |
|---|---|---|---|
| Reward model pairwise accuracy (held-out pairs) | {rm_acc.text()} | {rm_acc.n} | {verdict("RM accuracy", rm_acc)} |
| "Longer response wins" baseline on the same pairs | {baseline["longer_wins"]:.3f} | {baseline["pairs"]} | a length rule to beat (its opposite scores {1 - baseline["longer_wins"]:.3f}) |
| DPO implicit-reward accuracy (held-out pairs) | {dpo_acc.text()} | {dpo_acc.n} | {verdict("DPO preference accuracy", dpo_acc)} |
| DPO policy win rate vs reference, judged by the RM | {win.text()} | {win.n} | {verdict("The win rate", win)} |
| KL(policy ‖ reference) per response (nats) | {kl.text()} | {kl.n} | how far DPO moved the policy |
| Response length, policy / reference (tokens) | {lengths[0].value:.1f} / {lengths[1].value:.1f} | {lengths[0].n} | |

![held-out results](win_rate.png)

## Reward model ({rm_eval["data"]["train_pairs"]} training pairs, {config.rm.model.name})
![rm loss](rm_loss.png) ![rm accuracy](rm_accuracy.png)

## DPO ({dpo_eval["steps"]} steps × {config.dpo.train.batch_size} pairs, β = {config.dpo.beta}, lr = {config.dpo.train.lr}, {config.dpo.policy.name})
![dpo loss](dpo_loss.png) ![dpo margin](dpo_reward_margin.png) ![dpo accuracy](dpo_accuracy.png)

## Samples (held-out prompts, sampled at temperature {config.eval.generation.temperature})

Policy and reference sample with the same seed, so their answers often start alike and part where
DPO changed the model; each pair is judged by the reward model.

{examples}

{online_text}
## Time

{chr(10).join(f"- {stage}: {seconds / 60:.1f} min" for stage, seconds in timings.items())}

Configuration: `{root / "rm" / "config.yaml"}`, `{root / "dpo" / "config.yaml"}`; metrics: `metrics.jsonl` and
TensorBoard logs in each stage folder.
"""
    (out / "report.md").write_text(text, encoding="utf-8")
    write_json(out / "config.json", to_dict(config))
    return out / "report.md"
