"""Errors and bad-row accounting for data readers."""

from __future__ import annotations

from dataclasses import dataclass, field


class DataError(ValueError):
    """A malformed input row: names the file, the line (or item/row) and the field."""

    def __init__(self, path: str, location: str, field: str | None, message: str):
        self.path, self.location, self.field, self.message = str(path), location, field, message
        where = f"{self.path}, {location}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")


@dataclass
class BadRows:
    """Rows skipped because the user asked to skip malformed input (``on_bad_row: skip``)."""

    errors: list[DataError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.errors)

    def summary(self, limit: int = 3) -> str:
        if not self.errors:
            return "no bad rows"
        shown = "; ".join(str(e) for e in self.errors[:limit])
        more = f" (and {len(self.errors) - limit} more)" if len(self.errors) > limit else ""
        return f"skipped {len(self.errors)} bad rows: {shown}{more}"
