"""Field access on one row of a data file: every failure is a DataError naming the file, the
line and the field."""

from __future__ import annotations

import math
from typing import Any

from rlxf.data.errors import DataError
from rlxf.data.readers import Row
from rlxf.data.records import Message

ROLES = {"system", "user", "assistant", "tool"}


class Cell:
    """Field access on one row that raises DataError naming file, line and field."""

    def __init__(self, path: str, location: str, row: Row):
        self.path, self.location, self.row = path, location, row

    def error(self, field: str | None, message: str) -> DataError:
        return DataError(self.path, self.location, field, message)

    @property
    def source(self) -> str:
        return f"{self.path}, {self.location}"

    def require(self, field: str) -> Any:
        if field not in self.row or self.row[field] is None:
            raise self.error(field, f"missing (row has {sorted(self.row)})")
        return self.row[field]

    def text(self, field: str) -> str:
        value = self.require(field)
        if not isinstance(value, str):
            raise self.error(field, f"expected a string, got {type(value).__name__}")
        return value

    def prompt(self, field: str) -> list[Message]:
        """A prompt: a non-empty string, or messages ending with a user (or tool) turn."""
        messages = self.messages(field)
        if messages[-1]["role"] not in ("user", "tool"):
            raise self.error(field, f"expected the prompt to end with a user turn, not {messages[-1]['role']!r}")
        if not any(m["content"].strip() for m in messages):
            raise self.error(field, "empty prompt")
        return messages

    def messages(self, field: str, value: Any = None) -> list[Message]:
        value = self.require(field) if value is None else value
        if isinstance(value, str):
            return [{"role": "user", "content": value}]
        if not isinstance(value, list) or not value:
            raise self.error(field, "expected a string or a non-empty list of {role, content} messages")
        for index, message in enumerate(value):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise self.error(f"{field}[{index}]", f"expected a message with role in {sorted(ROLES)}")
            if not isinstance(message.get("content"), str):
                raise self.error(f"{field}[{index}].content", "expected a string")
        return [{"role": m["role"], "content": m["content"]} for m in value]

    def completion(self, field: str) -> str:
        """A completion given as a string or as a one-message assistant list."""
        value = self.require(field)
        if isinstance(value, str):
            return value
        messages = self.messages(field, value)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise self.error(field, "expected a string or a list holding one assistant message")
        return messages[0]["content"]

    def number(self, field: str, default: float | None = None) -> float | None:
        """An optional finite number (missing or empty gives ``default``)."""
        value = self.row.get(field, default)
        if value is None or value == "":
            return default
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise self.error(field, f"expected a number, got {str(value)[:50]!r}") from None
        if not math.isfinite(number):
            raise self.error(field, f"expected a finite number, got {value!r}")
        return number

    def required_number(self, field: str) -> float:
        self.require(field)
        value = self.number(field)
        if value is None:
            raise self.error(field, "missing (empty)")
        return value

    def weight(self) -> float:
        """The optional per-example ``weight``: a positive number, 1 when missing."""
        value = self.number("weight", 1.0)
        if value <= 0:
            raise self.error("weight", f"expected a positive number, got {value!r}")
        return value

    def optional_flag(self, field: str) -> bool | None:
        """true/false, or None when the column is missing or null (no label)."""
        return None if self.row.get(field) is None else self.flag(field)

    def flag(self, field: str) -> bool:
        value = self.row.get(field, False)
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in {"", "0", "1", "true", "false"}:
                raise self.error(field, f"expected true/false, got {value!r}")
            return value in {"1", "true"}
        if value not in (None, True, False, 0, 1):
            raise self.error(field, f"expected true/false, got {value!r}")
        return bool(value)
