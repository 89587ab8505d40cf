"""Config sections that check themselves when built and again whenever a field is set later."""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import typing

from rlxf.config.suggestions import suggestion

_UNSET = object()
_SKIP_CHECKS = contextvars.ContextVar("skip_checks", default=False)
_PLAIN = {float: (int, float), int: (int,), bool: (bool,), str: (str,)}
_KIND = {float: "a number", int: "an integer", bool: "true or false", str: "text"}


class Checked:
    """A dataclass whose ``check()`` runs after construction and after every later assignment, so
    ``config.train.lr = -1`` fails on the line that writes it (the old value is kept). A field of a
    plain type (number, integer, bool, text) must hold that type, and a name that is no field
    cannot be set."""

    def check(self) -> None:
        """Raise ValueError naming the field when the values do not fit."""

    def __post_init__(self):
        for name in _plain_fields(type(self)):
            _check_type(self, name, getattr(self, name))
        if not _SKIP_CHECKS.get():
            self.check()
        object.__setattr__(self, "_checked", True)

    def __setattr__(self, name: str, value) -> None:
        if not self.__dict__.get("_checked") or self.__dict__.get("_checking"):
            object.__setattr__(self, name, value)
            return
        if name not in {f.name for f in dataclasses.fields(self)} and not name.startswith("_"):
            hint = suggestion(name, type(self))
            raise AttributeError(f"{type(self).__name__} has no field {name!r}" + (f"; {hint}" if hint else ""))
        if name in _plain_fields(type(self)):
            _check_type(self, name, value)
        old = self.__dict__.get(name, _UNSET)
        object.__setattr__(self, name, value)
        object.__setattr__(self, "_checking", True)
        try:
            self.check()
        except (TypeError, ValueError) as error:
            if old is _UNSET:
                object.__delattr__(self, name)
            else:
                object.__setattr__(self, name, old)
            raise ValueError(f"{type(self).__name__}.{name} = {value!r}: {error}") from None
        finally:
            object.__setattr__(self, "_checking", False)


@functools.lru_cache(maxsize=None)
def _plain_fields(cls: type) -> dict[str, type]:
    """The fields of ``cls`` annotated with a plain type, by name."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if hints.get(f.name) in _PLAIN}


def _check_type(section: Checked, name: str, value) -> None:
    kind = _plain_fields(type(section))[name]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, _PLAIN[kind]):
        raise ValueError(f"{type(section).__name__}.{name} must be {_KIND[kind]}, got {value!r}")


def defaults_of(cls: type):
    """``cls()`` without its checks: the defaults to show in --help, where a required field (a run
    folder, a reward model) is still empty."""
    token = _SKIP_CHECKS.set(True)
    try:
        return cls()
    finally:
        _SKIP_CHECKS.reset(token)
