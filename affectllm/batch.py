"""Resumable, crash-safe JSONL output for batch jobs (predict, eval run, batch textualize).

Each finished item is appended as one JSON line and flushed to disk at once, so an interruption loses at most
the item in flight. On restart, ids already written (successes *and* recorded failures, unless asked to retry
failures) are skipped. A torn last line from a crash (cut anywhere, even inside a UTF-8 character) is
dropped and the item redone; any other line the writer did not write (not a JSON object, no id) makes the
writer refuse the file rather than rewrite it, since that file is someone's data. :meth:`compact` leaves one
row per id (the latest success, else the latest failure). The path itself is checked by
:func:`affectllm.outputs.check_output` (not an input of the run, a regular file, writable).
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from affectllm.errors import InputError
from affectllm.outputs import atomic_write_text, check_output, ensure_parent, os_problem

try:  # POSIX: serialise appends and compaction between processes writing one file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class ResumableJSONL:
    """Append-only JSONL keyed by an id field. Records with an ``"error"`` key are failures.

    ``inputs``: files the same run reads, refused as the output. ``overwrite``: start afresh, replacing
    whatever the file holds (the user asked for it), instead of resuming.
    """

    def __init__(
        self,
        path: str | Path,
        id_key: str = "id",
        retry_failed: bool = True,
        inputs: Iterable[str | Path | None] = (),
        overwrite: bool = False,
    ) -> None:
        self.path = check_output(path, inputs, option="output")
        self.id_key = id_key
        self.retry_failed = retry_failed
        self.done: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, dict[str, Any]] = {}
        self._truncate_first = overwrite and self.path.exists()
        if not self._truncate_first:
            self._load()

    # ------------------------------------------------------------------------------------------- reading

    def _parse(self, raw: bytes) -> dict[str, Any] | None:
        """The record on one line, or None when it is not one this writer would have written."""
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        if not isinstance(record, dict):
            return None
        key = record.get(self.id_key)
        if isinstance(key, bool) or not isinstance(key, (str, int)) or key == "":
            return None  # the writer's ids are strings (or numbers from a manifest), never lists or objects
        return record

    def _foreign(self, lineno: int) -> InputError:
        return InputError(
            self.path,
            f"holds a line this writer did not write (expected a JSON object with an {self.id_key!r} key); "
            "refusing to resume into it — pass --overwrite to replace the file, or choose another output path "
            "(a predictions file from affectllm < 0.2, keyed by 'name', converts with "
            "`python -m affectllm.records upgrade FILE`)",
            line=lineno,
        )

    def _read_records(self, data: bytes, repair: bool) -> tuple[list[dict[str, Any]], int | None]:
        """Records of ``data`` in file order and, when the last line is a torn record, where it starts."""
        records: list[dict[str, Any]] = []
        lines = data.split(b"\n")
        tail = lines.pop()  # what follows the last newline: b"" for a complete file
        for lineno, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            record = self._parse(raw)
            if record is None:
                raise self._foreign(lineno)
            records.append(record)
        if not tail.strip():
            return records, None
        record = self._parse(tail)
        if record is not None:
            records.append(record)
            return records, None
        # The writer puts a record and its newline in one write: a crash leaves a line that starts like a
        # record and has no newline. Anything else at the end is someone's text, not a torn record.
        if repair and tail.lstrip().startswith(b'{"'):
            return records, len(data) - len(tail)
        raise self._foreign(len(lines) + 1)

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise InputError(self.path, f"cannot read the output to resume it: {os_problem(exc)}") from None
        records, torn_at = self._read_records(data, repair=True)
        for record in records:
            self._remember(record)
        self._lines = len(records)
        self._needs_newline = torn_at is None and bool(data) and not data.endswith(b"\n")
        if torn_at is not None:
            # Only a crash mid-write produces this; the item will simply be redone.
            try:
                os.truncate(self.path, torn_at)
            except OSError as exc:
                raise InputError(self.path, f"cannot repair a torn last line: {os_problem(exc)}") from None

    _lines = 0
    _needs_newline = False

    def _remember(self, record: dict[str, Any]) -> None:
        key = str(record[self.id_key])
        if "error" in record:
            if key not in self.done:
                self.failed[key] = record
        else:
            self.done[key] = record
            self.failed.pop(key, None)

    def should_skip(self, item_id: str) -> bool:
        item_id = str(item_id)
        if item_id in self.done:
            return True
        return item_id in self.failed and not self.retry_failed

    def pending(self, ids: list[str]) -> list[str]:
        return [i for i in ids if not self.should_skip(i)]

    # ------------------------------------------------------------------------------------------- writing

    def _open_locked(self, flags: int) -> int:
        """An fd on the current file at ``self.path``, exclusively locked (re-opened if compaction replaced
        the file while this process waited for the lock)."""
        while True:
            fd = os.open(self.path, flags, 0o666)
            if fcntl is None:
                return fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def write(self, record: dict[str, Any]) -> None:
        if self.id_key not in record:
            raise KeyError(f"record has no {self.id_key!r} field")
        line = json.dumps(record, ensure_ascii=False) + "\n"
        if self._needs_newline:
            line = "\n" + line
        ensure_parent(self.path)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if self._truncate_first else os.O_APPEND)
        try:
            fd = self._open_locked(flags)
            try:
                data = memoryview(line.encode("utf-8"))
                while data:  # a nearly full disk takes part of a write; the rest then raises ENOSPC
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise InputError(self.path, f"cannot write: {os_problem(exc)}") from None
        self._truncate_first = self._needs_newline = False
        self._lines += 1
        self._remember(record)

    def write_error(self, item_id: str, exc: BaseException, **extra: Any) -> None:
        """Record a per-item failure (message and the last traceback frame) and keep the batch going."""
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None
        self.write({self.id_key: item_id, "error": f"{type(exc).__name__}: {exc}", "where": where, **extra})

    def records(self) -> Iterator[dict[str, Any]]:
        """The latest successful record per id (failures that later succeeded are superseded)."""
        yield from self.done.values()

    def compact(self, order: Iterable[str] | None = None) -> None:
        """Rewrite the file (atomically) at one row per id: the latest success, else the latest failure.

        Rows follow ``order`` (ids not in it keep their first position, after those in it). The file is
        re-read under the lock first, so rows a concurrent run appended are kept, not lost.
        """
        if not self.path.exists():
            return
        try:
            fd = self._open_locked(os.O_RDONLY)
        except OSError as exc:
            raise InputError(self.path, f"cannot read: {os_problem(exc)}") from None
        try:
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read()
            try:
                records, _ = self._read_records(data, repair=False)
            except InputError:
                return  # something else wrote into the file meanwhile: leave it exactly as it is
            latest: dict[str, dict[str, Any]] = {}
            for record in records:
                key = str(record[self.id_key])
                if "error" in record and key in latest and "error" not in latest[key]:
                    continue  # a success is never replaced by a later failure
                latest[key] = record
            keys = list(latest)
            if order is not None:
                rank = {str(k): i for i, k in enumerate(order)}
                keys.sort(key=lambda k: rank.get(k, len(rank)))
            if len(keys) == len(records) and keys == [str(r[self.id_key]) for r in records]:
                return  # already one row per id, in order
            text = "".join(json.dumps(latest[k], ensure_ascii=False) + "\n" for k in keys)
            atomic_write_text(self.path, text)
        finally:
            os.close(fd)
        self._lines = len(keys)
        self.done, self.failed = {}, {}
        for key in keys:
            self._remember(latest[key])


def iter_jsonl_objects(
    path: str | Path, lines: Iterable[str] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSONL file (or of ``lines`` read from it).

    Malformed JSON or a line that is not an object raises ``InputError`` naming the file and line.
    """
    path = Path(path)
    if lines is None:
        if not path.is_file():
            raise InputError(path, "not found" if not path.exists() else "not a regular file")
        try:
            with path.open(encoding="utf-8-sig") as fh:
                yield from iter_jsonl_objects(path, fh)
        except UnicodeDecodeError as exc:
            raise InputError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise InputError(path, f"cannot read: {os_problem(exc)}") from None
        return
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.lstrip("\ufeff") if lineno == 1 else line)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON ({exc.msg})", line=lineno) from None
        except RecursionError:
            raise InputError(path, "JSON nested too deeply", line=lineno) from None
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
