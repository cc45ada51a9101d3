"""Helpers the ``affectllm eval ov|closed|rationale`` commands share: the PRED/GOLD options, a CSV/JSONL table
reader that keeps line numbers (so every complaint names the file and the line), the name check between a
prediction file and its reference, and how a result is written and shown.

Only standard-library imports at module level: ``affectllm --help`` imports the command modules that import this.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME_COLUMNS = ("name", "names", "id", "clip", "video_id", "sample")
SHOWN = 5  # names quoted in a warning before "..."
# affectllm.wheel.VERSIONS, repeated so `affectllm --help` needs no numpy (tests/test_wheel.py checks they agree).
EW_VERSIONS = ("2025", "2026")


def add_file_args(
    parser: argparse.ArgumentParser,
    ref: str = "gold",
    what: str = "label",
    ref_help: str = "gold labels (CSV or JSONL)",
    pred_help: str = "predictions (CSV or JSONL)",
    shared_column: str | None = None,
) -> None:
    """``--pred``, ``--<ref>`` and their ``--pred-column`` / ``--<ref>-column`` options (plus, when
    ``shared_column`` is given, ``--label-column`` naming the column of both files)."""
    parser.add_argument("--pred", required=True, type=Path, help=pred_help)
    parser.add_argument(f"--{ref}", required=True, type=Path, help=ref_help)
    overrides = " (overrides --label-column)" if shared_column else ""
    if shared_column:
        parser.add_argument("--label-column", metavar="COL", help=shared_column)
    parser.add_argument("--pred-column", metavar="COL", help=f"{what} column/key of PRED{overrides}")
    parser.add_argument(
        f"--{ref}-column", metavar="COL", help=f"{what} column/key of {ref.upper()}{overrides}"
    )


def add_output_args(
    parser: argparse.ArgumentParser, output_help: str = "write all scores as JSON here"
) -> None:
    parser.add_argument("--output", type=Path, metavar="OUT.json", help=output_help)
    parser.add_argument("--json", action="store_true", help="print the JSON result instead of the table")


def warn(message: str) -> None:
    logging.getLogger(__name__).warning(message)


def examples(names: Sequence[str], shown: int = SHOWN) -> str:
    """``a, b, c, ...``: the first ``shown`` names, then an ellipsis when there are more."""
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def run_inputs(args: argparse.Namespace) -> list[Path]:
    """Every file option of a parsed command line except ``--output``: the files the run reads."""
    return [v for k, v in vars(args).items() if k != "output" and isinstance(v, Path)]


def check_result_output(args: argparse.Namespace) -> None:
    """Refuse a bad ``--output`` before any work: an input of the run, a folder or device, unwritable."""
    if getattr(args, "output", None):
        from affectllm.outputs import check_output

        check_output(args.output, inputs=run_inputs(args), option="--output")


def emit_result(
    result: dict[str, Any], args: argparse.Namespace, table: Callable[[dict[str, Any]], str]
) -> None:
    """Write ``result`` to ``--output`` (if given) and print it: as JSON with ``--json``, else as ``table``.

    The output is checked again (the run may have taken a while) and written atomically.
    """
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.output:
        from affectllm.outputs import atomic_write_text

        check_result_output(args)
        atomic_write_text(args.output, text + "\n")
    if args.json:
        print(text)
    else:
        print(table(result))
        if args.output:
            print(f"\nwrote {args.output}")


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
    from affectllm.labels import read_input_text

    path = Path(path)
    text, jsonl = read_input_text(path)
    rows = (
        _jsonl_rows(path, text)
        if jsonl
        else _csv_rows(path, text, "\t" if path.suffix.lower() == ".tsv" else ",")
    )
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
        # A name is a string or an integer id; a list or a float (1e999 is inf) names no sample.
        if raw_name is not None and (not isinstance(raw_name, (str, int)) or isinstance(raw_name, bool)):
            raise InputError(path, f"{name_key!r} must be a string, found {raw_name!r}", line=line)
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
            # line_num is where the record ends: its line, unless a quoted cell spans several.
            if None in row:
                raise InputError(path, "more cells than header columns", line=reader.line_num)
            if not any((v or "").strip() for v in row.values()):
                continue
            if any(v is None for v in row.values()):  # DictReader pads a short row with None
                raise InputError(path, "fewer cells than header columns", line=reader.line_num)
            rows.append((reader.line_num, {k.strip(): v for k, v in row.items()}))
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV ({exc})", line=reader.line_num) from None
    return rows


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    from affectllm.batch import iter_jsonl_objects

    return list(iter_jsonl_objects(path, text.splitlines()))


def check_names(gold: Table, pred: Table) -> list[str]:
    """Apply the one name policy (:func:`affectllm.labels.align_names`): warn about predictions for names the
    gold does not have (ignored, with file and line); return gold names without prediction (scored empty)."""
    from affectllm.labels import align_names

    missing, unknown = align_names(gold.values, pred.values)
    for name in unknown[:SHOWN]:
        warn(f"{pred.path}:{pred.lines[name]}: prediction for {name!r}, which is not in {gold.path}; ignored")
    if len(unknown) > SHOWN:
        warn(f"{len(unknown)} predictions for names not in {gold.path}, ignored: {examples(unknown)}")
    return missing


def warn_missing(gold: Table, pred: Table, missing: Sequence[str], scored: str) -> None:
    """Report gold names without a prediction: a count, then the first few with the gold file and line."""
    if not missing:
        return
    warn(f"{len(missing)} gold names have no prediction in {pred.path} ({scored}): {examples(missing)}")
    for name in missing[:SHOWN]:
        warn(f"{gold.path}:{gold.lines[name]}: {name!r} has no prediction")
