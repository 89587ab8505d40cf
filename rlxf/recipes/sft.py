"""`rlxf sft`: supervised fine-tuning on completions to imitate.

Loop: batch of (prompt, completion) -> packed forward -> token-mean negative
log-likelihood of completion tokens over the global batch -> step.
Prompt tokens are masked out of the loss.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from rlxf.config import DataSection, DistributedSection, ModelSection, TrainSection
from rlxf.data import pack, read_demonstrations
from rlxf.losses import token_mean
from rlxf.models import completion_logps
from rlxf.recipes.common import (
    as_groups,
    build_policy,
    encode_completions,
    encoder_for,
    group_logps,
    load_splits,
    save_results,
    say,
)
from rlxf.recipes.run_folder import prepare_output_dir
from rlxf.train import Run


@dataclass
class SFTConfig:
    output_dir: str = "runs/sft"
    """Where checkpoints, metrics, eval.json and the final model (model/) go."""
    policy: ModelSection = field(default_factory=ModelSection)
    """The model being trained."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=512))
    """{prompt, completion}, {messages}, or preference pairs (their chosen side)."""
    train: TrainSection = field(default_factory=lambda: TrainSection(batch_size=8, lr=2e-5))
    """Optimization."""
    distributed: DistributedSection = field(default_factory=DistributedSection)
    """How ranks are started: torchrun (or a plain process) or Ray actors."""
    max_tokens_per_forward: int = 4096
    """Token budget of one packed no-grad forward pass (evaluation)."""


@torch.no_grad()
def held_out_nll(model, sequences, max_tokens: int) -> dict:
    if not sequences:
        return {}
    logps, counts = group_logps(model, as_groups(sequences), max_tokens=max_tokens, desc="held-out log-probs")
    nll = float(-logps.sum() / counts.sum())
    return {"nll_per_token": nll, "perplexity": math.exp(min(nll, 50.0)), "sequences": len(sequences)}


def train_sft(config: SFTConfig) -> dict:
    output_dir = prepare_output_dir(config)
    torch.manual_seed(config.train.seed)
    train_records, held_records, data_summary = load_splits(config.data, read_demonstrations, "demonstrations")
    policy, tokenizer = build_policy(config.policy, config.train.seed, strategy=config.distributed.strategy)
    encoder = encoder_for(tokenizer, config.data)

    train_sequences = encode_completions(encoder, train_records)
    held_sequences = encode_completions(encoder, held_records)
    say(f"tokenized: {encoder.stats.summary()}")
    completion_tokens = [len(completion) for _, completion in train_sequences]

    policy.train()
    run = Run(
        output_dir,
        policy,
        config.train,
        num_examples=len(train_sequences),
        name="sft",
        strategy=config.distributed.strategy,
        tokenizer=tokenizer,
    )
    for batch in run.steps():
        global_tokens = sum(completion_tokens[i] for i in batch)
        total, tokens = 0.0, 0
        for micro in run.micro_batches(batch):
            sequences = [train_sequences[i] for i in micro]
            logps, _ = run.forward(completion_logps, pack(sequences))
            loss = token_mean(-logps, global_tokens)
            loss.backward()
            total += loss.item()
            tokens += sum(len(p) + len(c) for p, c in sequences)
        run.end_step(total, {"completion_tokens": global_tokens}, tokens=tokens)
        if run.eval_due():
            run.log_eval(run.evaluate(held_out_nll, policy, held_sequences, config.max_tokens_per_forward))
    results = {
        "held_out": run.evaluate(held_out_nll, policy, held_sequences, config.max_tokens_per_forward),
        "data": data_summary,
        "truncation": dataclasses.asdict(encoder.stats),
        "steps": run.step,
    }
    if results["held_out"]:
        run.log_eval(results["held_out"])
        say(f"sft: held-out NLL {results['held_out']['nll_per_token']:.3f} per token")
    run.finish()
    save_results(
        output_dir,
        run.model,
        tokenizer,
        results,
        title="SFT policy",
        recipe="sft",
        base_model=config.policy.name,
        config=config,
        trained=run.trained_now,
    )
    return results
