"""'Did you mean …' for a field a config does not have: TRL's names for the same settings first,
then the closest spelling among the config's own dotted fields."""

from __future__ import annotations

import dataclasses
import difflib
import typing

TRL_NAMES: dict[str, tuple[str, ...]] = {
    "learning_rate": ("train.lr",),
    "per_device_train_batch_size": ("train.batch_size",),
    "gradient_accumulation_steps": ("train.micro_batch_size",),
    "num_train_epochs": ("train.epochs",),
    "max_steps": ("train.max_steps",),
    "warmup_steps": ("train.warmup_steps",),
    "lr_scheduler_type": ("train.scheduler",),
    "weight_decay": ("train.weight_decay",),
    "max_grad_norm": ("train.max_grad_norm",),
    "seed": ("train.seed",),
    "logging_steps": ("train.log_every",),
    "eval_steps": ("train.eval_every",),
    "save_steps": ("train.save_every",),
    "save_total_limit": ("train.keep_checkpoints",),
    "resume_from_checkpoint": ("train.resume_from",),
    "num_generations": ("sampling.n",),
    "max_completion_length": ("sampling.max_new_tokens",),
    "max_new_tokens": ("sampling.max_new_tokens",),
    "temperature": ("sampling.temperature",),
    "top_p": ("sampling.top_p",),
    "use_vllm": ("sampling.engine",),
    "max_length": ("data.max_length",),
    "max_prompt_length": ("data.max_prompt_length",),
    "dataset_name": ("data.path", "task.path"),
    "train_dataset": ("data.path", "task.path"),
    "model_name_or_path": ("policy.name", "model.name"),
    "model": ("policy.name", "model.name"),
    "ref_model": ("reference.name",),
    "loss_type": ("loss", "aggregation"),
    "label_smoothing": ("loss_options",),
    "beta": ("beta", "kl_coef"),
    "epsilon": ("clip_low",),
    "epsilon_high": ("clip_high",),
    "reward_funcs": ("rewards",),
    "lora_r": ("policy.lora.rank", "model.lora.rank"),
    "lora_alpha": ("policy.lora.alpha", "model.lora.alpha"),
}
"""TRL's argument -> the rlxf fields it corresponds to, first match in the config wins."""

TRL_NOTES = {
    "per_device_train_batch_size": (
        "; for online RL TRL counts completions, rlxf's train.batch_size counts prompts of sampling.n samples each"
    ),
    "gradient_accumulation_steps": (
        "; rlxf's train.batch_size is the whole step's batch, accumulated over micro-batches of train.micro_batch_size"
    ),
}
"""Where a TRL name means something a little different in rlxf, said with the suggestion."""


def dotted_fields(cls: type, prefix: str = "") -> list[str]:
    """Every field of a dataclass, sections spelled out (``train.lr``)."""
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        names.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            names += dotted_fields(hints[f.name], f"{prefix}{f.name}.")
    return names


def suggestion(name: str, cls: type, prefix: str = "") -> str:
    """'did you mean …?' for the unknown ``name`` in the section ``prefix`` (``train.``, or '' at
    the top) whose class is ``cls``; '' when nothing is close."""
    here = [f.name for f in dataclasses.fields(cls)]
    everywhere = dotted_fields(cls)
    trl_name = name if name in TRL_NAMES else next(iter(difflib.get_close_matches(name, TRL_NAMES, 1, 0.85)), None)
    for candidate in TRL_NAMES.get(trl_name, ()):
        relative = candidate.removeprefix(prefix)
        leaf = candidate.rsplit(".", 1)[-1]
        if relative in everywhere or (not prefix and leaf in here):  # a section set on its own
            return f"did you mean {prefix}{relative if relative in everywhere else leaf}? (TRL's {trl_name}{TRL_NOTES.get(trl_name, '')})"
    close = difflib.get_close_matches(name, here, 1, 0.7) or difflib.get_close_matches(name, everywhere, 1, 0.75)
    if not close:
        leaf = {path.rsplit(".", 1)[-1]: path for path in everywhere}
        close = [leaf[m] for m in difflib.get_close_matches(name, list(leaf), 1, 0.8)]
    return f"did you mean {prefix}{close[0]}?" if close else ""
