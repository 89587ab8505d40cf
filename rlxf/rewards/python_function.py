"""A reward written as a Python function, called as TRL calls its ``reward_funcs``: so a function
written for TRL's GRPOTrainer works here unchanged.

``fn(prompts=..., completions=..., **columns) -> list[float | None]``: one value per completion;
the prompts and completions are strings for a dataset of plain-text prompts, and message lists
(``[{"role": "assistant", "content": ...}]`` for a completion) for a conversational one; every
other column of the prompt file arrives as a keyword argument holding one value per completion
(a null as None), and ``completion_ids`` holds each completion's token ids (TRL's
``trainer_state`` is not passed).
``None`` means "no opinion": the sample gets 0 from this source, is left out of its
normalization, and is counted in ``reward/<name>/no_opinion``. An ``async def`` function is
awaited. In a config: ``rewards=[{kind: python, function: "my_module:my_fn"}]`` or
``"path/to/file.py:my_fn"``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import importlib.util
import inspect
import math
import numbers
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rlxf.rewards.base import RewardBatch


class RewardFunctionError(ValueError):
    """A user's reward function could not be found, failed, or returned something unusable."""


def load_function(reference: str) -> Callable:
    """The callable named by ``module:function`` or ``path/to/file.py:function``."""
    location, _, attribute = reference.rpartition(":")
    if not location or not attribute:
        raise RewardFunctionError(f"reward function {reference!r}: expected 'module:function' or 'file.py:function'")
    module = _load_file(location) if location.endswith(".py") else _import(location)
    function = getattr(module, attribute, None)
    if function is None:
        raise RewardFunctionError(f"reward function {reference!r}: {location} has no {attribute!r}")
    if not callable(function):
        raise RewardFunctionError(f"reward function {reference!r}: {attribute!r} is a {type(function).__name__}")
    return function


def _load_file(location: str):
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        raise RewardFunctionError(f"reward function file {location} does not exist")
    name = f"rlxf_reward_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise RewardFunctionError(f"reward function file {location} failed to load: {type(error).__name__}: {error}")
    return module


def _import(location: str):
    """The module, also from the working directory (where a user's reward file usually sits)."""
    try:
        return importlib.import_module(location)
    except ModuleNotFoundError as error:
        if error.name != location.split(".")[0] or os.getcwd() in sys.path:
            raise RewardFunctionError(f"reward function module {location}: {error}") from None
    sys.path.append(os.getcwd())  # last: a local file must not shadow an installed package
    try:
        return importlib.import_module(location)
    except ModuleNotFoundError as error:
        raise RewardFunctionError(f"reward function module {location}: {error}") from None


TRL_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state")
"""What TRL passes besides the dataset's columns (rlxf passes all but trainer_state)."""


def required_columns(function: Callable) -> tuple[str, ...]:
    """The columns ``function`` cannot do without: its parameters with no default, TRL's own aside."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return ()
    plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in parameters if p.kind in plain and p.default is p.empty and p.name not in TRL_ARGUMENTS)


def function_name(function: Callable) -> str:
    return getattr(function, "__name__", type(function).__name__)


@dataclass
class PythonReward:
    """A user's function as a reward source (see the module docstring for the convention)."""

    function: Callable
    name: str = ""

    def __post_init__(self):
        self.name = self.name or function_name(self.function)

    def score(self, prompts, completions: Sequence[str], **context) -> RewardBatch:
        conversational = context.pop("conversational", None) or [False] * len(completions)
        shaped_prompts = [p if c else _text(p) for p, c in zip(prompts, conversational)]
        shaped = [[{"role": "assistant", "content": t}] if c else t for t, c in zip(completions, conversational)]
        values = self._call(shaped_prompts, shaped, context)
        raw = [math.nan if v is None else float(v) for v in values]
        opinions = torch.tensor([v is not None for v in values])
        rewards = torch.tensor([0.0 if v is None else float(v) for v in values], dtype=torch.float32)
        flags = {f"reward/{self.name}/no_opinion": float((~opinions).float().mean())}  # every rank logs the same keys
        details = [{"value": v} for v in values]
        return RewardBatch(rewards, {self.name: torch.tensor(raw)}, details, flags=flags, opinions=opinions)

    def _call(self, prompts: list, completions: list, columns: dict) -> list:
        try:
            values = _run(self.function, prompts, completions, columns)
        except Exception as error:  # the user's code: say which row, then let it stop the run
            row = self._failing_row(prompts, completions, columns)
            where = f" at row {row} (completion {str(completions[row])[:60]!r})" if row is not None else ""
            raise RewardFunctionError(
                f"reward function {self.name} raised {type(error).__name__}{where}: {error}"
            ) from error
        return self._checked(values, len(completions))

    def _failing_row(self, prompts, completions, columns) -> int | None:
        """The first row that fails alone, found by calling the function one row at a time."""
        for row in range(len(completions)):
            one = {key: [values[row]] for key, values in columns.items()}
            try:
                _run(self.function, [prompts[row]], [completions[row]], one)
            except Exception:
                return row
        return None

    def _checked(self, values, count: int) -> list:
        if not isinstance(values, (list, tuple)) and not (hasattr(values, "tolist") and hasattr(values, "__len__")):
            raise RewardFunctionError(f"reward function {self.name} returned a {type(values).__name__}, not a list")
        values = values.tolist() if hasattr(values, "tolist") else list(values)
        if len(values) != count:
            raise RewardFunctionError(
                f"reward function {self.name} returned {len(values)} values for {count} completions"
            )
        for row, value in enumerate(values):
            if value is not None and not (isinstance(value, numbers.Real) and math.isfinite(value)):
                raise RewardFunctionError(
                    f"reward function {self.name} returned {value!r} at row {row}; expected a finite number or None"
                )
        return values


def _run(function: Callable, prompts, completions, columns: dict):
    result = function(prompts=prompts, completions=completions, **columns)
    return _resolved(result) if inspect.isawaitable(result) else result


def _resolved(awaitable):
    """An async function's result, also where an event loop already runs (a notebook): then in a
    thread of its own, since that loop cannot be re-entered."""

    async def wait():
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wait()).result()


def _text(messages: list[dict]) -> str:
    """A plain-text prompt as TRL's standard format has it: the user's message (a system prompt
    added by task.system_prompt is not part of the prompt string)."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), messages[-1]["content"])
