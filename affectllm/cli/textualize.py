"""``affectllm textualize``: a clip's non-verbal evidence as time-stamped text cues.

One clip: prints the rendered evidence block and, with ``--json``, writes
``{"clip", "cues": [{"modality", "name", "value", "unit", "band", "start", "end", "source", "confidence",
"detail"}], "text", ...}``. A folder or a JSONL manifest: a resumable batch into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "textualize",
        help="extract a clip's audio, facial and scene cues as time-stamped text",
        description="Turn a clip (video, audio, or transcript/AU/captions sidecars) into time-stamped evidence "
        "cues. A folder or a JSONL manifest runs as a resumable batch (--out).",
    )
    p.add_argument(
        "input",
        metavar="CLIP_OR_DIR_OR_MANIFEST",
        help="a media file, a sidecar, a folder or a .jsonl manifest",
    )
    p.add_argument(
        "--extractors",
        default="audio,face,scene",
        metavar="LIST",
        help="comma-separated extractors to run on media: audio,face,scene (default: all; 'none' for none)",
    )
    p.add_argument(
        "--asr",
        default="faster-whisper",
        help="ASR engine: faster-whisper (offline tiny.en by default), openai-whisper, or none",
    )
    p.add_argument("--asr-model", metavar="NAME_OR_PATH", help="ASR model size, name or local path")
    p.add_argument("--sex", choices=["female", "male"], help="speaker sex for population prosody norms")
    p.add_argument(
        "--au-csv",
        metavar="F",
        help="OpenFace 2.x / py-feat AU CSV (default: <stem>.openface.csv or <stem>.au.csv)",
    )
    p.add_argument(
        "--captions", metavar="F", help="scene captions .json/.txt (default: <stem>.captions.json|.txt)"
    )
    p.add_argument("--transcript", metavar="F", help="transcript .txt (default: <stem>.transcript.txt)")
    p.add_argument(
        "--captioner",
        choices=["openai", "transformers"],
        help="caption sampled frames when there is no captions file",
    )
    p.add_argument(
        "--caption-model",
        metavar="M",
        help="captioning model (VLM name at the endpoint, or a local transformers model)",
    )
    p.add_argument(
        "--base-url",
        metavar="U",
        help="OpenAI-compatible endpoint for --captioner openai (e.g. http://127.0.0.1:8000/v1)",
    )
    p.add_argument("--num-frames", type=int, default=8, help="frames sampled for captioning (default 8)")
    p.add_argument(
        "--run-openface",
        action="store_true",
        help="run OpenFace FeatureExtraction (must be on PATH) on videos without an AU CSV",
    )
    p.add_argument(
        "--all-faces", action="store_true", help="full cues for every face, not only the primary one"
    )
    p.add_argument(
        "--au-confidence",
        type=float,
        default=0.8,
        help="OpenFace tracking confidence threshold (default 0.8)",
    )
    p.add_argument("--max-tokens", type=int, metavar="N", help="token budget for the rendered text block")
    p.add_argument("--json", metavar="OUT.json", help="write the clip's cues as JSON (single clip)")
    p.add_argument(
        "--plot",
        metavar="OUT.png",
        help="draw the clip's cue timeline (words, contours, AUs, captions on one time axis) as a PNG "
        "(single clip; needs affectllm[plots])",
    )
    p.add_argument("--out", metavar="OUT.jsonl", help="batch output, resumable (folder or manifest input)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="batch: replace --out instead of resuming it (also needed when it holds lines affectllm did not write)",
    )
    p.add_argument("--no-cache", action="store_true", help="recompute even when a cached result exists")
    p.add_argument(
        "--retry-failed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="batch: redo clips that failed before (default yes)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no text block for batches")
    p.set_defaults(func=run)


def parse_extractors(value: str, where: str) -> tuple[str, ...]:
    from affectllm.settings import parse_extractors as parse

    return parse(value, where)


def _options(args: argparse.Namespace) -> dict:
    return {
        "modalities": parse_extractors(args.extractors, "--extractors"),
        "asr": None if args.asr == "none" else args.asr,
        "asr_model": args.asr_model,
        "sex": args.sex,
        "captioner": args.captioner,
        "caption_model": args.caption_model,
        "base_url": args.base_url,
        "num_frames": args.num_frames,
        "use_cache": not args.no_cache,
        "run_openface": args.run_openface,
        "face_options": {"confidence_threshold": args.au_confidence, "all_faces": args.all_faces},
    }


def run(args: argparse.Namespace) -> int:
    from affectllm.errors import InputError
    from affectllm.textualize.pipeline import textualize_batch, textualize_clip
    from affectllm.textualize.render import render_cues

    source = Path(args.input)
    _check_numbers(args)
    is_batch = source.is_dir() or source.suffix.lower() in (".jsonl", ".ndjson")
    options = _options(args)
    if args.asr != "none" and "audio" in parse_extractors(args.extractors, "--extractors"):
        from affectllm.textualize.asr import asr_engine_name

        asr_engine_name(args.asr)  # an unknown engine fails here, before any clip, listing the known ones

    if is_batch:
        if args.json:
            raise InputError(args.json, "--json is for a single clip; use --out OUT.jsonl for a batch")
        if args.plot:
            raise InputError(args.plot, "--plot is for a single clip")
        if not args.out:
            raise InputError(source, "a batch needs --out OUT.jsonl (the resumable results file)")
        if args.au_csv or args.captions or args.transcript:
            raise InputError(
                source,
                "--au-csv/--captions/--transcript name one clip's sidecars; use a manifest for a batch",
            )
        summary = textualize_batch(
            source,
            args.out,
            progress=not args.quiet,
            retry_failed=args.retry_failed,
            max_tokens=args.max_tokens,
            overwrite=args.overwrite,
            **options,
        )
        print(
            f"textualized {summary['done']} clip(s), skipped {summary['skipped']} already done, "
            f"{summary['failed']} failed → {summary['out']}",
            file=sys.stderr,
        )
        # The reasons are in --out; the first few here say whether it is worth a look.
        for item_id, message in summary["errors"][:3]:
            log.warning("clip %r failed: %s", item_id, message)
        if summary["failed"] and not summary["done"] and not summary["skipped"]:
            log.error("every clip failed (recorded in %s)", summary["out"])
            return 1
        return 0

    if args.out:
        raise InputError(args.out, "--out is for batches (a folder or a manifest); use --json for one clip")
    sidecars = (args.au_csv, args.captions, args.transcript)
    for option, target in (("--json", args.json), ("--plot", args.plot)):
        if target:
            from affectllm.outputs import check_output

            check_output(target, inputs=[source, *sidecars], option=option)
    if args.plot:
        from affectllm.errors import require

        require("matplotlib", "plots", "--plot")  # before the extraction, not after it
    clip = textualize_clip(
        source, au_csv=args.au_csv, captions=args.captions, transcript=args.transcript, **options
    )
    text = render_cues(clip, max_tokens=args.max_tokens)
    for warning in clip.warnings:
        log.warning(warning)
    print(text)
    if args.json:
        record = {**clip.to_dict(), "text": text}
        from affectllm.outputs import atomic_write_text

        atomic_write_text(args.json, json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    if args.plot:
        from affectllm.timeline import render_timeline

        render_timeline(clip, path=args.plot)
        log.info("wrote the cue timeline to %s", args.plot)
    return 0


def _check_numbers(args: argparse.Namespace) -> None:
    """Range-check numeric options before any work (NaN fails every comparison, so test the range itself)."""
    import math

    from affectllm.errors import InputError

    if not (math.isfinite(args.au_confidence) and 0.0 <= args.au_confidence <= 1.0):
        raise InputError(None, f"--au-confidence must be a number in [0, 1], got {args.au_confidence}")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise InputError(None, f"--max-tokens must be at least 1, got {args.max_tokens}")
    if not 1 <= args.num_frames <= 256:
        raise InputError(None, f"--num-frames must be between 1 and 256, got {args.num_frames}")
