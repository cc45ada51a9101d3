"""Resumable batch prediction over a manifest: the library side of ``affectllm predict``.

Each manifest line names one clip (``{"id", "media"?, "transcript"?, "au_csv"?, "captions"?, "speaker"?,
"context"?, "question"?}``, paths relative to the manifest) or carries extracted evidence (``affectllm
textualize --json`` output). Clips are built by :func:`affectllm.clips.clip_from_row` and answered by an
:class:`~affectllm.reasoner.EmotionReasoner`; each result is one prediction record
(:mod:`affectllm.records`), appended and flushed per clip, so an interrupted run loses nothing finished and a
rerun skips finished clips and retries failed ones. A clip that fails is recorded and the batch goes on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affectllm.clips import MEDIA_KEYS, TRANSCRIPT_FILE_RE, clip_from_row, row_id
from affectllm.errors import InputError
from affectllm.records import prediction_record
from affectllm.schema import Clip, Prediction
from affectllm.settings import ClipSettings

PATH_KEYS = (*MEDIA_KEYS, "au_csv", "captions", "transcript_file")


@dataclass
class PredictSummary:
    """What a ``predict`` call did."""

    total: int
    predicted: int
    failed: int
    skipped: int
    seconds: float
    out: Path


def read_manifest(path: str | Path, limit: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Manifest rows with their ids, paths made absolute relative to the manifest's folder."""
    from affectllm.batch import read_manifest as read_rows

    path = Path(path)

    def identify(row: dict[str, Any], lineno: int) -> str:
        try:
            return row_id(row)
        except InputError as exc:
            raise InputError(path, exc.problem, line=lineno) from None

    rows = read_rows(path, row_id=identify, limit=limit)
    for _, row in rows:
        transcript = row.get("transcript")
        # "transcript" naming a file (a path, not words) is a path like the others: relative to the manifest.
        if isinstance(transcript, str) and TRANSCRIPT_FILE_RE.match(transcript.strip()):
            row["transcript_file"] = row.pop("transcript").strip()
        for key in PATH_KEYS:
            value = row.get(key)
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                row[key] = str((path.parent / value).resolve())
    return rows


def predict(
    manifest: str | Path,
    out: str | Path,
    reasoner: Any,
    clip_settings: ClipSettings | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    retry_failed: bool = True,
    include_raw: bool = True,
    overwrite: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> PredictSummary:
    """Predict every clip of ``manifest`` into the JSONL ``out`` (resumable; see the module docstring).

    ``reasoner`` is an ``EmotionReasoner``, or a function returning one, called only when a clip is pending.

    ``overwrite`` starts ``out`` afresh instead of resuming it (the only way to replace a file that holds
    lines this writer did not write)."""

    from affectllm.batch import ResumableJSONL

    if batch_size < 1:
        raise InputError(None, "batch_size must be at least 1")
    if limit is not None and limit < 1:
        raise InputError(None, "limit must be at least 1")
    settings = clip_settings or ClipSettings()
    rows = read_manifest(manifest, limit)
    # The manifest and every file its rows name are inputs: writing over one of them is refused.
    inputs = [manifest, *(row.get(k) for _, row in rows for k in PATH_KEYS if isinstance(row.get(k), str))]
    writer = ResumableJSONL(out, id_key="id", retry_failed=retry_failed, inputs=inputs, overwrite=overwrite)
    pending = [(i, r) for i, r in rows if not writer.should_skip(i)]
    started = time.perf_counter()
    if not pending:
        writer.compact([i for i, _ in rows])
        if log is not None:
            log(f"all {len(rows)} clips already in {out}")
        return PredictSummary(len(rows), 0, 0, len(rows), 0.0, Path(out))
    if callable(reasoner) and not hasattr(reasoner, "predict_batch"):
        reasoner = reasoner()  # a model is loaded only when some clip is left to predict
    items = [
        (i, lambda row=row, i=i: clip_from_row({**row, "id": i}, settings), row.get("question"))
        for i, row in pending
    ]
    failed = answer_into(
        writer,
        reasoner,
        items,
        batch_size,
        lambda item_id, pred, clip, _: prediction_record(item_id, pred, clip, include_raw=include_raw),
        lambda _: {"emotions": []},
        progress=progress,
    )
    writer.compact([i for i, _ in rows])
    summary = PredictSummary(
        total=len(rows),
        predicted=len(pending) - failed,
        failed=failed,
        skipped=len(rows) - len(pending),
        seconds=time.perf_counter() - started,
        out=Path(out),
    )
    if log is not None:
        log(
            f"{summary.predicted} predicted, {summary.failed} failed, {summary.skipped} already done "
            f"({summary.seconds:.1f} s) -> {out}"
        )
    return summary


def answer_into(
    writer: Any,
    reasoner: Any,
    items: list[tuple[str, Callable[[], Clip], str | None]],
    batch_size: int,
    record: Callable[[str, Prediction, Clip, float], dict[str, Any]],
    error_fields: Callable[[str], dict[str, Any]] = lambda _: {},
    desc: str = "predict",
    progress: bool = False,
) -> int:
    """Answer ``items`` (id, a function building its clip, question) ``batch_size`` at a time into the
    ``ResumableJSONL`` ``writer``: ``record(id, prediction, clip, seconds per clip)`` for an answered item, an
    error line (its ``stage``, ``textualize`` or ``predict``, and ``error_fields(id)``) for a failed one, so
    one bad clip never stops the rest. ``predict`` and ``eval run`` both write through here. Returns how many
    failed."""
    from tqdm import tqdm

    failed = 0
    bar = tqdm(total=len(items), desc=desc, unit="clip", disable=not progress, leave=False, file=sys.stderr)
    try:
        for start in range(0, len(items), batch_size):
            chunk, ready = items[start : start + batch_size], []
            for item_id, build, question in chunk:
                try:
                    ready.append((item_id, build(), question))
                except Exception as exc:  # a corrupt or missing file fails this clip only; the error names it
                    writer.write_error(item_id, exc, stage="textualize", **error_fields(item_id))
                    failed += 1
            started = time.perf_counter()
            results = reasoner.predict_batch(
                [clip for _, clip, _ in ready],
                batch_size=batch_size,
                questions=[question for _, _, question in ready],
                return_exceptions=True,
            )
            seconds = (time.perf_counter() - started) / max(1, len(ready))
            for (item_id, clip, _), result in zip(ready, results, strict=True):
                if isinstance(result, Exception):
                    writer.write_error(item_id, result, stage="predict", **error_fields(item_id))
                    failed += 1
                else:
                    writer.write(record(item_id, result, clip, seconds))
            bar.update(len(chunk))
    finally:
        bar.close()
    return failed


__all__ = ["PredictSummary", "answer_into", "predict", "read_manifest"]
