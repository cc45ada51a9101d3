"""``affectllm eval closed``: closed-set scores (accuracy, weighted/macro F1, UAR, confusion matrix) and the
MER-UniBench hit rate of open-vocabulary predictions against one-hot gold labels."""

from __future__ import annotations

import argparse
from typing import Any

from affectllm.cli._io import (
    EW_VERSIONS,
    Table,
    add_file_args,
    add_output_args,
    check_names,
    check_result_output,
    emit_result,
    read_table,
    warn_missing,
)

LABEL_COLUMNS = ("label", "labels", "emotion", "emotions", "prediction", "openset")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "closed",
        help="closed-set scores (accuracy, F1, UAR, confusion matrix) or the MER-UniBench hit rate",
        description=(
            "Score single-label predictions against gold labels: accuracy, weighted F1, macro F1, UAR "
            "(unweighted average recall), per-class P/R/F1 and the confusion matrix. With --hit-rate, score "
            "open-vocabulary label lists against one-hot gold instead: the MER-UniBench hit rate (both sides "
            "mapped to emotion-wheel level 1, mean over 5 wheels). PRED and GOLD are CSV (a 'name' column and a "
            f'label column: {", ".join(LABEL_COLUMNS)}) or JSONL ({{"name": ..., "label": ...}}).'
        ),
    )
    add_file_args(parser, shared_column="label column/key in both files")
    parser.add_argument(
        "--labels",
        metavar="A,B,C",
        help="the class list and its order (default: the sorted gold labels); gold labels must be in it",
    )
    parser.add_argument(
        "--no-fold", action="store_true", help="do not fold word forms onto the class list (anger -> angry)"
    )
    parser.add_argument(
        "--hit-rate",
        action="store_true",
        help="score open-vocabulary predictions with the MER-UniBench hit rate",
    )
    parser.add_argument(
        "--ew-version", default="2025", choices=EW_VERSIONS, help="emotion-wheel tables for --hit-rate"
    )
    add_output_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from affectllm.errors import InputError
    from affectllm.labels import PANDAS_NA_VALUES, parse_label_list

    check_result_output(args)
    gold = read_table(args.gold, LABEL_COLUMNS, args.gold_column or args.label_column)
    pred = read_table(args.pred, LABEL_COLUMNS, args.pred_column or args.label_column)
    missing = check_names(gold, pred)

    def labels_of(table: Table, name: str) -> list[str]:
        value = table.values.get(name)
        # CSV cells such as "NA" or "None" are missing values to the official (pandas) reader: no label.
        if isinstance(value, str) and value.strip() in PANDAS_NA_VALUES:
            return []
        try:
            return parse_label_list(value)
        except ValueError as exc:
            raise InputError(table.path, str(exc), line=table.lines[name]) from None

    if args.hit_rate:
        from affectllm.metrics.closed import hit_rate

        gold_onehot = {}
        for name in gold.values:
            labels = labels_of(gold, name)
            if len(labels) > 1:
                raise InputError(
                    gold.path, f"one-hot gold expected, found {len(labels)} labels", line=gold.lines[name]
                )
            gold_onehot[name] = labels
        result = hit_rate(
            references=gold_onehot,
            predictions={n: labels_of(pred, n) for n in pred.values},
            version=args.ew_version,
        )
    else:
        from affectllm.metrics.closed import closed_set_scores

        gold_labels, pred_labels, multi = [], [], 0
        for name in gold.values:
            labels = labels_of(gold, name)
            if len(labels) != 1:
                raise InputError(
                    gold.path, f"expected one gold label, found {len(labels)}", line=gold.lines[name]
                )
            gold_labels.append(labels[0])
            predicted = labels_of(pred, name) if name in pred.values else []
            multi += len(predicted) > 1
            # A list answer is scored by its first label; an empty or missing one is simply wrong.
            pred_labels.append(predicted[0] if predicted else None)
        # The class list goes through the same rule as the labels (stripped, lower-cased): "Sad, Happy" works.
        class_list = None if args.labels is None else parse_label_list(args.labels)
        try:
            result = closed_set_scores(
                references=gold_labels,
                predictions=pred_labels,
                labels=class_list,
                fold_word_forms=not args.no_fold,
            )
        except ValueError as exc:
            raise InputError(args.gold, str(exc)) from None
        result["multi_label_predictions"] = multi
        result["missing_predictions"] = missing
    result["gold_file"], result["pred_file"] = str(args.gold), str(args.pred)

    warn_missing(gold, pred, missing, "scored as empty")
    emit_result(result, args, format_hit_rate if args.hit_rate else format_closed)
    return 0


def _pct(x: float | None) -> str:
    return "     -" if x is None else f"{100 * x:6.2f}"


def format_closed(result: dict[str, Any]) -> str:
    """The terminal table: headline scores, per-class scores and the confusion matrix (rows = gold)."""
    lines = [
        f"closed-set scores over {result['n']} samples (%)",
        f"  accuracy     {_pct(result['accuracy'])}",
        f"  weighted F1  {_pct(result['weighted_f1'])}",
        f"  macro F1     {_pct(result['macro_f1'])}",
        f"  UAR          {_pct(result['uar'])}",
        "",
    ]
    labels = result["labels"]
    width = max(8, *(len(x) for x in labels))
    lines.append(f"  {'class':<{width}}  precision  recall      F1  support")
    for label in labels:
        c = result["per_class"][label]
        lines.append(
            f"  {label:<{width}}     {_pct(c['precision'])}  {_pct(c['recall'])}  {_pct(c['f1'])}  {c['support']:7d}"
        )
    cm = result["confusion_matrix"]
    col_w = max(5, *(len(c) for c in cm["columns"]))
    lines += ["", "confusion matrix (rows: gold, columns: predicted)"]
    lines.append(" " * (width + 2) + " ".join(f"{c:>{col_w}}" for c in cm["columns"]))
    for row_label, row in zip(cm["rows"], cm["matrix"], strict=True):
        lines.append(f"  {row_label:<{width}}" + " ".join(f"{v:>{col_w}d}" for v in row))
    outside = result["out_of_set_predictions"] - result["empty_predictions"]
    if outside:
        shown = ", ".join(result["out_of_set_labels"][:8])
        lines.append(f"\n{outside} predictions outside the class list: {shown}")
    if result["empty_predictions"]:
        lines.append(f"{result['empty_predictions']} samples without a predicted label (counted as wrong)")
    if result.get("multi_label_predictions"):
        lines.append(
            f"{result['multi_label_predictions']} predictions held several labels; the first was scored"
        )
    return "\n".join(lines)


def format_hit_rate(result: dict[str, Any]) -> str:
    lines = [
        f"MER-UniBench hit rate (emotion-wheel level 1, tables {result['version']}), {result['n_gold']} gold samples",
        f"  {'wheel':<6} {'hit rate':>8} {'m-score':>8} {'n':>6}",
    ]
    for wheel, row in result["wheels"].items():
        lines.append(f"  {wheel:<6} {_pct(row['hit_rate']):>8} {_pct(row['m_score']):>8} {row['n']:>6d}")
    lines.append(f"  {'mean':<6} {_pct(result['hit_rate']):>8} {_pct(result['m_score']):>8}")
    return "\n".join(lines)
