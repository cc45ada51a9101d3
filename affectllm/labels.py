"""Label lists: parse them the way the official OV-MER / AffectGPT code does, and read label files.

The official ``string_to_list`` strips one leading ``[`` and one trailing ``]``, splits on ``,`` ``'`` and ``"``,
strips each piece and drops empty ones; the caller then lower-cases. That one rule already reads Python reprs
(``['a', 'b']``), JSON arrays (``["a", "b"]``) and bare lists (``a, b`` or ``[a, b]``) alike. Scores are only
comparable with published numbers if every file goes through this exact rule, so strings are never parsed any
other way (a JSON element containing a comma or quote is split, as the official code splits it).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from affectllm.errors import InputError

_SPLIT = re.compile(r"['\",]")

# The official reader loads CSV files with pandas, which reads these cell texts as missing values (an empty
# label list). Mirror that so a cell reading "None" or "NA" scores as the official code scores it.
PANDAS_NA_VALUES = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)

# Label columns tried, in order, when none is named: predictions use "labels", OV-MERD gold uses "openset".
DEFAULT_LABEL_COLUMNS = ("labels", "emotions", "openset")
# The id of a JSONL record: "id" in every file affectllm writes; "name" in OV-MER's own files and older outputs.
RECORD_ID_KEYS = ("id", "name")


def split_label_string(text: str) -> list[str]:
    """The official splitting rule on one string (no lower-casing): ``"[a, 'b']"`` -> ``["a", "b"]``."""
    if text == "":
        return []
    # Exactly one bracket each side, and no whitespace stripping first: the official code does neither.
    if text[0] == "[":
        text = text[1:]
    if text[-1:] == "]":
        text = text[:-1]
    return [piece.strip() for piece in _SPLIT.split(text) if piece.strip()]


def parse_label_list(value: str | Iterable[Any] | None) -> list[str]:
    """A label list as lower-cased, stripped labels, by the official rule.

    ``value`` may be a string (Python repr, JSON array or bare comma-separated list), a list/tuple of strings
    (e.g. from JSON), ``None`` or NaN (no labels). Raises ``ValueError`` for anything else, such as a list
    holding a number or a nested list.
    """
    if value is None:
        return []
    if isinstance(value, float):
        if math.isnan(value):
            return []
        raise ValueError(f"expected a label list, got the number {value!r}")
    if isinstance(value, str):
        return [label.lower() for label in split_label_string(value)]
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()  # numpy arrays, as the official code accepts
    if isinstance(value, (list, tuple)):
        labels = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"label lists must hold strings; found {item!r}")
            label = item.strip().lower()
            if label:
                labels.append(label)
        return labels
    raise ValueError(f"expected a label list (string or list of strings), got {type(value).__name__}")


def read_label_file(path: str | Path, label_column: str | None = None) -> dict[str, list[str]]:
    """Read ``name -> labels`` from a CSV or JSONL file (see :func:`read_label_file_with_lines`).

    Names present in one file but not the other follow one policy everywhere (``eval ov``, ``eval closed``,
    ``eval rationale``, :func:`~affectllm.metrics.ov.score_ov`, :func:`~affectllm.metrics.closed.hit_rate`),
    implemented by :func:`align_names`: a reference (gold) name without a prediction is scored as an empty
    prediction, and a prediction for a name not in the references is ignored; both are reported, never
    silently dropped.
    """
    return read_label_file_with_lines(path, label_column)[0]


def align_names(references: Iterable[str], predictions: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(missing, unknown)``: reference names with no prediction (in reference order) and predicted names the
    references lack (in prediction order).

    The one policy for names present in one file but not the other: a *missing* prediction is scored as an
    empty one (a model that skipped a sample must not score better than one that answered it wrongly), and an
    *unknown* prediction is ignored (the references define the test set; the official OV-MER code ignores
    them too). Callers report both lists, with file and line where they have them.
    """
    refs = list(references)
    ref_set, pred_list = set(refs), list(predictions)
    pred_set = set(pred_list)
    return [n for n in refs if n not in pred_set], [n for n in pred_list if n not in ref_set]


def read_label_file_with_lines(
    path: str | Path, label_column: str | None = None
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Read ``name -> labels`` from a CSV or JSONL file, and ``name -> line`` where each record starts.

    CSV: a ``name`` column and a label column (``label_column``, else ``labels``, else ``openset``); cells are
    label-list strings. JSONL: one object per line with ``name`` and the label key (same defaults), whose value
    is a list of strings or a label-list string. The format follows the extension (``.jsonl``/``.json`` vs
    anything else), falling back to the first character for unknown extensions.

    Raises ``InputError`` naming the file and line for a missing file or column, malformed JSON or CSV rows,
    duplicate or empty names and unparsable label lists.
    """
    path = Path(path)
    text, jsonl = read_input_text(path)
    result: dict[str, list[str]] = {}
    lines: dict[str, int] = {}
    if jsonl:
        _read_jsonl(path, text, label_column, result, lines)
    else:
        _read_csv(path, text, label_column, "\t" if path.suffix.lower() == ".tsv" else ",", result, lines)
    return result, lines


def read_input_text(path: Path) -> tuple[str, bool]:
    """The text of a CSV/TSV or JSONL input file (a BOM dropped) and whether it is JSONL.

    The extension decides (``.jsonl``/``.json``/``.ndjson`` vs ``.csv``/``.tsv``); any other extension is
    JSONL when the first non-blank character opens an object. ``InputError`` for a missing or non-UTF-8 file.
    """
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    suffix = path.suffix.lower()
    jsonl = suffix in (".jsonl", ".json", ".ndjson") or (
        suffix not in (".csv", ".tsv") and text.lstrip()[:1] == "{"
    )
    return text, jsonl


def _choose_column(path: Path, available: list[str], label_column: str | None, line: int | None) -> str:
    if label_column is not None:
        if label_column not in available:
            raise InputError(path, f"no label column {label_column!r}; columns are {available}", line)
        return label_column
    for candidate in DEFAULT_LABEL_COLUMNS:
        if candidate in available:
            return candidate
    raise InputError(
        path,
        f"no label column: expected one of {list(DEFAULT_LABEL_COLUMNS)} (or pass --label-column); "
        f"found {available}",
        line,
    )


def _add(
    result: dict[str, list[str]], lines: dict[str, int], path: Path, name: str, labels: list[str], line: int
):
    if not name:
        raise InputError(path, "empty name", line)
    if name in result:
        raise InputError(path, f"duplicate name {name!r} (first seen on line {lines[name]})", line)
    result[name] = labels
    lines[name] = line


def _read_csv(
    path: Path, text: str, label_column: str | None, delimiter: str, result: dict, lines: dict
) -> None:
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(path, "empty file") from None
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV header: {exc}", 1) from None
    header = [h.strip() for h in header]
    if "name" not in header:
        raise InputError(path, f"no 'name' column; columns are {header}", 1)
    name_idx = header.index("name")
    label_idx = header.index(_choose_column(path, header, label_column, 1))
    while True:
        line = reader.line_num + 1  # where this record starts (a quoted cell may span lines)
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputError(path, f"malformed CSV row: {exc}", line) from None
        if not record or all(not cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            raise InputError(path, f"expected {len(header)} fields, found {len(record)}", line)
        cell = record[label_idx]
        labels = [] if cell in PANDAS_NA_VALUES else parse_label_list(cell)
        _add(result, lines, path, record[name_idx], labels, line)


def _read_jsonl(path: Path, text: str, label_column: str | None, result: dict, lines: dict) -> None:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"malformed JSON: {exc.msg} (column {exc.colno})", line) from None
        except RecursionError:
            raise InputError(path, "JSON nested too deeply", line) from None
        if not isinstance(record, dict):
            raise InputError(path, f"expected a JSON object, found {type(record).__name__}", line)
        id_key = next((k for k in RECORD_ID_KEYS if k in record), None)
        if id_key is None:
            raise InputError(path, f"no 'id' (or 'name') key; keys are {sorted(record)}", line)
        if isinstance(record.get("prediction"), dict) and "emotions" not in record:
            raise InputError(
                path,
                "an `eval run` predictions file from affectllm < 0.2 (answer nested under 'prediction'); "
                "convert it with: python -m affectllm.records upgrade FILE",
                line,
            )
        key = _choose_column(path, list(record), label_column, line)
        try:
            labels = parse_label_list(record[key])
        except ValueError as exc:
            raise InputError(path, f"unparsable label list in {key!r}: {exc}", line) from None
        name = record[id_key]
        if not isinstance(name, (str, int)) or isinstance(name, bool):
            raise InputError(path, f"{id_key!r} must be a string, found {name!r}", line)
        _add(result, lines, path, str(name), labels, line)
