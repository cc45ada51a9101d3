"""``affectllm eval ov``: score open-vocabulary emotion predictions with the OV-MER emotion-wheel metric."""

from __future__ import annotations

import argparse
from typing import Any

from affectllm.cli._io import (
    EW_VERSIONS,
    SHOWN,
    add_file_args,
    add_output_args,
    check_result_output,
    emit_result,
    warn,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ov",
        help="score open-vocabulary predictions with the emotion-wheel (EW) metric",
        description=(
            "Score open-vocabulary emotion predictions against gold label lists exactly as the OV-MER / "
            "AffectGPT code does: 12 variants (M1, M2, W1-L1 ... W5-L2), M-avg, and the 5-wheel means at "
            "level 1 (the number papers report) and level 2. PRED and GOLD are CSV (a 'name' column and a "
            "label column: 'labels', or 'openset' as in OV-MERD gold) or JSONL ({\"name\": ..., \"labels\": [...]})."
        ),
    )
    add_file_args(
        parser,
        shared_column="label column/key in both files (default: labels, else openset)",
    )
    parser.add_argument(
        "--ew-version",
        default="2025",
        choices=EW_VERSIONS,
        help="word-form table version; 2025 is what published numbers use (default: 2025)",
    )
    add_output_args(parser)
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the constant-prediction floor (saves time on huge sets)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from affectllm.errors import InputError
    from affectllm.labels import read_label_file_with_lines
    from affectllm.metrics.ov import score_ov

    check_result_output(args)
    gold, gold_lines = read_label_file_with_lines(
        args.gold, label_column=args.gold_column or args.label_column
    )
    pred, pred_lines = read_label_file_with_lines(
        args.pred, label_column=args.pred_column or args.label_column
    )
    if not gold:
        raise InputError(args.gold, "no samples")
    result = score_ov(references=gold, predictions=pred, version=args.ew_version, floor=not args.no_floor)
    result["gold_file"] = str(args.gold)
    result["pred_file"] = str(args.pred)
    _warn_names(result, args, gold_lines, pred_lines)
    emit_result(result, args, format_table)
    return 0


def _warn_names(result: dict[str, Any], args: argparse.Namespace, gold_lines: dict, pred_lines: dict) -> None:
    """Warnings on stderr; name mismatches point at the file and line of each name (the first few)."""
    missing, unknown = result["missing_predictions"], result["unknown_predictions"]
    for name in unknown[:SHOWN]:
        warn(f"{args.pred}:{pred_lines[name]}: prediction for {name!r}, which is not in {args.gold}; ignored")
    for name in missing[:SHOWN]:
        warn(
            f"{args.gold}:{gold_lines[name]}: {name!r} has no prediction in {args.pred}; "
            "scored as an empty prediction"
        )
    # Then score_ov's own warnings: the counts of both cases, and anything else it noticed.
    for warning in result["warnings"]:
        warn(warning)


def _pct(x: float) -> str:
    return f"{100 * x:6.2f}"


def format_table(result: dict[str, Any]) -> str:
    """The human-readable summary printed by ``affectllm eval ov`` (scores in percent)."""
    lines = [
        f"Emotion-wheel scores, tables {result['version']}: {result['n_gold']} gold samples, "
        f"{result['n_pred']} with a prediction",
        "",
        f"{'variant':<10} {'F %':>7} {'P %':>7} {'R %':>7} {'n':>7}",
    ]
    for name, s in result["variants"].items():
        lines.append(f"{name:<10} {_pct(s['f']):>7} {_pct(s['p']):>7} {_pct(s['r']):>7} {s['n']:>7}")
    lines.append("")
    for key, title in (("l1", "L1 (5-wheel mean, level 1)"), ("l2", "L2 (5-wheel mean, level 2)")):
        s = result[key]
        lines.append(f"{title:<28} F {_pct(s['f'])}   P {_pct(s['p'])}   R {_pct(s['r'])}")
    lines.append(f"{'M-avg (mean F of 12)':<28} F {_pct(result['m_avg'])}")
    lines.append("")
    oov = "n/a" if result["oov_rate"] is None else f"{100 * result['oov_rate']:.1f} %"
    lines.append(f"mean predicted labels {result['mean_pred_labels']:.2f}; outside the vocabulary {oov}")
    floor = result.get("floor")
    if floor:
        shown = ", ".join(floor["labels"])
        lines.append(
            f"floor (always predicting the {floor['k']} commonest gold labels: {shown}): "
            f"L1 F {_pct(floor['l1']['f']).strip()}, M-avg {_pct(floor['m_avg']).strip()}"
        )
    return "\n".join(lines)
