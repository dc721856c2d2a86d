"""Validation errors: what is wrong, where (file:line), and what would be valid."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Location:
    """Where something was written: a YAML file and line (here, not in yaml_source, so that
    unpickling a cached model needs no YAML parser)."""
    file: str
    line: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"



@dataclass(frozen=True)
class ModelError:
    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class ValidationFailed(Exception):
    """Raised with every error found in a project, not just the first."""

    def __init__(self, errors: list[ModelError]):
        self.errors = sorted(errors, key=lambda e: (e.location.file, e.location.line))
        count = len(self.errors)
        header = f"{count} error{'s' if count != 1 else ''} in the semantic model:"
        super().__init__("\n".join([header] + [f"  {e}" for e in self.errors]))


def did_you_mean(name: str, candidates: Iterable[str], what: str = "valid") -> str:
    """' ; did you mean 'x'?' or a short list of valid names."""
    candidates = sorted(set(candidates))
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    if not candidates:
        return ""
    shown = ", ".join(candidates[:12]) + (", ..." if len(candidates) > 12 else "")
    return f"; {what}: {shown}"


def first_line(message: str) -> str:
    """An engine message's first line (DuckDB adds the SQL and a caret, psycopg hints)."""
    return message.strip().splitlines()[0] if message.strip() else message
