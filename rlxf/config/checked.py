"""Config sections that check themselves when built and again whenever a field is set later."""

from __future__ import annotations

_UNSET = object()


class Checked:
    """A dataclass whose ``check()`` runs after construction and after every later assignment, so
    ``config.train.lr = -1`` fails on the line that writes it (the old value is kept)."""

    def check(self) -> None:
        """Raise ValueError naming the field when the values do not fit."""

    def __post_init__(self):
        self.check()
        object.__setattr__(self, "_checked", True)

    def __setattr__(self, name: str, value) -> None:
        if not self.__dict__.get("_checked") or self.__dict__.get("_checking"):
            object.__setattr__(self, name, value)
            return
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
