"""`rlxf dpo`: offline preference optimization with any loss of the DPO family.

Loop: batch of pairs -> policy log-probs of chosen and rejected (one packed forward
pass) -> loss against cached reference log-probs -> step.

Reference log-probs are computed once, before the first step, with the initial
policy (or ``reference.name``), and cached in ``output_dir``; no reference model
stays in memory while training.

Anchors (``anchor``): completions the policy must keep, e.g. the original model's own answers to
prompts a verbal feedback does not concern. Anchor row r goes with pair r mod (number of pairs), so
each is used once an epoch, and a step's loss adds, over its anchor rows, weight × mean token negative
log-likelihood, divided by the step's pairs. With weight σ·(pairs / rows of its kind) per kind of row,
a step's term is σ times that kind's mean NLL, in expectation: C3PO's
``L_DPO + σ_out·CE(out-of-scope) + σ_near·CE(near-scope)`` (Stephan et al., "RLVF: Learning from
Verbal Feedback without Overgeneralization", ICML 2024; the authors' LocallyConstrainedDPO), which
`rlxf c3po` writes its anchors for.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from rlxf.config import (
    Checked,
    ConfigError,
    DataSection,
    DistributedSection,
    ModelSection,
    ReferenceSection,
    TrainSection,
)
from rlxf.data import Preference, read_demonstrations
from rlxf.data.batching import pack_groups
from rlxf.data.templating import ChatEncoder
from rlxf.eval.stats import proportion
from rlxf.losses import PREFERENCE_LOSSES, sequence_mean
from rlxf.models import completion_logps
from rlxf.recipes.common import (
    Group,
    as_groups,
    build_policy,
    encode_completions,
    encoder_for,
    example_weights,
    group_logps,
    load_preference_splits,
    reference_logps,
    report_bad_rows,
    resolve_path,
    save_results,
    say,
    scattered,
    used_examples,
)
from rlxf.recipes.run_folder import prepare_output_dir
from rlxf.train import Run
from rlxf.train.run import MetricSums

REGISTRIES = {"loss": PREFERENCE_LOSSES}
"""What `rlxf dpo --help` lists as the choices of these fields."""


@dataclass
class DPOConfig(Checked):
    output_dir: str = "runs/dpo"
    """Where checkpoints, metrics, eval.json and the final model (model/) go."""
    policy: ModelSection = field(default_factory=ModelSection)
    """The model being trained."""
    reference: ReferenceSection = field(default_factory=ReferenceSection)
    """Where reference log-probs come from (computed once and cached)."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=512))
    """Pairwise preferences; ties carry no direction and are left out (counted)."""
    train: TrainSection = field(default_factory=lambda: TrainSection(batch_size=4, lr=1e-6))
    """Optimization; lr 1e-6 (TRL's default) suits a full fine-tune of a chat model; LoRA takes about 10x more."""
    distributed: DistributedSection = field(default_factory=DistributedSection)
    """How ranks are started: torchrun (or a plain process) or Ray actors."""
    loss: str = "dpo"
    """One of rlxf.losses.PREFERENCE_LOSSES: dpo, cdpo, robust, ipo, hinge, simpo."""
    beta: float = 0.1
    """Inverse temperature of the implicit reward."""
    loss_options: dict[str, float] = field(default_factory=dict)
    """Extra loss hyperparameters, e.g. {label_smoothing: 0.1} for cdpo/robust or {gamma: 0.5} for simpo."""
    logps: str = "auto"
    """How a completion's log-probs enter the loss: sum, mean (per completion token), or auto (the loss's
    own: mean for ipo, as TRL and the IPO authors use, and for simpo; sum for the others)."""
    max_tokens_per_forward: int = 4096
    """Token budget of one packed no-grad forward pass (reference and evaluation)."""
    anchor: str = ""
    """A file of {prompt, completion, weight} rows to keep (C3PO): row r goes with pair r mod the number
    of pairs (each once an epoch), adding weight × its mean token NLL / the step's pairs (weight 1 when
    the row has none)."""

    def check(self):
        if self.loss not in PREFERENCE_LOSSES:
            raise ValueError(f"loss must be one of {sorted(PREFERENCE_LOSSES)}, got {self.loss!r}")
        if self.beta <= 0:
            raise ValueError("beta must be > 0")
        accepted = {
            name
            for name, p in inspect.signature(PREFERENCE_LOSSES[self.loss]).parameters.items()
            if p.kind is p.KEYWORD_ONLY and name != "beta"
        }
        if self.logps not in ("auto", "sum", "mean"):
            raise ValueError(f"logps must be auto, sum or mean, got {self.logps!r}")
        unknown = set(self.loss_options) - accepted
        if unknown:
            raise ValueError(f"loss_options {sorted(unknown)} do not apply to {self.loss}; it takes {sorted(accepted)}")

    @property
    def length_normalized(self) -> bool:
        """Whether log-probs are per-token means (see ``logps``)."""
        return PREFERENCE_LOSSES[self.loss].length_normalized if self.logps == "auto" else self.logps == "mean"


def encode_pairs(encoder: ChatEncoder, records: Sequence[Preference]) -> list[Group]:
    """Token ids of each pair as (prompt, [chosen, rejected]); the prompt is shared."""
    groups = []
    for record in records:
        encoded = encoder.encode(record.prompt, [record.chosen, record.rejected], record.source)
        groups.append((encoded.prompt, encoded.completions))
    return groups


def pair_logps(model: nn.Module, pairs: Sequence[Group], *, length_normalized: bool) -> tuple[Tensor, Tensor]:
    """Policy log-probs of chosen and rejected completions, (B,) each, from one packed forward pass
    in which each prompt is computed once."""
    logps, counts = completion_logps(model, pack_groups(pairs))
    if length_normalized:
        logps = logps / counts.clamp(min=1)
    logps = logps.view(-1, 2)
    return logps[:, 0], logps[:, 1]


def anchor_nll(model: nn.Module, anchors: Sequence[tuple[list[int], list[int]]]) -> Tensor:
    """Each anchor completion's mean token negative log-likelihood, (A,)."""
    logps, counts = completion_logps(model, pack_groups(as_groups(anchors)))
    return -logps / counts.clamp(min=1)


def load_anchors(config: DPOConfig, encoder: ChatEncoder, pairs: int) -> tuple[list, Tensor, list[list[int]]]:
    """The anchor rows' token ids, their weights, and for each pair the rows that go with it."""
    if not config.anchor:
        return [], torch.zeros(0), []
    path = resolve_path(config.anchor)
    records, bad = read_demonstrations(path, on_bad_row=config.data.on_bad_row)
    report_bad_rows(bad, path)
    if not records:
        raise ConfigError(f"{path}: no anchor rows ({{prompt, completion, weight}}) in it")
    with_pair = [list(range(i, len(records), pairs)) for i in range(pairs)]
    say(f"anchors: {len(records)} rows from {path}, each once an epoch beside pair (row mod {pairs})")
    return encode_completions(encoder, records), torch.tensor([r.weight for r in records]), with_pair


def split_pairs(flat: Tensor) -> tuple[Tensor, Tensor]:
    """Group-by-group (chosen, rejected, chosen, ...) values -> (chosen (B,), rejected (B,))."""
    pairs = flat.view(-1, 2)
    return pairs[:, 0], pairs[:, 1]


@torch.no_grad()
def preference_accuracy(
    model: nn.Module,
    pairs: Sequence[Group],
    ref: dict[str, Tensor] | None,
    split: str,
    *,
    beta: float,
    length_normalized: bool,
    max_tokens: int,
) -> dict:
    """Held-out accuracy of the loss's own implicit reward (β·log-ratio, or β·mean log-prob for
    reference-free losses): chosen above rejected, with its 95% interval."""
    if not pairs:
        return {}
    logps, counts = group_logps(model, pairs, max_tokens=max_tokens, desc=f"policy log-probs ({split})")
    rewards = beta * implicit_log_ratio(logps, counts, ref, split, length_normalized=length_normalized)
    chosen, rejected = split_pairs(rewards)
    margins = chosen - rejected
    estimate = proportion((margins > 0).float().tolist())
    policy_chosen, policy_rejected = split_pairs(logps)
    return {
        "preference_accuracy": estimate.value,
        "preference_accuracy_interval": [estimate.low, estimate.high],
        "pairs": len(pairs),
        "p_value_vs_chance": estimate.p_value_vs_half,
        "reward_margin": float(margins.mean()),
        "policy_chosen_logps": float(policy_chosen.mean()),
        "policy_rejected_logps": float(policy_rejected.mean()),
    }


def implicit_log_ratio(
    logps: Tensor, counts: Tensor, ref: dict[str, Tensor] | None, split: str, *, length_normalized: bool
) -> Tensor:
    """log π - log π_ref per completion (log π alone without a reference), per token if normalized."""
    values = logps - ref[f"{split}/logps"] if ref is not None else logps
    return values / counts.clamp(min=1) if length_normalized else values


def without_ties(records: list[Preference], what: str) -> list[Preference]:
    kept = [r for r in records if not r.tie]
    if len(kept) < len(records):
        say(f"{what}: left out {len(records) - len(kept)} tied pairs (no preferred side)")
    return kept


def training_reference(config: DPOConfig, output_dir: Path, policy: nn.Module, train_pairs, held_pairs):
    """Reference log-probs (by split) and the chosen and rejected ones of each training pair,
    computed for the pairs the run's steps read; (None, zeros, zeros) for a reference-free loss."""
    loss_fn = PREFERENCE_LOSSES[config.loss]
    ref = None
    if loss_fn.needs_reference:
        used = used_examples(len(train_pairs), config.train)
        ref = reference_logps(
            output_dir,
            policy,
            config.reference.name,
            config.policy,
            {"train": [train_pairs[i] for i in used], "eval": held_pairs},
            max_tokens=config.max_tokens_per_forward,
            seed=config.train.seed,
        )
        ref = {**ref, **scattered(ref, "train", used, len(train_pairs), per_example=2)}
        ref_logps = ref["train/logps"]
        if config.length_normalized:
            ref_logps = ref_logps / ref["train/counts"].clamp(min=1)
        ref_chosen, ref_rejected = split_pairs(ref_logps)
    else:
        ref_chosen = ref_rejected = torch.zeros(len(train_pairs))  # ignored by reference-free losses
    return ref, ref_chosen, ref_rejected


def train_dpo(config: DPOConfig) -> dict:
    output_dir = prepare_output_dir(config)
    torch.manual_seed(config.train.seed)
    loss_fn = PREFERENCE_LOSSES[config.loss]
    train_records, held_records, data_summary = load_preference_splits(config.data)
    train_records, held_records = without_ties(train_records, "train"), without_ties(held_records, "eval")

    policy, tokenizer = build_policy(config.policy, config.train.seed, strategy=config.distributed.strategy)
    encoder = encoder_for(tokenizer, config.data)
    train_pairs, held_pairs = encode_pairs(encoder, train_records), encode_pairs(encoder, held_records)
    weights = example_weights(train_records)
    say(f"tokenized: {encoder.stats.summary()}")
    ref, ref_chosen, ref_rejected = training_reference(config, output_dir, policy, train_pairs, held_pairs)
    anchors, anchor_weights, anchors_with_pair = load_anchors(config, encoder, len(train_pairs))
    loss_kwargs = {"beta": config.beta, **config.loss_options}

    def evaluate() -> dict:
        return run.evaluate(
            preference_accuracy,
            policy,
            held_pairs,
            ref,
            "eval",
            beta=config.beta,
            length_normalized=config.length_normalized,
            max_tokens=config.max_tokens_per_forward,
        )

    policy.train()
    run = Run(
        output_dir,
        policy,
        config.train,
        num_examples=len(train_pairs),
        name=config.loss,
        strategy=config.distributed.strategy,
        tokenizer=tokenizer,
        progress_keys=("loss", "rewards/accuracy", "rewards/margin"),
    )
    for batch in run.steps():
        sums, total, tokens = MetricSums(), 0.0, 0
        for micro in run.micro_batches(batch):
            pairs = [train_pairs[i] for i in micro]
            chosen, rejected = run.forward(pair_logps, pairs, length_normalized=config.length_normalized)
            per_pair, metrics = loss_fn(chosen, rejected, ref_chosen[micro], ref_rejected[micro], **loss_kwargs)
            loss = sequence_mean(per_pair * weights[micro], run.global_batch_size)
            if rows := [r for i in micro for r in anchors_with_pair[i]] if anchors else []:
                nll = run.forward(anchor_nll, [anchors[r] for r in rows])
                loss = loss + (anchor_weights[rows] * nll).sum() / run.global_batch_size
                metrics["anchor_nll"] = nll.detach()
            loss.backward()
            total += loss.item()
            sums.add({**metrics, "logps/chosen": chosen.detach(), "logps/rejected": rejected.detach()})
            tokens += sum(len(prompt) + sum(map(len, completions)) for prompt, completions in pairs)
        run.end_step(total, sums.means(), tokens=tokens)
        if run.eval_due():
            run.log_eval(evaluate())

    results = {
        "held_out": evaluate(),
        "data": data_summary,
        "truncation": dataclasses.asdict(encoder.stats),
        "steps": run.step,
    }
    if results["held_out"]:
        run.log_eval(results["held_out"])
        say(
            f"{config.loss}: held-out preference accuracy {results['held_out']['preference_accuracy']:.3f} "
            f"on {results['held_out']['pairs']} pairs"
        )
    run.finish()
    save_results(
        output_dir,
        run.model,
        tokenizer,
        results,
        title=f"{config.loss.upper()} policy",
        recipe="dpo",
        base_model=config.policy.name,
        config=config,
        trained=run.trained_now,
    )
    return results
