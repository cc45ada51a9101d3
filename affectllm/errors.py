"""Errors that reach users: each names the file (and line, where there is one) and the problem."""

from __future__ import annotations

import math
from pathlib import Path

# Longest time stamp accepted from a sidecar (AU CSV, captions, transcript): a day. Anything later, like
# negative, NaN or infinite times, is a corrupt file, not a clip.
MAX_TIME_S = 24 * 3600.0


class InputError(ValueError):
    """Bad user input: a missing, corrupt or malformed file, or an invalid option value.

    The CLI prints these without a traceback; batch jobs record them per item and carry on.
    """

    def __init__(self, path: str | Path | None, problem: str, line: int | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.line = line
        where = "" if path is None else (f"{path}:{line}: " if line is not None else f"{path}: ")
        super().__init__(f"{where}{problem}")


def check_number(
    value: float,
    what: str,
    low: float,
    high: float,
    path: str | Path | None = None,
    line: int | None = None,
) -> float:
    """``value`` as a float when it is finite and within ``[low, high]``, else InputError naming the file,
    the line and what the number is (NaN fails every comparison, so finiteness is tested first)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(path, f"{what} is {value!r}, not a number", line=line) from None
    if not math.isfinite(number) or not low <= number <= high:
        raise InputError(
            path, f"{what} is {value!r}; expected a finite number in [{low:g}, {high:g}]", line=line
        )
    return number


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the '{package}' package: pip install 'affectllm[{extra}]'")


def require(module: str, extra: str, purpose: str):
    """Import an optional module or raise MissingExtraError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module.split(".")[0], extra, purpose) from exc
