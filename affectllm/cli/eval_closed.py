"""``affectllm eval closed``: closed-set scores (accuracy, weighted/macro F1, UAR, confusion matrix) and the
MER-UniBench hit rate of open-vocabulary predictions against one-hot gold labels.

Also home of ``read_table``, the CSV/JSONL reader that ``eval rationale`` shares: it keeps each sample's line
number so every complaint names the file and the line.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME_COLUMNS = ("name", "names", "id", "clip", "video_id", "sample")
LABEL_COLUMNS = ("label", "labels", "emotion", "emotions", "prediction", "openset")


@dataclass
class Table:
    """``values[name]`` of ``path``; ``lines[name]`` is where the sample stands in the file, ``columns[name]``
    which column/key its value came from (``column``: the first sample's)."""

    path: Path
    column: str
    values: dict[str, Any]
    lines: dict[str, int]
    columns: dict[str, str]


def read_table(path: str | Path, columns: Sequence[str], column: str | None = None) -> Table:
    """Read ``name -> value`` from a CSV/TSV (header row) or JSONL file.

    The name is taken from the first of ``NAME_COLUMNS`` present; the value from ``column`` when given, else
    the first of ``columns`` present. JSONL values keep their JSON type (lists stay lists). Raises
    ``InputError`` naming the file (and line) for a missing file or column, bad JSON, empty or duplicate names.
    """
    from affectllm.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    suffix = path.suffix.lower()
    jsonl = suffix in (".jsonl", ".ndjson", ".json") or (
        suffix not in (".csv", ".tsv") and text.lstrip()[:1] == "{"
    )
    rows = _jsonl_rows(path, text) if jsonl else _csv_rows(path, text, "\t" if suffix == ".tsv" else ",")
    if not rows:
        raise InputError(path, "no samples")
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    used: dict[str, str] = {}
    # Keys are chosen per row, so a JSONL file may mix {"clip": ...} and {"name": ...} records.
    for line, row in rows:
        # In a CSV a missing column is a fault of the header line.
        where = line if jsonl else 1
        name_key = next((k for k in NAME_COLUMNS if k in row), None)
        if name_key is None:
            raise InputError(path, f"no name column; expected one of: {', '.join(NAME_COLUMNS)}", line=where)
        if column is not None:
            if column not in row:
                raise InputError(path, f"no column {column!r}; found: {', '.join(sorted(row))}", line=where)
            value_key = column
        else:
            value_key = next((k for k in columns if k in row), None)
            if value_key is None:
                raise InputError(
                    path,
                    f"no value column; expected one of: {', '.join(columns)} (or name one with a --*-column "
                    "option)",
                    line=where,
                )
        raw_name = row.get(name_key)
        name = "" if raw_name is None else str(raw_name).strip()
        if not name:
            raise InputError(path, f"empty {name_key!r}", line=line)
        if name in values:
            raise InputError(path, f"duplicate name {name!r} (first on line {lines[name]})", line=line)
        values[name] = row.get(value_key)
        lines[name] = line
        used[name] = value_key
    first_column = next(iter(used.values()))
    return Table(path, first_column, values, lines, used)


def _csv_rows(path: Path, text: str, delimiter: str) -> list[tuple[int, dict[str, Any]]]:
    from affectllm.errors import InputError

    reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter)
    rows = []
    try:
        for row in reader:
            if None in row:  # more cells than header columns
                raise InputError(path, "more cells than header columns", line=reader.line_num)
            if not any((v or "").strip() for v in row.values()):
                continue
            rows.append((reader.line_num, {k.strip(): v for k, v in row.items() if k is not None}))
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV ({exc})", line=reader.line_num) from None
    return rows


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    from affectllm.errors import InputError

    rows = []
    for line, content in enumerate(text.splitlines(), 1):
        if not content.strip():
            continue
        try:
            record = json.loads(content)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON ({exc.msg})", line=line) from None
        if not isinstance(record, dict):
            raise InputError(path, "each line must be a JSON object", line=line)
        rows.append((line, record))
    return rows


def check_names(gold: Table, pred: Table) -> list[str]:
    """Raise on predictions for names the gold does not have; return gold names without prediction."""
    from affectllm.errors import InputError

    for name, line in pred.lines.items():
        if name not in gold.values:
            raise InputError(pred.path, f"prediction for {name!r}, which is not in {gold.path}", line=line)
    return [name for name in gold.values if name not in pred.values]


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
    parser.add_argument("--pred", required=True, type=Path, help="predictions (CSV or JSONL)")
    parser.add_argument("--gold", required=True, type=Path, help="gold labels (CSV or JSONL)")
    parser.add_argument("--label-column", metavar="COL", help="label column/key in both files")
    parser.add_argument(
        "--pred-column", metavar="COL", help="label column/key of PRED (overrides --label-column)"
    )
    parser.add_argument(
        "--gold-column", metavar="COL", help="label column/key of GOLD (overrides --label-column)"
    )
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
        "--ew-version", default="2025", choices=("2025", "2026"), help="emotion-wheel tables for --hit-rate"
    )
    parser.add_argument("--output", type=Path, metavar="OUT.json", help="write all scores as JSON here")
    parser.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from affectllm.errors import InputError
    from affectllm.labels import PANDAS_NA_VALUES, parse_label_list

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
        result = hit_rate(gold_onehot, {n: labels_of(pred, n) for n in pred.values}, version=args.ew_version)
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
        class_list = None if args.labels is None else [x for x in args.labels.split(",") if x.strip()]
        try:
            result = closed_set_scores(
                gold_labels, pred_labels, labels=class_list, fold_word_forms=not args.no_fold
            )
        except ValueError as exc:
            raise InputError(args.gold, str(exc)) from None
        result["multi_label_predictions"] = multi
        result["missing_predictions"] = missing
    result["gold_file"], result["pred_file"] = str(args.gold), str(args.pred)

    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        print(
            f"affectllm: warning: {len(missing)} gold names have no prediction (scored as empty): {shown}",
            file=sys.stderr,
        )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(format_hit_rate(result) if args.hit_rate else format_closed(result))
        if args.output:
            print(f"\nwrote {args.output}")
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
