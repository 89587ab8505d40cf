"""Steps every recipe takes: read and split data, build models, batch log-probs, report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from rlxf.config import ConfigError, DataSection, ModelSection, TrainSection, to_dict
from rlxf.data import BadRows, Labeled, Preference, read_preferences, split_by_group
from rlxf.data.batching import pack_groups, token_budget_batches
from rlxf.data.templating import ChatEncoder
from rlxf.eval.run_report import write_run_report
from rlxf.models import (
    apply_lora,
    completion_logps,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    resolve_model_path,
)
from rlxf.models.packing import use_packed_attention
from rlxf.models.tiny import RANDOM_CONFIGS
from rlxf.parallel import distributed
from rlxf.train.batches import examples_used
from rlxf.train.data_parallel import start_device
from rlxf.train.model_card import model_card, save_model

log = logging.getLogger("rlxf")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def say(message: str) -> None:
    """A line for the user on stderr (progress bars share the stream)."""
    tqdm.write(message, file=sys.stderr)


def resolve_path(path: str) -> Path:
    """A data path as given, else relative to the project folder (for shipped demo data)."""
    candidate = Path(path).expanduser()
    if candidate.exists() or candidate.is_absolute():
        return candidate
    shipped = PROJECT_ROOT / path
    return shipped if shipped.exists() else candidate


def report_bad_rows(bad: BadRows, path: Path) -> None:
    if len(bad):
        say(f"{path}: {bad.summary()}")


def load_splits(
    data: DataSection, read: Callable = read_preferences, what: str = "pairs"
) -> tuple[list, list, dict[str, Any]]:
    """Training and held-out records (eval_path, else a grouped split of path) and a data summary.

    ``read(path, format=..., on_bad_row=...)`` returns (records, BadRows).
    """
    if not data.path:
        raise ConfigError("data.path is empty: give a data file (data.path=...)")
    path = resolve_path(data.path)
    records, bad = read(path, format=data.format, on_bad_row=data.on_bad_row)
    report_bad_rows(bad, path)
    if data.eval_path:
        eval_path = resolve_path(data.eval_path)
        held, eval_bad = read(eval_path, format=data.format, on_bad_row=data.on_bad_row)
        report_bad_rows(eval_bad, eval_path)
        train = records
    else:
        train, held = split_by_group(records, data.eval_fraction, seed=data.split_seed)
        warn_if_lopsided(len(held), len(records), data.eval_fraction, path)
    train = train[: data.limit] if data.limit else train
    held = held[: data.eval_limit] if data.eval_limit else held
    summary = {
        "path": str(data.path),
        "records_read": len(records),
        "bad_rows_skipped": len(bad),
        f"train_{what}": len(train),
        f"eval_{what}": len(held),
    }
    say(f"data: {len(train)} training {what}, {len(held)} held-out {what} from {path}")
    return train, held, summary


def warn_if_lopsided(held: int, total: int, fraction: float, path: Path) -> None:
    """Prompt groups are held out whole, so a small file can lose far more than eval_fraction."""
    if total and held / total > max(2 * fraction, fraction + 0.1):
        message = (
            f"the held-out split of {path} holds {held} of {total} records ({held / total:.0%}), not about "
            f"{fraction:.0%} (data.eval_fraction): its prompt groups are few or uneven; give data.eval_path, more "
            "data, or a smaller eval_fraction"
        )
        log.warning(message)
        warnings.warn(message, stacklevel=2)


def load_preference_splits(data: DataSection) -> tuple[list[Preference], list[Preference], dict[str, Any]]:
    return load_splits(data, read_preferences, "pairs")


def example_weights(records: Sequence[Preference | Labeled]) -> torch.Tensor:
    """Each record's ``weight`` scaled to a mean of 1 over the training set: a per-example loss
    times its weight keeps the loss's scale, and unweighted data trains exactly as before.
    An example of weight 2 counts as that example twice."""
    weights = torch.tensor([r.weight for r in records], dtype=torch.float32)
    return weights / weights.mean()


def encoder_for(tokenizer, data: DataSection) -> ChatEncoder:
    return ChatEncoder(
        tokenizer, max_length=data.max_length, max_prompt_length=data.prompt_limit, truncation=data.truncation
    )


def encode_completions(encoder: ChatEncoder, records: Sequence[Labeled]) -> list[tuple[list[int], list[int]]]:
    """(prompt, completion) token ids of single labeled completions."""
    sequences = []
    for record in records:
        encoded = encoder.encode(record.prompt, [record.completion], record.source)
        sequences.append((encoded.prompt, encoded.completions[0]))
    return sequences


def _maybe_lora(model: nn.Module, section: ModelSection, *, reward_head: bool) -> nn.Module:
    lora = section.lora
    if not lora.rank:
        return model
    return apply_lora(model, **dataclasses.asdict(lora), reward_head=reward_head)  # rank, alpha, dropout, targets


def build_policy(section: ModelSection, seed: int, *, strategy: str = "ddp") -> tuple[nn.Module, Any]:
    """Causal LM + tokenizer, packed attention on, LoRA applied if asked; built where
    ``strategy`` wants it to start (:func:`rlxf.train.data_parallel.start_device`)."""
    tokenizer = load_tokenizer(section.name)
    device = start_device(strategy)
    model = load_causal_lm(section.name, dtype=section.dtype, seed=seed, device=device)
    use_packed_attention(model)
    return _maybe_lora(model, section, reward_head=False), tokenizer


def build_reward_model(section: ModelSection, seed: int, *, strategy: str = "ddp") -> tuple[nn.Module, Any]:
    """Scalar-head model + tokenizer, LoRA applied if asked; ``strategy`` as for :func:`build_policy`."""
    tokenizer = load_tokenizer(section.name)
    model = load_reward_model(
        section.name,
        dtype=section.dtype,
        seed=seed,
        pad_token_id=tokenizer.pad_token_id,
        device=start_device(strategy),
    )
    return _maybe_lora(model, section, reward_head=True), tokenizer


def save_results(
    output_dir: Path,
    model: nn.Module,
    tokenizer,
    results: dict[str, Any],
    *,
    title: str,
    recipe: str,
    base_model: str,
    config: Any,
    settings: dict[str, Any] | None = None,
    trained: bool = True,
    model_folder: str = "model",
) -> None:
    """eval.json, and the final model under ``model_folder`` (model/) with a card recording data,
    config and metrics (written by the main rank); kept as they are when this process trained nothing
    (a finished run run again)."""
    if not distributed.is_main():
        return
    if not trained and (output_dir / "model").is_dir():
        say(f"{output_dir} was already trained to its last step: model/ and its card are left as they are")
        return
    write_json(output_dir / "eval.json", results)
    card = model_card(
        title=title,
        base_model=base_model,
        recipe=recipe,
        data=results.get("data", {}),
        config=to_dict(config),
        metrics=results.get("held_out", {}),
        warnings=results.get("warnings", ()),
    )
    save_model(model, tokenizer, output_dir / model_folder, card, settings=settings)
    try:
        say(f"report: {write_run_report(output_dir)}")
    except (OSError, ValueError, KeyError) as error:  # the model is saved; say why the report is not
        log.warning("could not write %s/report.md: %s", output_dir, error)


Group = tuple[list[int], list[list[int]]]  # a prompt's token ids and its completions' token ids


def as_groups(sequences: Sequence[tuple[list[int], list[int]]]) -> list[Group]:
    return [(prompt, [completion]) for prompt, completion in sequences]


@torch.no_grad()
def group_logps(
    model: nn.Module, groups: Sequence[Group], *, max_tokens: int = 4096, desc: str = "log-probs"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs and completion lengths, flattened group by group, packed for speed."""
    model_was_training = model.training
    model.eval()
    sizes = [len(completions) for _, completions in groups]
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    logps = torch.zeros(offsets[-1])
    counts = torch.zeros(offsets[-1], dtype=torch.long)
    lengths = [len(prompt) + sum(len(c) for c in completions) for prompt, completions in groups]
    for batch in tqdm(
        token_budget_batches(lengths, max_tokens), desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0
    ):
        values, numbers = completion_logps(model, pack_groups([groups[i] for i in batch]))
        rows = [j for i in batch for j in range(offsets[i], offsets[i + 1])]
        logps[rows] = values.float()
        counts[rows] = numbers
    model.train(model_was_training)
    return logps, counts


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_tensors(path: Path, key: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Load tensors saved under ``key`` at ``path``, or compute and save them. Across ranks the
    main rank computes and saves them once and the others load its file."""
    tensors = _load_cached(path, key) if distributed.is_main() else None
    if distributed.is_main() and tensors is None:
        tensors = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "tensors": tensors}, path)
    distributed.barrier()
    return tensors if tensors is not None else _load_cached(path, key)


def _load_cached(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    if path.exists():
        saved = torch.load(path, weights_only=True)
        if saved.get("key") == key:
            return saved["tensors"]
    return None


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def weights_signature(name: str) -> list:
    """Names, sizes and modification times of a model folder's weight files (cheap to compute)."""
    if name in RANDOM_CONFIGS:
        return [name]
    folder = Path(resolve_model_path(name))
    if not folder.is_dir():
        return [name]
    return sorted(
        (f.name, f.stat().st_size, int(f.stat().st_mtime))
        for f in folder.iterdir()
        if f.suffix in (".safetensors", ".bin")
    )


def used_examples(count: int, train: TrainSection) -> list[int]:
    """The examples the run's steps will read (all, unless max_steps ends it within an epoch)."""
    return examples_used(
        count, train.batch_size, seed=train.seed, epochs=train.epochs, max_steps=train.max_steps, shuffle=train.shuffle
    )


def scattered(
    ref: dict[str, torch.Tensor], split: str, used: list[int], count: int, *, per_example: int
) -> dict[str, torch.Tensor]:
    """A split's per-completion tensors computed for the examples ``used`` only (``per_example``
    completions each, in order), laid out for all ``count`` examples; the others are never read
    (zeros)."""
    rows = torch.tensor([per_example * i + side for i in used for side in range(per_example)], dtype=torch.long)
    out = {}
    for kind in ("logps", "counts"):
        values = ref[f"{split}/{kind}"]
        full = torch.zeros(per_example * count, dtype=values.dtype)
        full[rows] = values
        out[f"{split}/{kind}"] = full
    return out


def reference_logps(
    output_dir: Path,
    policy: nn.Module,
    reference_name: str,
    policy_section: ModelSection,
    splits: dict[str, Sequence[Group]],
    *,
    max_tokens: int,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Reference log-probs and completion lengths of every completion, computed once and cached.

    The reference is ``reference_name`` if given, else ``policy`` as it is now (before
    training); results are keyed by model and tokens, so a resumed run reuses them.
    Returns ``{split}/logps`` and ``{split}/counts`` tensors, flattened group by group.
    """
    name = reference_name or policy_section.name
    key = fingerprint(name, weights_signature(name), policy_section.dtype, seed, splits)

    def compute() -> dict[str, torch.Tensor]:
        model = policy
        if reference_name:
            model = load_causal_lm(reference_name, dtype=policy_section.dtype, seed=seed)
            use_packed_attention(model)
        tensors = {}
        for split, groups in splits.items():
            tensors[f"{split}/logps"], tensors[f"{split}/counts"] = group_logps(
                model, groups, max_tokens=max_tokens, desc=f"reference log-probs ({split})"
            )
        return tensors

    return cached_tensors(output_dir / "reference_logps.pt", key, compute)


def read_appended_rows(path: Path) -> list[dict]:
    """The JSON rows a command appended to ``path`` so far (to pick up an interrupted run where it
    was); a last line cut off by an interrupted write is dropped, so that its work is done again."""
    if not path.exists():
        return []
    lines, rows = path.read_text(encoding="utf-8").splitlines(), []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if number < len(lines):
                raise ConfigError(
                    f"{path}, line {number}: not a row this command wrote; use another output_dir"
                ) from None
            say(f"{path}: its last line was cut off (an interrupted run); doing that part again")
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return rows
