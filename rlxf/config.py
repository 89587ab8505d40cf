"""Dataclass configs <-> YAML, with dotted command-line overrides (``train.lr=1e-5``).

Each config field is documented by the string literal under it; :func:`describe`
turns those into ``rlxf <command> --help``. Validation lives in ``__post_init__``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A config file or override that does not fit the config's fields and types."""


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] = ()) -> C:
    """Build ``cls`` from defaults, then a YAML file, then ``key.sub=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields at the top level")
        values = loaded
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r}: expected key=value, e.g. train.lr=1e-5")
        _set_dotted(values, key.strip().split("."), raw)
    return _build(cls, values, where=str(path) if path else "config")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def _set_dotted(values: dict, keys: list[str], raw: str) -> None:
    for key in keys[:-1]:
        values = values.setdefault(key, {})
        if not isinstance(values, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {key!r} is not a section")
    values[keys[-1]] = _RawText(raw)


class _RawText(str):
    """A command-line value, converted by the field's type rather than by YAML rules."""


def _build(cls: type, values: dict, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)} for {cls.__name__}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        default = _default_of(fields[name])
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = _merge(dataclasses.asdict(default), value)  # a section keeps its recipe-specific defaults
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}" if where != "config" else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def _default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merge(merged[key], value)
        merged[key] = value
    return merged


def _convert(kind: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, where)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None or (isinstance(value, _RawText) and value.strip().lower() in ("none", "null", "")):
            return None
        return _convert(options[0], value, where)
    if isinstance(value, _RawText):
        value = _parse_raw(kind, value, where)
    if origin is typing.Literal:
        if value not in typing.get_args(kind):
            raise ConfigError(f"{where}: expected one of {list(typing.get_args(kind))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, value_kind = typing.get_args(kind)
        return {str(k): _convert(value_kind, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_kind,) = typing.get_args(kind)
        return [_convert(item_kind, v, where) for v in value]
    return _scalar(kind, value, where)


def _parse_raw(kind: Any, raw: str, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (dict, list):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ConfigError(f"{where}: cannot parse {raw!r}: {error}") from None
    return str(raw)


def _scalar(kind: Any, value: Any, where: str) -> Any:
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return lowered in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from None
    return value


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    docs, body = {}, tree.body[0].body
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def describe(config: Any, prefix: str = "") -> list[str]:
    """One line per field: ``dotted.name = default  doc``, for --help."""
    lines, docs = [], field_docs(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            lines += describe(value, f"{prefix}{f.name}.")
        else:
            doc = docs.get(f.name, "")
            lines.append(f"  {prefix}{f.name} = {value!r}" + (f"\n      {doc}" if doc else ""))
    return lines


# ---- sections shared by the recipes ---------------------------------------------------


@dataclasses.dataclass
class LoraSection:
    rank: int = 0
    """LoRA rank; 0 trains all weights."""
    alpha: float = 16.0
    """LoRA scaling numerator (effective scale alpha/rank)."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: str = "all-linear"
    """Which linear layers get adapters (peft syntax)."""

    def __post_init__(self):
        if self.rank < 0:
            raise ValueError("lora.rank must be >= 0")


@dataclasses.dataclass
class ModelSection:
    name: str = "smollm2-135m-instruct"
    """Embedded name (smollm2-135m-instruct, minilm-l6-v2), a random-weight model built from code
    (tiny-llama, random-smollm2-135m), a local HF folder, or a hub id."""
    dtype: str = "float32"
    """float32 (best for CPU training), bfloat16 or float16."""
    lora: LoraSection = dataclasses.field(default_factory=LoraSection)
    """LoRA adapters instead of a full fine-tune."""

    def __post_init__(self):
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


@dataclasses.dataclass
class ReferenceSection:
    name: str = ""
    """Reference model of the KL anchor or log-ratio; empty = the initial policy."""


@dataclasses.dataclass
class DataSection:
    path: str = ""
    """Training file (jsonl, json, csv or parquet)."""
    format: str = "auto"
    """Row format: auto, trl, hh, autoj, webgpt (preferences) or unpaired ({prompt, completion, label})."""
    eval_path: str = ""
    """Held-out file; when empty, eval_fraction of the groups in `path` are held out."""
    eval_fraction: float = 0.1
    """Share of prompt groups (first user turn) held out when eval_path is empty."""
    split_seed: int = 0
    """Seed of the grouped train/eval split (same seed, same split in every recipe)."""
    limit: int = 0
    """Use only the first N training records (0 = all)."""
    eval_limit: int = 0
    """Use only the first N held-out records (0 = all)."""
    on_bad_row: str = "error"
    """error: stop at the first malformed row; skip: count, report and skip them."""
    max_length: int = 1024
    """Maximum tokens of prompt + completion."""
    max_prompt_length: int = 512
    """A too-long prompt keeps its last N tokens before any completion is cut."""
    truncation: str = "cut"
    """cut: shorten too-long rows and report counts; error: stop at the first such row."""

    def __post_init__(self):
        if self.on_bad_row not in ("error", "skip"):
            raise ValueError(f"on_bad_row must be error or skip, got {self.on_bad_row!r}")
        formats = ("auto", "trl", "hh", "autoj", "webgpt", "unpaired")
        if self.format not in formats:
            raise ValueError(f"format must be one of {', '.join(formats)}, got {self.format!r}")
        if self.truncation not in ("cut", "error"):
            raise ValueError(f"truncation must be cut or error, got {self.truncation!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("eval_fraction must be in [0, 1)")
        if not 0 < self.max_prompt_length < self.max_length:
            raise ValueError("need 0 < max_prompt_length < max_length")


@dataclasses.dataclass
class DistributedSection:
    backend: str = "torchrun"
    """torchrun: the ranks are whatever launched this command (one process when run plainly);
    ray: this command starts `ranks` training ranks as Ray actors."""
    ranks: int = 2
    """ray: number of training ranks."""
    cpus_per_rank: int = 1
    """ray: CPUs reserved by each rank (and its torch threads)."""
    address: str = ""
    """ray: an existing cluster's address (e.g. head-node:6379); empty starts Ray on this machine,
    with its temporary files in the run folder."""
    max_restarts: int = 0
    """ray: how often all ranks are restarted from the last checkpoint after one of them dies."""
    strategy: str = "ddp"
    """Across ranks: ddp (each rank holds the whole model) or fsdp (FSDP2: weights, gradients and
    optimizer state sharded over ranks; for models that do not fit one device)."""
    rollout_workers: int = 0
    """Online recipes: Ray actors that generate rollouts, each with a copy of the policy given the
    trainer's weights before every generation (cpus_per_rank CPUs each); 0 = the trainer generates.
    With several ranks (torchrun or ray), each rank has workers of its own."""
    reference_worker: bool = False
    """Online recipes with a KL term: the reference model in a Ray actor of its own (cpus_per_rank
    CPUs), out of the trainer's memory."""
    reward_workers: int = 0
    """Online recipes: Ray actors that compute the rewards, each building the reward sources once
    (a reward model or judge then runs beside the trainer; cpus_per_rank CPUs each); 0 = the trainer."""
    gpus_per_worker: float = 0.0
    """GPUs Ray gives each rollout, reward and reference worker: 1 places each on a GPU of its own,
    a fraction lets workers share GPUs (colocated), 0 keeps them on CPUs."""
    weight_sync: str = "object_store"
    """How rollout workers get the trainer's weights: object_store (Ray's shared memory) or
    broadcast (a torch.distributed group of the trainer and the workers; NCCL when the trainer is on
    a GPU, each worker then on a GPU of its own, gloo on CPU)."""

    def __post_init__(self):
        if self.backend not in ("torchrun", "ray"):
            raise ValueError(f"distributed.backend must be torchrun or ray, got {self.backend!r}")
        if self.strategy not in ("ddp", "fsdp"):
            raise ValueError(f"distributed.strategy must be ddp or fsdp, got {self.strategy!r}")
        if self.weight_sync not in ("object_store", "broadcast"):
            raise ValueError(f"distributed.weight_sync must be object_store or broadcast, got {self.weight_sync!r}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"distributed.gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if (
            self.ranks < 1
            or self.cpus_per_rank < 1
            or min(self.max_restarts, self.rollout_workers, self.reward_workers) < 0
        ):
            raise ValueError(
                "distributed.ranks and cpus_per_rank must be >= 1, max_restarts, rollout_workers and reward_workers >= 0"
            )

    @property
    def workers_per_rank(self) -> int:
        """Ray workers each training rank starts (rollout, reward and reference)."""
        return self.rollout_workers + self.reward_workers + int(self.reference_worker)


@dataclasses.dataclass
class TrainSection:
    epochs: float = 1.0
    """Passes over the training data (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Optimizer steps to run; 0 = derived from epochs."""
    batch_size: int = 8
    """Examples (pairs for preference losses) per optimizer step, over all ranks."""
    micro_batch_size: int = 0
    """Examples per forward pass; batch_size/micro_batch_size steps of gradient accumulation (0 = batch_size)."""
    lr: float = 1e-6
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear warmup steps."""
    scheduler: str = "linear"
    """Decay after warmup: constant, linear or cosine."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm (0 = off)."""
    seed: int = 0
    """Seed for initialization, data order and sampling."""
    shuffle: bool = True
    """Reshuffle the training data every epoch; false keeps file order."""
    log_every: int = 1
    """Write metrics every N steps."""
    eval_every: int = 0
    """Evaluate on held-out data every N steps (0 = only at the end)."""
    save_every: int = 0
    """Checkpoint every N steps (and at the end) for exact resume; 0 = no checkpoints."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep."""
    threads: int = 0
    """torch CPU threads (0 = leave torch's default)."""
    profile_step: int = 0
    """Profile this step with torch.profiler (CPU, and CUDA when present): top operators in
    profile/step_N.txt, Python stacks in profile/step_N.stacks, a Chrome trace in profile/step_N.json."""

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        micro = self.micro_batch_size or self.batch_size
        if self.batch_size % micro:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of micro_batch_size {micro}")
        if self.scheduler not in ("constant", "linear", "cosine"):
            raise ValueError(f"scheduler must be constant, linear or cosine, got {self.scheduler!r}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("set epochs > 0 or max_steps > 0")
