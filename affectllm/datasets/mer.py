"""Converters for the MER family (Chinese TV/film clips from the MER challenges): OV-MERD, EMER v1/v2, MER2023.

Sample names (``sample_00000055``) are shared across these releases: the OV-MERD and EMER samples are MER2023
*train* samples, so one transcript table serves them all. None of OV-MERD or EMER ships a dev/test split; affectllm
halves them by the parity of SHA-1(name) (even → dev), the rule the shared dev files were cut with.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from affectllm.datasets._common import (
    AUDIO_EXTS,
    VIDEO_EXTS,
    find_file,
    find_media,
    fix_text,
    make_row,
    name_hash,
    openface_csv,
    optional_file,
    parity_split,
    read_table,
)
from affectllm.errors import InputError

MER2023_LABELS: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")

# Where the releases put the OV labels, descriptions and subtitles (MER2025 names first, then affectllm's
# dev/test halves, then the EMER repository's names).
OVMERD_GOLD_FILES = ("track2_train_ovmerd.csv", "ovmerd_gold.csv")
OVMERD_SPLIT_FILES = {"dev": ("gold_dev.csv",), "test": ("gold_test.csv",)}
SUBTITLE_FILES = ("subtitle_chieng.csv", "train.csv")
EMER_V1_FILES = ("gt-eng.csv", "v1_gt_eng.csv")
EMER_V2_FILES = ("final-EMER-reason.csv", "track3_train_ovmerd.csv", "v2_reasons.csv")
# The MER releases may be unpacked into one folder or into sibling folders under one root (the layout of
# affectllm's shared data: ovmerd/, mer2023/, emer/); files are looked up in this order.
_FAMILY_FOLDERS = ("ovmerd", "mer2023", "emer", "dataset-v1", "dataset-v2")


def search_dirs(data_dir: Path) -> list[Path]:
    """``data_dir``, its MER-family subfolders, then the same-named siblings of ``data_dir``."""
    dirs = [data_dir] + [data_dir / f for f in _FAMILY_FOLDERS]
    dirs += [data_dir.parent / f for f in _FAMILY_FOLDERS if data_dir.parent / f != data_dir]
    return [d for d in dirs if d.is_dir()]


_NAME_ALIASES = {"name": ("names", "video_name", "sample")}


def parse_label_cell(value: str, path: Path, line: int) -> list[str]:
    """Parse an OV label cell: a Python/JSON list (``['sad', 'tired']``), a bare bracket list (``[sad, tired]``)
    or a comma-separated string. Prefers affectllm.labels.parse_label_list (the official rule) when present."""
    try:
        from affectllm.labels import parse_label_list
    except ImportError:  # helper A's module is optional at this layer
        parse_label_list = None
    if parse_label_list is not None:
        try:
            return list(parse_label_list(value))
        except Exception as exc:  # the official parser raises on malformed cells; name the line here
            raise InputError(path, f"cannot parse label list {value!r} ({exc})", line=line) from None
    text = value.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = [p for p in text.strip("[]").split(",")]
        if not isinstance(parsed, (list, tuple)):
            raise InputError(path, f"label cell is not a list: {value!r}", line=line)
        items = [str(p) for p in parsed]
    else:
        items = text.replace(";", ",").split(",")
    out: list[str] = []
    for item in items:
        word = item.strip().strip("'\"").strip().lower()
        if word and word not in out:
            out.append(word)
    return out


def _sidecars(data_dir: Path, name: str) -> dict[str, Any]:
    """Media the MER releases ship beside the labels (all optional): video/, audio/, openface_face/."""
    media = find_media(data_dir, name, ("video", "videos", ""), VIDEO_EXTS) or find_media(
        data_dir, name, ("audio", "audios", ""), AUDIO_EXTS
    )
    return {"media": media, "au_csv": openface_csv(data_dir, name)}


def read_subtitles(data_dir: Path, required: bool = False) -> dict[str, dict[str, str]]:
    """name → {"english", "chinese"} from ``subtitle_chieng.csv`` (MER2025) or MER2023 ``train.csv``."""
    path = optional_file(search_dirs(data_dir), SUBTITLE_FILES)
    if path is None:
        if required:
            find_file(search_dirs(data_dir), SUBTITLE_FILES, "subtitle table")
        return {}
    table = read_table(path, required=("name", "english"), aliases=_NAME_ALIASES)
    return {
        row["name"].strip(): {
            "english": fix_text(row.get("english")),
            "chinese": fix_text(row.get("chinese")),
        }
        for _, row in table
    }


def _gold_file(data_dir: Path, split: str) -> tuple[Path, bool]:
    """The OV-MERD label file for ``split`` and whether it still needs the parity filter."""
    if split in OVMERD_SPLIT_FILES:
        path = optional_file(search_dirs(data_dir), OVMERD_SPLIT_FILES[split])
        if path is not None:
            return path, False
    return find_file(
        search_dirs(data_dir), OVMERD_GOLD_FILES + OVMERD_SPLIT_FILES.get(split, ()), "OV-MERD label file"
    ), True


def _in_split(name: str, split: str, needs_filter: bool) -> bool:
    return split == "all" or not needs_filter or parity_split(name) == split


def load_ovmerd(data_dir: Path, split: str, language: str = "english") -> list[dict[str, Any]]:
    """OV-MERD open-vocabulary gold + subtitles (+ EMER v2 description as the reference rationale)."""
    path, needs_filter = _gold_file(data_dir, split)
    table = read_table(path, required=("name", "openset"), aliases=_NAME_ALIASES)
    subtitles = read_subtitles(data_dir)
    reasons = _emer_v2_reasons(data_dir, required=False)
    rows = []
    for line, row in table:
        name = row["name"].strip()
        if not _in_split(name, split, needs_filter):
            continue
        labels = parse_label_cell(row["openset"], path, line)
        sub = subtitles.get(name, {})
        rows.append(
            make_row(
                name,
                transcript=sub.get(language, ""),
                labels=labels,
                rationale=reasons.get(name),
                dataset="ovmerd",
                split=split,
                source=f"{path.name}:{line}",
                **_sidecars(data_dir, name),
            )
        )
    if subtitles == {} and rows:
        # Without subtitles the text-only task has no input at all; say so instead of scoring empty prompts.
        for row in rows:
            row.setdefault("warnings", []).append(
                "no subtitle table found (subtitle_chieng.csv or train.csv)"
            )
    return rows


def _emer_v2_reasons(data_dir: Path, required: bool) -> dict[str, str]:
    path = optional_file(search_dirs(data_dir), EMER_V2_FILES)
    if path is None:
        if required:
            find_file(search_dirs(data_dir), EMER_V2_FILES, "EMER v2 description file")
        return {}
    table = read_table(path, required=("name",), aliases={**_NAME_ALIASES, "english": ("reason",)})
    if table and "english" not in table[0][1]:
        raise InputError(path, "missing column english (or reason)", line=1)
    return {row["name"].strip(): fix_text(row["english"]) for _, row in table}


def load_emer(data_dir: Path, split: str, version: str = "v2") -> list[dict[str, Any]]:
    """EMER: clips with a human (v1) or GPT-4V-drafted, human-checked (v2) cue-level description."""
    if str(version) in ("1", "v1"):
        return _load_emer_v1(data_dir, split)
    if str(version) not in ("2", "v2"):
        raise InputError(None, f"unknown EMER version {version!r}; use v1 or v2")
    path = find_file(search_dirs(data_dir), EMER_V2_FILES, "EMER v2 description file")
    reasons = _emer_v2_reasons(data_dir, required=True)
    gold: dict[str, list[str]] = {}
    gold_path = optional_file(search_dirs(data_dir), OVMERD_GOLD_FILES + OVMERD_SPLIT_FILES.get(split, ()))
    if gold_path is not None:
        for line, row in read_table(gold_path, required=("name", "openset"), aliases=_NAME_ALIASES):
            gold[row["name"].strip()] = parse_label_cell(row["openset"], gold_path, line)
    subtitles = read_subtitles(data_dir)
    rows = []
    for name, reason in reasons.items():
        if split != "all" and parity_split(name) != split:
            continue
        rows.append(
            make_row(
                name,
                transcript=subtitles.get(name, {}).get("english", ""),
                labels=gold.get(name, []),
                rationale=reason,
                dataset="emer-v2",
                split=split,
                source=path.name,
                **_sidecars(data_dir, name),
            )
        )
    return rows


def _load_emer_v1(data_dir: Path, split: str) -> list[dict[str, Any]]:
    path = find_file(search_dirs(data_dir), EMER_V1_FILES, "EMER v1 annotation file")
    table = read_table(path, required=("name", "emotions", "subtitles", "reasons"), aliases=_NAME_ALIASES)
    rows = []
    for line, row in table:
        name = row["name"].strip()
        if split != "all" and parity_split(name) != split:
            continue
        label = row["emotions"].strip().lower()
        if not label:
            raise InputError(path, "empty emotions cell", line=line)
        rows.append(
            make_row(
                name,
                transcript=fix_text(row["subtitles"]),
                labels=[label],
                label=label,
                rationale=fix_text(row["reasons"]),
                dataset="emer-v1",
                split=split,
                source=f"{path.name}:{line}",
                **_sidecars(data_dir, name),
            )
        )
    return rows


MER2023_FILES = {
    "train": ("train.csv", "train-label.csv"),
    "dev": ("train.csv", "train-label.csv"),
    "test1": ("test1.csv", "test1-label.csv"),
    "test2": ("test2.csv", "test2-label.csv"),
    "test3": ("test3.csv", "test3-label.csv"),
}


def mer2023_fold(name: str) -> str:
    """MER2023 has no dev set (the baseline cross-validates on train); affectllm holds out SHA-1 mod 5 == 0."""
    return "dev" if name_hash(name) % 5 == 0 else "train"


def load_mer2023(data_dir: Path, split: str, language: str = "english") -> list[dict[str, Any]]:
    """MER2023 6-way discrete labels (neutral, angry, happy, sad, worried, surprise) with subtitles."""
    path = find_file(search_dirs(data_dir), MER2023_FILES[split], f"MER2023 {split} label table")
    table = read_table(
        path, required=("name", "emotion"), aliases={**_NAME_ALIASES, "emotion": ("discrete",)}
    )
    subtitles = None
    rows = []
    for line, row in table:
        name = row["name"].strip()
        if split in ("train", "dev") and mer2023_fold(name) != split:
            continue
        label = row["emotion"].strip().lower()
        if label not in MER2023_LABELS:
            raise InputError(
                path, f"unknown MER2023 emotion {label!r}; expected one of {MER2023_LABELS}", line=line
            )
        if language in row:
            transcript = fix_text(row[language])
        else:
            if subtitles is None:
                subtitles = read_subtitles(data_dir)
            transcript = subtitles.get(name, {}).get(language, "")
        valence = row.get("valence", "").strip()
        rows.append(
            make_row(
                name,
                transcript=transcript,
                labels=[label],
                label=label,
                dataset="mer2023",
                split=split,
                source=f"{path.name}:{line}",
                valence=float(valence) if _is_number(valence) else None,
                **_sidecars(data_dir, name),
            )
        )
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def ovmerd_names(data_dir: str | Path) -> set[str]:
    """All OV-MERD sample names found in ``data_dir`` — pass as ``exclude_ids`` when training on MER2023 so the
    OV-MERD evaluation clips never leak into training."""
    data_dir = Path(data_dir)
    names: set[str] = set()
    for folder in search_dirs(data_dir):
        for candidate in (*OVMERD_GOLD_FILES, "gold_dev.csv", "gold_test.csv"):
            path = folder / candidate
            if path.is_file():
                names.update(r["name"].strip() for _, r in read_table(path, ("name",), aliases=_NAME_ALIASES))
    return names


__all__ = ["MER2023_LABELS", "load_emer", "load_mer2023", "load_ovmerd", "ovmerd_names", "parse_label_cell"]
