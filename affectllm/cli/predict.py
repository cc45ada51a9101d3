"""``affectllm predict --data MANIFEST.jsonl --out PRED.jsonl``: batched, resumable predictions for many clips.

Each manifest line names one clip: ``{"id", "media"?, "transcript"?, "au_csv"?, "captions"?, "context"?,
"question"?}`` (relative paths are relative to the manifest), or carries already extracted evidence
(``affectllm textualize --json`` output: ``{"clip", "cues", "transcript"?}``). Each output line is
``{"name", "labels", "rationale", "answer", "confidence", "format_ok", ...}`` — the JSONL that
``affectllm eval ov`` reads — or ``{"name", "error", "where"}`` for a clip that failed. Output is appended and
flushed per clip, so a rerun after an interruption skips finished clips and retries failed ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from affectllm.cli.chat import (
    add_model_arguments,
    add_textualize_arguments,
    answer_text,
    reasoner_from_args,
    require_evidence,
)
from affectllm.errors import InputError

ID_KEYS = ("id", "name", "clip", "clip_id")
MEDIA_KEYS = ("media", "path", "video", "audio", "file")
PATH_KEYS = (*MEDIA_KEYS, "au_csv", "captions")


def row_id(row: dict[str, Any], path: Path, lineno: int) -> str:
    for key in ID_KEYS:
        if row.get(key) not in (None, ""):
            return str(row[key])
    for key in MEDIA_KEYS:
        if row.get(key):
            return Path(str(row[key])).stem
    raise InputError(path, f"row has no id (one of {', '.join(ID_KEYS)}) and no media path", line=lineno)


def read_manifest(path: Path, limit: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Manifest rows with their ids, paths made absolute relative to the manifest's folder."""
    from affectllm.batch import read_manifest as read_rows

    rows = read_rows(path, row_id=lambda row, lineno: row_id(row, path, lineno), limit=limit)
    for _, row in rows:
        for key in PATH_KEYS:
            value = row.get(key)
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                row[key] = str((path.parent / value).resolve())
    return rows


def clip_for_row(item_id: str, row: dict[str, Any], options: dict[str, Any]):
    """The evidence for one row: given cues are used as they are; otherwise the clip is textualized."""
    from affectllm.schema import Clip

    if "cues" in row:
        data = {k: row[k] for k in ("cues", "media", "transcript", "duration", "warnings") if k in row}
        return Clip.from_dict({"clip": item_id, **data})
    has_media = any(row.get(k) for k in MEDIA_KEYS)
    if not has_media and not row.get("transcript"):
        raise InputError(None, f"{item_id}: row has neither media nor a transcript")
    from affectllm.textualize import textualize_clip

    # The textualizer reads one media key; manifests written by other tools use several names for it.
    media = next((row[k] for k in MEDIA_KEYS if row.get(k)), None)
    row = {**{k: v for k, v in row.items() if k not in MEDIA_KEYS}, "id": item_id, "media": media}
    opts = dict(options)
    if not has_media:
        # Transcript-only rows: nothing to decode or transcribe.
        opts["asr"] = None
    return require_evidence(textualize_clip(row, **opts))


def prediction_record(item_id: str, prediction, clip, include_raw: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": item_id,
        "labels": list(prediction.emotions),
        "rationale": [r.to_dict() for r in prediction.rationale],
        "answer": answer_text(prediction),
        "confidence": prediction.confidence,
        "format_ok": prediction.format_ok,
    }
    if prediction.errors:
        record["parse_errors"] = list(prediction.errors)
    if clip.warnings:
        record["warnings"] = list(clip.warnings)
    if include_raw:
        record["raw"] = prediction.raw
    return record


def compact(out, order: list[str]) -> None:
    """Rewrite the output with one line per clip (the latest result), in manifest order.

    Appending keeps a retried clip's old failure line beside its new result; scorers expect unique names.
    Ids from other manifests that share the file are kept after these. The swap is atomic.
    """
    import json
    import os

    latest = {**out.failed, **out.done}
    listed = set(order)
    ordered = [i for i in order if i in latest] + [i for i in latest if i not in listed]
    tmp = out.path.with_suffix(out.path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for item_id in ordered:
            fh.write(json.dumps(latest[item_id], ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out.path)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict emotions + rationales for every clip in a manifest (batched, resumable)",
        description=(
            "Textualize and answer each clip of a JSONL manifest; appends one line per clip to --out "
            "({name, labels, rationale, answer, ...}, read by `affectllm eval ov`). Rerunning the same command "
            "skips clips already done and retries failed ones."
        ),
    )
    parser.add_argument("--data", required=True, help="manifest JSONL (one clip per line)")
    parser.add_argument("--out", required=True, help="predictions JSONL (appended; resumable)")
    parser.add_argument("--batch-size", type=int, default=8, help="conversations per backend call")
    parser.add_argument("--limit", type=int, help="only the first N manifest rows")
    parser.add_argument("--skip-failed", action="store_true", help="do not retry clips that failed before")
    parser.add_argument("--no-raw", action="store_true", help="leave the raw model text out of the output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_arguments(parser)
    add_textualize_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from affectllm.batch import ResumableJSONL
    from affectllm.cli.chat import textualize_options

    if args.batch_size < 1:
        raise InputError(None, "--batch-size must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise InputError(None, "--limit must be at least 1")
    manifest = Path(args.data)
    rows = read_manifest(manifest, args.limit)
    out = ResumableJSONL(args.out, id_key="name", retry_failed=not args.skip_failed)
    pending = [(i, r) for i, r in rows if not out.should_skip(i)]
    skipped = len(rows) - len(pending)
    if not pending:
        compact(out, [i for i, _ in rows])
        print(f"affectllm predict: all {len(rows)} clips already in {args.out}", file=sys.stderr)
        return 0
    options = textualize_options(args)
    # A transcript given as a file name is relative to the manifest, like the media paths.
    options["base_dir"] = str(manifest.resolve().parent)
    try:
        reasoner = reasoner_from_args(args)
    except ConnectionError as exc:
        print(f"affectllm: error: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    failed = 0
    bar = tqdm(total=len(pending), desc="predict", unit="clip", disable=args.no_progress, file=sys.stderr)
    batch: list[tuple[str, dict[str, Any], Any]] = []

    def flush() -> None:
        nonlocal failed
        if not batch:
            return
        results = reasoner.predict_batch(
            [clip for _, _, clip in batch],
            batch_size=len(batch),
            questions=[row.get("question") for _, row, _ in batch],
            contexts=[row.get("context") for _, row, _ in batch],
            return_exceptions=True,
        )
        for (item_id, _, clip), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                out.write_error(item_id, result, labels=[])
                failed += 1
            else:
                out.write(prediction_record(item_id, result, clip, include_raw=not args.no_raw))
        bar.update(len(batch))
        batch.clear()

    try:
        for item_id, row in pending:
            try:
                clip = clip_for_row(item_id, row, options)
            except Exception as exc:
                # A corrupt or missing file fails this clip only; the error names it in the output.
                out.write_error(item_id, exc, labels=[])
                failed += 1
                bar.update(1)
                continue
            batch.append((item_id, row, clip))
            if len(batch) >= args.batch_size:
                flush()
        flush()
    finally:
        bar.close()
        reasoner.backend.close()
    compact(out, [i for i, _ in rows])
    done = len(pending) - failed
    elapsed = time.perf_counter() - started
    print(
        f"affectllm predict: {done} predicted, {failed} failed, {skipped} already done "
        f"({elapsed:.1f} s) -> {args.out}",
        file=sys.stderr,
    )
    if failed:
        print("  failed clips are recorded with an 'error' field; rerun to retry them", file=sys.stderr)
    return 1 if done == 0 else 0
