"""The Python API: every recipe as a function that takes what its command takes, and objects too.

    result = rlxf.dpo(model="smollm2-135m-instruct", dataset=my_dataset, beta=0.1, train={"lr": 1e-6})
    result.model, result.metrics, result.output_dir

``model`` is a name, a folder or a ``transformers`` model (give its ``tokenizer``); ``dataset`` (and
``eval_dataset``) a path, a ``datasets.Dataset`` or ``DatasetDict`` (its ``test`` split held out), or
a list of row dicts (``data=`` stays the config section, as on the command line); online recipes take ``rewards`` as callables (TRL's ``reward_funcs``
convention), ``{"kind": ...}`` dicts, or ``(callable, weight)`` pairs. Every other keyword is a
config field, sections as dicts (``train={"lr": 1e-6}``) or dotted (``"train.lr": 1e-6``), checked
as on the command line. Objects are written to a folder under the run's ``inputs/`` first.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rlxf.config import load_config
from rlxf.config.loading import build_config

# function name -> (module, config class, entry function, the config field that names the model, preset)
RECIPES: dict[str, tuple[str, str, str, str, dict[str, Any]]] = {
    "sft": ("rlxf.recipes.sft", "SFTConfig", "train_sft", "policy", {}),
    "rm": ("rlxf.recipes.reward_model", "RewardModelConfig", "train_reward_model", "model", {}),
    "cm": ("rlxf.recipes.reward_model", "CostModelConfig", "train_cost_model", "model", {}),
    "reactions": ("rlxf.recipes.reaction_model", "ReactionModelConfig", "train_reaction_model", "model", {}),
    "pm": ("rlxf.recipes.preference_model", "PreferenceModelConfig", "train_preference_model", "model", {}),
    "dpo": ("rlxf.recipes.dpo", "DPOConfig", "train_dpo", "policy", {}),
    "kto": ("rlxf.recipes.kto", "KTOConfig", "train_kto", "policy", {}),
    "online": ("rlxf.recipes.online", "OnlineConfig", "train_online", "policy", {}),
    "nash": ("rlxf.recipes.nash", "NashConfig", "train_nash", "policy", {}),
}


@dataclass
class Trained:
    """What a recipe function returns."""

    model: Any
    """The trained model, loaded from ``output_dir/model`` (LoRA merged in); None when HC-RLHF's safety
    test failed (no safe solution found: the candidate is in ``output_dir/unsafe_candidate``)."""
    metrics: dict
    """What the recipe reports: held-out evaluation, data summary, timings (as eval.json)."""
    output_dir: Path
    config: Any
    """The config the run used, every default filled in."""


def train(recipe: str, model: Any = None, dataset: Any = None, *, eval_dataset: Any = None, tokenizer: Any = None,
          rewards: Any = None, **fields: Any) -> Trained:  # fmt: skip
    """Run ``recipe`` (a key of RECIPES) with objects or paths; see the module docstring."""
    module_name, class_name, entry, model_field, preset = RECIPES[recipe]
    module = importlib.import_module(module_name)
    config_class = getattr(module, class_name)
    values = _nested({**preset, **fields})
    folder = Path(values.get("output_dir") or getattr(config_class(), "output_dir")) / "inputs"
    if model is not None:
        values.setdefault(model_field, {})["name"] = _model_path(model, tokenizer, folder)
    if dataset is not None or eval_dataset is not None:
        _place_data(values, dataset, eval_dataset, folder, online=recipe in ("online", "nash"))
    if rewards is not None:
        values["rewards"] = [_reward_section(r) for r in (rewards if isinstance(rewards, (list, tuple)) else [rewards])]
    config = build_config(config_class, values)
    metrics = getattr(module, entry)(config)
    if not metrics.get("safety_test", {}).get("passed", True):  # HC-RLHF found no safe solution: no model
        return Trained(None, metrics, Path(config.output_dir), config)
    return Trained(_load_trained(recipe, Path(config.output_dir) / "model"), metrics, Path(config.output_dir), config)


def _nested(fields: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys (``"train.lr"``) as nested sections, merged with sections given as dicts."""
    values: dict[str, Any] = {}
    for key, value in fields.items():
        *sections, name = key.split(".")
        target = values
        for section in sections:
            target = target.setdefault(section, {})
        if isinstance(value, dict) and isinstance(target.get(name), dict):
            target[name].update(value)
        else:
            target[name] = value
    return values


def _model_path(model: Any, tokenizer: Any, folder: Path) -> str:
    if isinstance(model, (str, Path)):
        return str(model)
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"model must be a name, a folder or a transformers model, not {type(model).__name__}")
    if tokenizer is None:
        raise ValueError("a model object needs its tokenizer: pass tokenizer=...")
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=_made(folder)))
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    return str(_named_by_content(staging, "model"))


def _named_by_content(staging: Path, kind: str) -> Path:
    """``staging`` renamed after a hash of its files: other weights or data give another path, so
    the run folder sees a changed config instead of silently training on something else."""
    digest = hashlib.sha256()
    for file in sorted(p for p in staging.rglob("*") if p.is_file()):
        digest.update(file.relative_to(staging).as_posix().encode())
        digest.update(file.read_bytes())
    target = staging.parent / f"{kind}-{digest.hexdigest()[:12]}"
    if target.exists():
        shutil.rmtree(staging)
    else:
        staging.rename(target)
    return target


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _place_data(values: dict, data: Any, eval_data: Any, folder: Path, *, online: bool) -> None:
    section = values.setdefault("task" if online else "data", {})
    if online:
        section.setdefault("name", "file")
    splits = _splits(data)
    if splits.get("train") is not None:
        section["path"] = _data_path(splits["train"], "train", folder)
    held = eval_data if eval_data is not None else splits.get("test")
    if held is not None:
        section["eval_path"] = _data_path(held, "eval", folder)


def _splits(data: Any) -> dict[str, Any]:
    """A DatasetDict as its train and test (or validation) splits; anything else as train."""
    if isinstance(data, dict) and "train" in data and hasattr(data["train"], "save_to_disk"):
        return {"train": data["train"], "test": data.get("test", data.get("validation"))}
    return {"train": data}


def _data_path(data: Any, kind: str, folder: Path) -> str:
    if isinstance(data, (str, Path)):
        return str(data)
    staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=_made(folder)))
    if hasattr(data, "save_to_disk"):
        data.save_to_disk(str(staging / "dataset"))
    elif isinstance(data, list) and all(isinstance(row, dict) for row in data):
        (staging / "rows.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), "utf-8")
    else:
        shutil.rmtree(staging)
        raise TypeError(
            f"data must be a path, a datasets.Dataset or DatasetDict, or a list of dicts, not {type(data).__name__}"
        )
    target = _named_by_content(staging, kind)
    return str(target / ("dataset" if (target / "dataset").is_dir() else "rows.jsonl"))


def _reward_section(reward: Any) -> dict[str, Any]:
    if callable(reward):
        return {"kind": "python", "function": reward}
    if isinstance(reward, tuple) and len(reward) == 2 and callable(reward[0]):
        return {"kind": "python", "function": reward[0], "weight": float(reward[1])}
    if isinstance(reward, dict):
        return reward
    raise TypeError(f"a reward is a callable, a (callable, weight) pair or a {{'kind': ...}} dict, not {reward!r}")


def _load_trained(recipe: str, folder: Path):
    from rlxf.models import load_causal_lm, load_reward_model

    return load_reward_model(str(folder)) if recipe in ("rm", "cm", "pm", "reactions") else load_causal_lm(str(folder))


def _recipe_function(name: str, preset: dict[str, Any] | None = None):
    recipe = name if name in RECIPES else "online"

    def run(model: Any = None, dataset: Any = None, **fields: Any) -> Trained:
        return train(recipe, model, dataset, **{**(preset or {}), **fields})

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"Train with rlxf's {name} recipe (see `rlxf {name} --help` for the fields); returns Trained."
    return run


def _nash_function(learner: str):
    def run(model: Any = None, dataset: Any = None, **fields: Any) -> Trained:
        return train("nash", model, dataset, **{"learner": learner, **fields})

    run.__name__ = run.__qualname__ = learner
    run.__doc__ = f"Train with rlxf's Nash loop, learner {learner} (see `rlxf {learner} --help`); returns Trained."
    return run


def recipe_functions() -> dict[str, Any]:
    """``sft``, ``rm``, ``dpo``, ``kto``, ``online``, and one function per online algorithm and preset."""
    from rlxf.recipes.nash_learners import LEARNERS
    from rlxf.recipes.online_algorithms import ALGORITHMS, PRESETS

    functions = {name: _recipe_function(name) for name in RECIPES}
    functions.update({name: _nash_function(name) for name in LEARNERS})
    functions.update({name: _recipe_function(name, {"algo": name}) for name in ALGORITHMS})
    for name, (overrides, _) in PRESETS.items():  # values as the command line reads them (YAML)
        preset = {key: yaml.safe_load(value) for key, value in (o.split("=", 1) for o in overrides)}
        functions[name] = _recipe_function(name, preset)
    return functions


__all__ = ["RECIPES", "Trained", "load_config", "recipe_functions", "train"]
