"""``affectllm predict --data MANIFEST.jsonl --out PRED.jsonl``: batched, resumable predictions for many clips.

Argument parsing and printing only; the work is :func:`affectllm.batch_predict.predict` (also
``affectllm.predict`` from Python). Each output line is the prediction record of :mod:`affectllm.records`
(``{"id", "emotions", "rationale", "answer", ...}``, read as is by ``affectllm eval ov``) or
``{"id", "error", "where"}`` for a clip that failed.
"""

from __future__ import annotations

import argparse
import sys

from affectllm.cli._options import positive_int
from affectllm.cli.chat import (
    add_model_arguments,
    add_textualize_arguments,
    clip_settings,
    prompt_settings,
    reasoner_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict emotions + rationales for every clip in a manifest (batched, resumable)",
        description=(
            "Textualize and answer each clip of a JSONL manifest; appends one line per clip to --out "
            "({id, emotions, rationale, answer, ...}, read by `affectllm eval ov`). Rerunning the same command "
            "skips clips already done and retries failed ones."
        ),
    )
    parser.add_argument("--data", required=True, help="manifest JSONL (one clip per line)")
    parser.add_argument("--out", required=True, help="predictions JSONL (appended; resumable)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="conversations per backend call")
    parser.add_argument("--limit", type=positive_int, help="only the first N manifest rows")
    parser.add_argument("--overwrite", action="store_true", help="start --out afresh instead of resuming it")
    parser.add_argument("--skip-failed", action="store_true", help="do not retry clips that failed before")
    parser.add_argument("--no-raw", action="store_true", help="leave the raw model text out of the output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_arguments(parser)
    add_textualize_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from affectllm.batch_predict import predict

    settings = clip_settings(args)
    prompt_settings(args)  # a bad --labels or --label-prior fails before the manifest is read
    # predict() checks its arguments, the manifest and --out first and loads the model (load) only when some
    # clip is pending, so a bad manifest fails in a second.
    loaded = []

    def load():
        loaded.append(reasoner_from_args(args))
        return loaded[0]

    try:
        summary = predict(
            args.data,
            args.out,
            load,
            settings,
            batch_size=args.batch_size,
            limit=args.limit,
            retry_failed=not args.skip_failed,
            include_raw=not args.no_raw,
            overwrite=args.overwrite,
            progress=not args.quiet and sys.stderr.isatty(),
            log=lambda message: print(f"affectllm predict: {message}", file=sys.stderr),
        )
    except ConnectionError as exc:
        print(f"affectllm: error: {exc}", file=sys.stderr)
        return 2
    finally:
        for reasoner in loaded:
            reasoner.backend.close()
    if summary.failed:
        print("  failed clips are recorded with an 'error' field; rerun to retry them", file=sys.stderr)
    return 1 if summary.predicted == 0 and summary.skipped < summary.total else 0
