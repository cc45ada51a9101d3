"""Reading the YAML files users write (task definitions, recipes, prompt templates) with one error policy:
every problem — not UTF-8, not YAML, nested past reason, unreadable — is an ``InputError`` naming the file
(and the line where YAML knows it), never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from affectllm.errors import InputError


def read_yaml(path: str | Path) -> Any:
    """The parsed content of a YAML file (``yaml.safe_load``: no arbitrary objects)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            path, f"not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            path,
            f"not valid YAML ({getattr(exc, 'problem', None) or exc})",
            line=mark.line + 1 if mark else None,
        ) from None
    except RecursionError:
        raise InputError(path, "YAML nested too deeply to read") from None
