"""GoEmotions (Reddit comments, 27 emotions + neutral, multi-label) → open-vocabulary rows.

Upstream ``{train,dev,test}.tsv`` have no header: ``text<TAB>comma-separated label ids<TAB>comment id``; ids index
``emotions.txt`` (one name per line, 0-based). ``taxonomy="ekman"`` maps names through ``ekman_mapping.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from affectllm.datasets._common import find_file, fix_text, make_row, read_table, read_text_file
from affectllm.errors import InputError

GOEMOTIONS_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


def read_emotion_names(data_dir: Path) -> list[str]:
    path = find_file(data_dir, ("emotions.txt",), "GoEmotions label list")
    names = [line.strip() for line in read_text_file(path).splitlines() if line.strip()]
    if not names:
        raise InputError(path, "no emotion names")
    return names


def read_ekman_mapping(data_dir: Path) -> dict[str, str]:
    """fine emotion → Ekman category (``neutral`` maps to itself)."""
    path = find_file(data_dir, ("ekman_mapping.json",), "GoEmotions Ekman mapping")
    try:
        data = json.loads(read_text_file(path))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg})", line=exc.lineno) from None
    if not isinstance(data, dict):
        raise InputError(path, "expected an object {ekman_category: [emotions]}")
    mapping = {"neutral": "neutral"}
    for category, members in data.items():
        for member in members:
            mapping[str(member)] = str(category)
    return mapping


def load_goemotions(
    data_dir: Path, split: str, taxonomy: str = "fine", drop_neutral: bool = False, min_labels: int = 1
) -> list[dict[str, Any]]:
    """One row per comment: ``labels`` = all annotated emotion names (multi-label), ``label`` = the first.

    ``min_labels`` keeps only comments with at least that many emotions (after ``drop_neutral``): a training
    source of multi-label rows teaches a model to name several emotions when several are there.
    """
    names = read_emotion_names(data_dir)
    if taxonomy not in ("fine", "ekman"):
        raise InputError(None, f"unknown GoEmotions taxonomy {taxonomy!r}; use fine or ekman")
    ekman = read_ekman_mapping(data_dir) if taxonomy == "ekman" else None
    path = find_file(data_dir, (GOEMOTIONS_FILES[split],), f"GoEmotions {split} file")
    table = read_table(
        path, required=("text", "labels", "id"), delimiter="\t", header=("text", "labels", "id")
    )
    rows = []
    for line, row in table:
        labels: list[str] = []
        for raw in row["labels"].split(","):
            raw = raw.strip()
            if not raw.isdigit() or int(raw) >= len(names):
                raise InputError(path, f"label id {raw!r} is not an index into emotions.txt", line=line)
            name = names[int(raw)]
            if ekman is not None:
                name = ekman.get(name, name)
            if name not in labels:
                labels.append(name)
        if drop_neutral:
            # "neutral" is outside the emotion-wheel vocabulary; OV scoring of such items measures nothing.
            labels = [x for x in labels if x != "neutral"]
            if not labels:
                continue
        if len(labels) < min_labels:
            continue
        rows.append(
            make_row(
                row["id"].strip(),
                transcript=fix_text(row["text"]),
                labels=labels,
                label=labels[0] if labels else None,
                dataset="goemotions",
                split=split,
                source=f"{path.name}:{line}",
            )
        )
    return rows


__all__ = ["load_goemotions", "read_ekman_mapping", "read_emotion_names"]
