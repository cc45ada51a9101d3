"""Resumable, crash-safe JSONL output for batch jobs (predict, eval run, batch textualize).

Each finished item is appended as one JSON line and flushed to disk at once, so an interruption loses at most
the item in flight. On restart, ids already written (successes *and* recorded failures, unless asked to retry
failures) are skipped. A truncated last line from a crash is ignored and rewritten.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from affectllm.errors import InputError


class ResumableJSONL:
    """Append-only JSONL keyed by an id field. Records with an ``"error"`` key are failures."""

    def __init__(self, path: str | Path, id_key: str = "id", retry_failed: bool = True) -> None:
        self.path = Path(path)
        self.id_key = id_key
        self.retry_failed = retry_failed
        self.done: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        good_lines: list[str] = []
        damaged = False
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    # Only a crash mid-write produces this; the item will simply be redone.
                    damaged = True
                    continue
                key = str(record.get(self.id_key))
                if "error" in record:
                    self.failed[key] = record
                else:
                    self.done[key] = record
                    self.failed.pop(key, None)
                good_lines.append(line if line.endswith("\n") else line + "\n")
        if damaged:
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text("".join(good_lines), encoding="utf-8")
            os.replace(tmp, self.path)

    def should_skip(self, item_id: str) -> bool:
        item_id = str(item_id)
        if item_id in self.done:
            return True
        return item_id in self.failed and not self.retry_failed

    def pending(self, ids: list[str]) -> list[str]:
        return [i for i in ids if not self.should_skip(i)]

    def write(self, record: dict[str, Any]) -> None:
        if self.id_key not in record:
            raise KeyError(f"record has no {self.id_key!r} field")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        key = str(record[self.id_key])
        if "error" in record:
            self.failed[key] = record
        else:
            self.done[key] = record
            self.failed.pop(key, None)

    def write_error(self, item_id: str, exc: BaseException, **extra: Any) -> None:
        """Record a per-item failure (message and the last traceback frame) and keep the batch going."""
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None
        self.write({self.id_key: item_id, "error": f"{type(exc).__name__}: {exc}", "where": where, **extra})

    def records(self) -> Iterator[dict[str, Any]]:
        """The latest successful record per id (failures that later succeeded are superseded)."""
        yield from self.done.values()


def iter_jsonl_objects(
    path: str | Path, lines: Iterable[str] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSONL file (or of ``lines`` read from it).

    Malformed JSON or a line that is not an object raises ``InputError`` naming the file and line.
    """
    path = Path(path)
    if lines is None:
        with path.open(encoding="utf-8") as fh:
            yield from iter_jsonl_objects(path, fh)
        return
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON ({exc.msg})", line=lineno) from None
        if not isinstance(row, dict):
            raise InputError(path, "each line must be a JSON object", line=lineno)
        yield lineno, row


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file of objects, naming the file and line on malformed input."""
    return [row for _, row in iter_jsonl_objects(path)]


def read_manifest(
    path: str | Path,
    row_id: Callable[[dict[str, Any], int], str] | None = None,
    limit: int | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """``(id, row)`` for each line of a JSONL manifest, in file order (blank lines skipped).

    Every line must be a JSON object with a unique id; ``row_id(row, lineno)`` derives the id (default: the
    row's non-empty ``"id"``) and may raise :class:`InputError` itself. Bad input raises ``InputError`` naming
    the file and line, so a batch stops before doing any work rather than half-way through.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found")

    def default_id(row: dict[str, Any], lineno: int) -> str:
        if row.get("id") in (None, ""):
            raise InputError(path, 'row has no "id"', line=lineno)
        return str(row["id"])

    get_id = row_id or default_id
    rows: list[tuple[str, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    try:
        for lineno, row in iter_jsonl_objects(path):
            item_id = get_id(row, lineno)
            if item_id in seen:
                raise InputError(
                    path, f"duplicate id {item_id!r} (first on line {seen[item_id]})", line=lineno
                )
            seen[item_id] = lineno
            rows.append((item_id, row))
            if limit is not None and len(rows) >= limit:
                break
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read manifest ({exc})") from None
    return rows
