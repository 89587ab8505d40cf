"""`rlxf kto`: Kahneman-Tversky Optimization on unpaired binary feedback.

Loop: batch of (prompt, completion, desirable?) -> reference point z0 from the
batch's mismatched prompt/completion pairs (no gradient) -> KTO loss -> step.

Each example i is paired once, for the whole run, with the completion of another
example, so the reference log-probs of mismatched pairs are computed once and cached
like the matched ones (Ethayarajh et al., 2024, Sec. 4.1 estimate z0 the same way
with in-batch mismatches).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from rlxf.config import DataSection, DistributedSection, ModelSection, ReferenceSection, TrainSection
from rlxf.data import pack, read_feedback
from rlxf.eval.stats import proportion
from rlxf.losses import kto, sequence_mean
from rlxf.losses.preference import kto_kl_estimate
from rlxf.models import completion_logps
from rlxf.recipes.common import (
    as_groups,
    build_policy,
    encode_completions,
    encoder_for,
    example_weights,
    group_logps,
    load_splits,
    reference_logps,
    save_results,
    say,
    scattered,
    used_examples,
)
from rlxf.recipes.run_folder import prepare_output_dir
from rlxf.train import Run
from rlxf.train.run import MetricSums


@dataclass
class KTOConfig:
    output_dir: str = "runs/kto"
    """Where checkpoints, metrics, eval.json and the final model (model/) go."""
    policy: ModelSection = field(default_factory=ModelSection)
    """The model being trained."""
    reference: ReferenceSection = field(default_factory=ReferenceSection)
    """Where reference log-probs come from (computed once and cached)."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=512))
    """{prompt, completion, label} rows, or preference pairs split into desirable/undesirable."""
    train: TrainSection = field(default_factory=lambda: TrainSection(batch_size=8, lr=5e-6))
    """Optimization."""
    distributed: DistributedSection = field(default_factory=DistributedSection)
    """How ranks are started: torchrun (or a plain process) or Ray actors."""
    beta: float = 0.1
    """Inverse temperature of the implicit reward."""
    desirable_weight: float = 1.0
    """λ_D: weight of desirable examples."""
    undesirable_weight: float = 1.0
    """λ_U: weight of undesirable examples."""
    max_tokens_per_forward: int = 4096
    """Token budget of one packed no-grad forward pass (reference and evaluation)."""


def mismatched_partners(groups: Sequence[str], seed: int) -> list[int]:
    """For each example, another example with a different prompt group, whose completion
    follows this example's prompt in the KL estimate (itself only if every example shares one group)."""
    n = len(groups)
    order = np.random.default_rng([seed, 7919]).permutation(n)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    partner = []
    for i in range(n):
        k = int(position[i])
        candidates = (int(order[(k + step) % n]) for step in range(1, n))
        partner.append(next((j for j in candidates if groups[j] != groups[i]), i))
    return partner


@torch.no_grad()
def held_out_kto(policy, matched, labels, ref: dict, *, max_tokens: int) -> dict:
    """Share of held examples whose implicit reward log π/π_ref is positive exactly when they are desirable."""
    if not matched:
        return {}
    logps, _ = group_logps(policy, as_groups(matched), max_tokens=max_tokens, desc="policy log-probs (eval)")
    rewards = logps - ref["eval/logps"]
    desirable = labels > 0
    agree = ((rewards > 0) == desirable).float().tolist()
    estimate = proportion(agree)
    return {
        "label_accuracy": estimate.value,
        "label_accuracy_interval": [estimate.low, estimate.high],
        "examples": estimate.n,
        "reward_desirable": float(rewards[desirable].mean()) if desirable.any() else 0.0,
        "reward_undesirable": float(rewards[~desirable].mean()) if (~desirable).any() else 0.0,
    }


def train_kto(config: KTOConfig) -> dict:
    output_dir = prepare_output_dir(config)
    torch.manual_seed(config.train.seed)
    train_records, held_records, data_summary = load_splits(config.data, read_feedback, "examples")
    policy, tokenizer = build_policy(config.policy, config.train.seed, strategy=config.distributed.strategy)
    encoder = encoder_for(tokenizer, config.data)

    matched, held = encode_completions(encoder, train_records), encode_completions(encoder, held_records)
    partner = mismatched_partners([r.group_key for r in train_records], config.train.seed)
    mismatched = [(matched[i][0], matched[partner[i]][1]) for i in range(len(matched))]
    labels = torch.tensor([r.label for r in train_records])
    weights = example_weights(train_records)
    held_labels = torch.tensor([r.label for r in held_records])
    say(
        f"tokenized: {encoder.stats.summary()}; {int((labels > 0).sum())} desirable, {int((labels <= 0).sum())} undesirable"
    )
    used = used_examples(len(matched), config.train)  # reference log-probs only for what the steps read
    ref = reference_logps(
        output_dir,
        policy,
        config.reference.name,
        config.policy,
        {
            "train": as_groups([matched[i] for i in used]),
            "mismatched": as_groups([mismatched[i] for i in used]),
            "eval": as_groups(held),
        },
        max_tokens=config.max_tokens_per_forward,
        seed=config.train.seed,
    )
    for split in ("train", "mismatched"):
        ref.update(scattered(ref, split, used, len(matched), per_example=1))

    policy.train()
    run = Run(
        output_dir,
        policy,
        config.train,
        num_examples=len(matched),
        name="kto",
        strategy=config.distributed.strategy,
        tokenizer=tokenizer,
    )
    for batch in run.steps():
        with torch.no_grad():  # z0 over the whole global batch, before any gradient
            mismatched_logps, _ = completion_logps(policy, pack([mismatched[i] for i in batch]))
            kl = kto_kl_estimate(mismatched_logps, ref["mismatched/logps"][batch])
        sums, total, tokens = MetricSums(), 0.0, 0
        for micro in run.micro_batches(batch):
            logps, _ = run.forward(completion_logps, pack([matched[i] for i in micro]))
            per_example, metrics = kto(
                logps,
                ref["train/logps"][micro],
                labels[micro] > 0,
                beta=config.beta,
                kl=kl,
                desirable_weight=config.desirable_weight,
                undesirable_weight=config.undesirable_weight,
            )
            loss = sequence_mean(per_example * weights[micro], run.global_batch_size)
            loss.backward()
            total += loss.item()
            sums.add(metrics)
            tokens += sum(len(matched[i][0]) + len(matched[i][1]) for i in micro)
        run.end_step(total, sums.means(), tokens=tokens)
        if run.eval_due():
            run.log_eval(
                run.evaluate(held_out_kto, policy, held, held_labels, ref, max_tokens=config.max_tokens_per_forward)
            )

    results = {
        "held_out": run.evaluate(
            held_out_kto, policy, held, held_labels, ref, max_tokens=config.max_tokens_per_forward
        ),
        "data": data_summary,
        "truncation": dataclasses.asdict(encoder.stats),
        "steps": run.step,
    }
    run.log_eval(results["held_out"])
    run.finish()
    save_results(
        output_dir,
        run.model,
        tokenizer,
        results,
        title="KTO policy",
        recipe="kto",
        base_model=config.policy.name,
        config=config,
        trained=run.trained_now,
    )
    return results
