"""``affectllm eval rationale``: cue-level scores of predicted rationales against reference rationales, evidence
grounding, and (optionally) an LLM judge."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from affectllm.cli._io import (
    Table,
    add_file_args,
    add_output_args,
    check_names,
    check_result_output,
    emit_result,
    read_table,
    warn,
    warn_missing,
)

RATIONALE_COLUMNS = ("rationale", "reasons", "reason", "explanation", "description", "english")
EVIDENCE_COLUMNS = ("cues", "evidence", "lines", "text")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rationale",
        help="cue-level precision/recall/F of rationales, evidence grounding, optional LLM judge",
        description=(
            "Split predicted and reference rationales into atomic cues (tagged visual / acoustic / textual), "
            "match them by sentence-embedding cosine (offline MiniLM by default) and report cue precision, "
            "recall and F per modality and overall. With --evidence, also report grounding: the share of each "
            "predicted rationale's cues supported by the clip's evidence cues. PRED and REF are CSV (a 'name' "
            f"column and a rationale column: {', '.join(RATIONALE_COLUMNS)}) or JSONL, where the rationale may "
            'be text, a list of strings or a list of {"cue", "modality", "cue_id"} items.'
        ),
    )
    add_file_args(
        parser,
        ref="ref",
        what="rationale",
        ref_help="reference rationales (CSV or JSONL)",
        pred_help="predicted rationales (CSV or JSONL)",
    )
    parser.add_argument(
        "--evidence",
        type=Path,
        metavar="CUES.jsonl",
        help="evidence per clip: `affectllm textualize --json` records ({clip, cues, text}) or "
        '{"name", "evidence": [lines]}; enables grounding',
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine at which a cue counts as matched/supported (default: the calibrated "
        "DEFAULT_GROUNDING_THRESHOLD)",
    )
    parser.add_argument(
        "--embedding-model",
        metavar="PATH_OR_ID",
        help="sentence-transformers model (default: packaged MiniLM)",
    )
    parser.add_argument(
        "--keep-conclusions",
        action="store_true",
        help="keep 'therefore ... emotional state is' sentences as cues",
    )
    judge = parser.add_argument_group("LLM judge (optional, any OpenAI-compatible endpoint)")
    judge.add_argument(
        "--judge", action="store_true", help="also score clue and label overlap (1-10) with an LLM"
    )
    judge.add_argument(
        "--base-url", help="endpoint, e.g. http://127.0.0.1:8000/v1 (default: $AFFECTLLM_JUDGE_BASE_URL)"
    )
    judge.add_argument("--model", help="judge model name (default: $AFFECTLLM_JUDGE_MODEL)")
    judge.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="env var holding the key (default: OPENAI_API_KEY)"
    )
    add_output_args(parser, "write all scores (and per-sample ones) here")
    parser.set_defaults(func=run)


def read_evidence(path: Path) -> dict[str, list[str]]:
    """Evidence lines per clip from a JSONL/CSV file (see ``--evidence``), InputError naming file and line."""
    from affectllm.errors import InputError
    from affectllm.metrics.rationale import evidence_lines
    from affectllm.schema import Cue

    table = read_table(path, EVIDENCE_COLUMNS)
    out: dict[str, list[str]] = {}
    for name, value in table.values.items():
        line = table.lines[name]
        try:
            if table.columns[name] == "cues":
                if not isinstance(value, list):
                    raise ValueError("'cues' must be a list of cue objects")
                out[name] = evidence_lines([Cue.from_dict(c) for c in value])
            elif isinstance(value, list):
                out[name] = [str(v) for v in value]
            elif isinstance(value, str):
                out[name] = evidence_lines(value)
            else:
                raise ValueError(f"cannot read evidence from {type(value).__name__}")
        except (ValueError, TypeError) as exc:
            raise InputError(path, f"bad evidence for {name!r}: {exc}", line=line) from None
    return out


def _check_rationales(table: Table) -> None:
    """Split every rationale once up front (cheap: no embedding), so an unreadable value — a number or a
    nested list in JSONL — is reported with its file and line before any model is loaded."""
    from affectllm.errors import InputError
    from affectllm.metrics.rationale import split_cues

    for name, value in table.values.items():
        try:
            split_cues(value)
        except TypeError as exc:
            raise InputError(
                table.path, f"unreadable rationale for {name!r}: {exc}", line=table.lines[name]
            ) from None


def run(args: argparse.Namespace) -> int:
    from affectllm.errors import InputError
    from affectllm.metrics.rationale import DEFAULT_GROUNDING_THRESHOLD, grounding_scores, rationale_scores

    check_result_output(args)
    threshold = DEFAULT_GROUNDING_THRESHOLD if args.threshold is None else args.threshold
    if not 0.0 < threshold <= 1.0:
        raise InputError(None, f"--threshold must be in (0, 1], got {threshold}")
    ref = read_table(args.ref, RATIONALE_COLUMNS, args.ref_column)
    pred = read_table(args.pred, RATIONALE_COLUMNS, args.pred_column)
    missing = check_names(ref, pred)
    for table in (ref, pred):
        _check_rationales(table)
    evidence = read_evidence(args.evidence) if args.evidence else None

    from affectllm.embeddings import get_embedder

    embedder = get_embedder(args.embedding_model)
    result: dict[str, Any] = {
        "rationale": rationale_scores(
            predictions=pred.values,
            references=ref.values,
            embedder=embedder,
            threshold=threshold,
            drop_conclusions=not args.keep_conclusions,
        )
    }
    if evidence is not None:
        result["grounding"] = grounding_scores(
            predictions=pred.values, references=evidence, threshold=threshold, embedder=embedder
        )
        if result["grounding"]["missing_evidence"]:
            warn(
                f"{len(result['grounding']['missing_evidence'])} predictions have no evidence in {args.evidence}"
            )
    if args.judge:
        from affectllm.metrics.judge import LLMJudge

        judge = LLMJudge(base_url=args.base_url, model=args.model, api_key_env=args.api_key_env)
        result["judge"] = judge.score(pred.values, ref.values)
    result["pred_file"], result["ref_file"] = str(args.pred), str(args.ref)

    warn_missing(ref, pred, missing, "scored 0")
    emit_result(result, args, format_table)
    return _report_judge_failures(result.get("judge"))


def _report_judge_failures(judge: dict[str, Any] | None) -> int:
    """Failed judge calls on stderr (a count and the first few reasons); exit status 1 when every call
    failed, since the judge scores are then all missing rather than low."""
    if not judge or not judge["n_failed_calls"]:
        return 0
    failed, calls = judge["n_failed_calls"], judge["n_calls"]
    warn(f"{failed} of {calls} LLM judge calls failed ({judge.get('base_url') or 'default endpoint'})")
    reasons = [e for s in judge["samples"].values() for e in s["errors"]]
    for reason in reasons[:3]:
        warn(f"judge: {reason}")
    if failed == calls:
        print("affectllm: error: every LLM judge call failed; no judge scores", file=sys.stderr)
        return 1
    return 0


def _pct(x: float | None) -> str:
    return "     -" if x is None else f"{100 * x:6.2f}"


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def format_table(result: dict[str, Any]) -> str:
    r = result["rationale"]
    lines = [
        f"cue-level rationale scores over {r['n']} samples (%; soft = mean best cosine, "
        f"hard = share of cues matched at cosine >= {r['threshold']:.2f})",
        f"  {'modality':<9} {'P':>6} {'R':>6} {'F':>6}   {'P@t':>6} {'R@t':>6} {'F@t':>6} {'n':>5}",
    ]
    for key in ("overall", "visual", "acoustic", "textual"):
        row = r[key]
        lines.append(
            f"  {key:<9} {_pct(row['p'])} {_pct(row['r'])} {_pct(row['f'])}   "
            f"{_pct(row['p_hard'])} {_pct(row['r_hard'])} {_pct(row['f_hard'])} {row['n']:>5d}"
        )
    if r["mean_pred_cues"] is not None:
        lines.append(
            f"  cues per sample: predicted {r['mean_pred_cues']:.1f}, reference {r['mean_ref_cues']:.1f}"
        )
    if r["skipped"]:
        lines.append(f"  {len(r['skipped'])} references held no cue and were skipped")
    if "grounding" in result:
        g = result["grounding"]
        lines += [
            "",
            f"grounding (cosine >= {g['threshold']:.2f} to an evidence cue): {_pct(g['grounding']).strip()}% "
            f"over {g['n']} samples; {g['hallucinated_cues']} unsupported cues",
        ]
    if "judge" in result:
        j = result["judge"]
        lines += [
            "",
            f"LLM judge ({j.get('model')}, 1-10): clue overlap {_score(j['clue_overlap'])} "
            f"(n={j['n_clue_overlap']}), label overlap {_score(j['label_overlap'])} (n={j['n_label_overlap']}); "
            f"{j['n_errors']} samples with errors",
        ]
    return "\n".join(lines)
