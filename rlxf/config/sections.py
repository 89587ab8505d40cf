"""The config sections the recipes share: model, reference, data, training and how ranks start.
Each checks its values when built and when a field is set later (`Checked`)."""

from __future__ import annotations

import dataclasses
import math

from rlxf.config.checked import Checked


@dataclasses.dataclass
class LoraSection(Checked):
    rank: int = 0
    """LoRA rank; 0 trains all weights."""
    alpha: float = 16.0
    """LoRA scaling numerator (effective scale alpha/rank)."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: str = "all-linear"
    """Which linear layers get adapters (peft syntax)."""

    def check(self):
        if self.rank < 0:
            raise ValueError("lora.rank must be >= 0")


@dataclasses.dataclass
class ModelSection(Checked):
    name: str = "smollm2-135m-instruct"
    """Embedded name (smollm2-135m-instruct, minilm-l6-v2), a random-weight model built from code
    (tiny-llama, random-smollm2-135m), a local HF folder, or a hub id."""
    dtype: str = "float32"
    """float32 (best for CPU training), bfloat16 or float16."""
    lora: LoraSection = dataclasses.field(default_factory=LoraSection)
    """LoRA adapters instead of a full fine-tune."""

    def check(self):
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


@dataclasses.dataclass
class ReferenceSection(Checked):
    name: str = ""
    """Reference model of the KL anchor or log-ratio; empty = the initial policy."""


@dataclasses.dataclass
class DataSection(Checked):
    path: str = ""
    """Training data: a jsonl, json, csv, parquet or arrow file, or a folder saved by HF datasets' save_to_disk
    (a DatasetDict gives its train split)."""
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
    max_prompt_length: int = 0
    """A too-long prompt keeps its last N tokens before any completion is cut; 0 = half of max_length."""
    truncation: str = "cut"
    """cut: shorten too-long rows and report counts; error: stop at the first such row."""

    def check(self):
        if self.on_bad_row not in ("error", "skip"):
            raise ValueError(f"on_bad_row must be error or skip, got {self.on_bad_row!r}")
        formats = ("auto", "trl", "hh", "autoj", "webgpt", "unpaired")
        if self.format not in formats:
            raise ValueError(f"format must be one of {', '.join(formats)}, got {self.format!r}")
        if self.truncation not in ("cut", "error"):
            raise ValueError(f"truncation must be cut or error, got {self.truncation!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("eval_fraction must be in [0, 1)")
        if self.max_length < 2:
            raise ValueError(f"data.max_length must be >= 2 tokens, got {self.max_length}")
        if self.max_prompt_length < 0 or self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"data.max_prompt_length ({self.max_prompt_length}) must be below data.max_length ({self.max_length}); "
                "leave it at 0 for half of max_length"
            )

    @property
    def prompt_limit(self) -> int:
        """The prompt's token budget: max_prompt_length, or half of max_length when that is 0."""
        return self.max_prompt_length or self.max_length // 2


@dataclasses.dataclass
class DistributedSection(Checked):
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

    def check(self):
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
class TrainSection(Checked):
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
    resume: str = "auto"
    """When output_dir holds a run: auto (continue it when its config is the same, else stop and
    list what differs), never (start fresh in a new subfolder run-N) or force (continue it anyway)."""
    resume_from: str = ""
    """A checkpoint folder (checkpoints/checkpoint-N of any run) to start from instead of output_dir's latest."""
    threads: int = 0
    """torch CPU threads (0 = leave torch's default)."""
    profile_step: int = 0
    """Profile this step with torch.profiler (CPU, and CUDA when present): top operators in
    profile/step_N.txt, Python stacks in profile/step_N.stacks, a Chrome trace in profile/step_N.json."""

    def check(self):
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        micro = self.micro_batch_size or self.batch_size
        if self.batch_size % micro:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of micro_batch_size {micro}")
        if self.scheduler not in ("constant", "linear", "cosine"):
            raise ValueError(f"scheduler must be constant, linear or cosine, got {self.scheduler!r}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("set epochs > 0 or max_steps > 0")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"train.lr must be a positive number, got {self.lr}")
        negative = [n for n in ("max_steps", "epochs", "warmup_steps", "weight_decay", "max_grad_norm",
                                "save_every", "eval_every", "threads", "micro_batch_size", "profile_step")
                    if getattr(self, n) < 0]  # fmt: skip
        if negative:
            raise ValueError(f"train.{negative[0]} must be >= 0, got {getattr(self, negative[0])}")
        if self.resume not in ("auto", "never", "force"):
            raise ValueError(f"train.resume must be auto, never or force, got {self.resume!r}")
        if self.log_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("train.log_every and train.keep_checkpoints must be >= 1")
