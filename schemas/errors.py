"""Validation errors that name the field (and, from YAML, the file and line)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    path: tuple[int | str, ...]
    message: str

    @property
    def field(self) -> str:
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.path else self.message


class InvalidResource(ValueError):
    """One object failed validation; ``errors`` says which fields and why."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class ManifestError(ValueError):
    """A manifest could not be read: names the source, line and field."""

    def __init__(self, source: str, line: int | None, message: str, field: str = "") -> None:
        self.source = source
        self.line = line
        self.field = field
        self.detail = message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")
