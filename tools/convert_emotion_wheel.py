#!/usr/bin/env python
"""Convert the AffectGPT / MERTools emotion-wheel resources into affectllm's own JSON data files.

Reads (with openpyxl and the csv module; pandas is not needed):
  wheel1..5.xlsx     columns level1, level2, level3; a blank cell repeats the value above it
  synonym.xlsx       8 runs of (word_runK, synonym_runK); synonyms are a comma-separated string
  format_2025.csv    columns name, format (comma-separated word forms of ``name``)
  format_2026.csv    same, with "-less" forms no longer sharing a base word with their stem

Writes affectllm/data/ew/{wheels,synonyms,format_2025,format_2026}.json. The conversion applies exactly the
normalisation the official reader applies on every run (forward-fill, lower-case, strip; the official list
splitting for synonym and form strings), so the package compiles the same maps without the spreadsheets.
Run once when the upstream tables change; affectllm itself never reads the spreadsheets:

    python tools/convert_emotion_wheel.py ../shared/data/emotion_wheel affectllm/data/ew
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

# The list-splitting rule is the package's own (the official string_to_list); import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from affectllm.labels import PANDAS_NA_VALUES, split_label_string

WHEELS = ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5")
RUNS = 8
SOURCE = "AffectGPT / MERTools emotion-wheel resources (https://github.com/zeroQiaoba/AffectGPT)"


def _blank(cell: object) -> bool:
    # pandas (which the official reader uses) turns these cell texts into NaN: they are blank cells too.
    return cell is None or (isinstance(cell, str) and cell in PANDAS_NA_VALUES)


def _sheet_rows(path: Path) -> tuple[list[str], list[tuple]]:
    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    sheet = workbook.worksheets[0]  # the official reader reads the first sheet
    rows = list(sheet.iter_rows(values_only=True))
    workbook.close()
    if not rows:
        raise SystemExit(f"{path}: empty sheet")
    header = [str(h).strip() if h is not None else "" for h in rows[0]]
    body = [r for r in rows[1:] if any(c is not None for c in r)]
    return header, body


def convert_wheel(path: Path) -> list[list[str]]:
    """Rows (level1, level2, level3) after forward-filling each column independently, lower-cased, stripped.

    Each column keeps its own last non-blank value, as the official reader does: a row that starts a new
    level-2 group with a blank level-3 cell inherits the previous row's level-3 word.
    """
    header, body = _sheet_rows(path)
    try:
        cols = [header.index(name) for name in ("level1", "level2", "level3")]
    except ValueError:
        raise SystemExit(f"{path}: needs columns level1, level2, level3; found {header}") from None
    current = ["", "", ""]
    rows = []
    for line, row in enumerate(body, start=2):
        for k, col in enumerate(cols):
            cell = row[col] if col < len(row) else None
            if not _blank(cell):
                if not isinstance(cell, str):
                    raise SystemExit(f"{path}:{line}: non-text cell {cell!r}")
                current[k] = cell
        rows.append([c.lower().strip() for c in current])
    return rows


def convert_synonyms(path: Path, wheel_words: set[str]) -> dict[str, list[str]]:
    """The 8 runs merged: synonym (or wheel word itself) -> sorted wheel words it stands for.

    The official code merges the runs as a union of lists and only ever reads the merged lists through
    ``sorted`` / membership, so a sorted, de-duplicated list per key is equivalent.
    """
    header, body = _sheet_rows(path)
    merged: dict[str, set[str]] = {}
    for run in range(1, RUNS + 1):
        try:
            word_col = header.index(f"word_run{run}")
            syn_col = header.index(f"synonym_run{run}")
        except ValueError:
            raise SystemExit(f"{path}: missing columns word_run{run} / synonym_run{run}") from None
        for line, row in enumerate(body, start=2):
            word_cell = row[word_col]
            if _blank(word_cell):
                raise SystemExit(f"{path}:{line}: blank word_run{run}")
            word = str(word_cell).strip().lower()
            if word not in wheel_words:  # the official reader asserts this too
                raise SystemExit(f"{path}:{line}: word_run{run} {word!r} is in no wheel")
            merged.setdefault(word, set()).add(word)
            syn_cell = row[syn_col]
            synonyms = [] if _blank(syn_cell) else split_label_string(str(syn_cell))
            for synonym in synonyms:
                merged.setdefault(synonym.strip().lower(), set()).add(word)
    return {key: sorted(values) for key, values in sorted(merged.items())}


def convert_formats(path: Path) -> list[list]:
    """Rows [name, [forms...]] in file order; forms split by the official list rule (not lower-cased)."""
    rows = []
    seen: set[str] = set()
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if header[:2] != ["name", "format"]:
            raise SystemExit(f"{path}: expected header name,format; found {header}")
        for line, record in enumerate(reader, start=2):
            if len(record) != 2:
                raise SystemExit(f"{path}:{line}: expected 2 fields, found {len(record)}")
            name, forms = record
            if _blank(name):
                raise SystemExit(f"{path}:{line}: blank name")
            if name in seen:
                raise SystemExit(f"{path}:{line}: duplicate name {name!r}")
            seen.add(name)
            rows.append([name, [] if _blank(forms) else split_label_string(forms)])
    return rows


def _dump(path: Path, payload: dict) -> None:
    # Compact separators: the files ship in every wheel, and nobody edits them by hand.
    path.write_text(json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="folder with wheel1..5.xlsx, synonym.xlsx, format_*.csv")
    parser.add_argument("output", type=Path, help="destination folder (affectllm/data/ew)")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)

    wheels = {name: convert_wheel(args.source / f"{name}.xlsx") for name in WHEELS}
    wheel_words = {word for rows in wheels.values() for row in rows for word in row}
    _dump(
        args.output / "wheels.json",
        {
            "source": SOURCE,
            "note": "rows (level1, level2, level3), blank cells filled from the row above, lower-cased",
            "wheels": wheels,
        },
    )
    synonyms = convert_synonyms(args.source / "synonym.xlsx", wheel_words)
    _dump(
        args.output / "synonyms.json",
        {
            "source": SOURCE,
            "note": f"union of {RUNS} synonym runs: word -> wheel words it stands for (each wheel word maps to itself)",
            "synonyms": synonyms,
        },
    )
    for version in ("2025", "2026"):
        rows = convert_formats(args.source / f"format_{version}.csv")
        _dump(
            args.output / f"format_{version}.json",
            {"source": SOURCE, "version": version, "note": "rows [base word, [word forms]]", "rows": rows},
        )
    print(
        f"wrote {args.output}: {sum(len(r) for r in wheels.values())} wheel rows, {len(synonyms)} synonym keys, "
        f"format tables 2025 and 2026"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
