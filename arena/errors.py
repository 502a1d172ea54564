"""User-facing errors.

`ArenaError` is raised for anything a user can fix (bad config value, missing file, unknown
name). The CLI prints its message without a traceback and exits with code 2; every other
exception is a bug or a failed run and keeps its traceback.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class ArenaError(Exception):
    """An error caused by user input; its message says what was wrong and what is allowed."""


class ConfigError(ArenaError):
    """A config field holds a value that is not allowed."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: invalid value {value!r}; {allowed}")


class DataError(ArenaError):
    """A data file is missing or malformed."""


class TrainingFailed(Exception):
    """Training stopped on a numerical failure (NaN/inf loss or gradient); recorded as a failed run."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
