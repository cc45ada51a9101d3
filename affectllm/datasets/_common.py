"""Shared helpers for the dataset converters: robust table reading, text repair, split rules, media lookup.

Converters read upstream files exactly as the data cards describe them and use only the standard library, so
``affectllm eval run`` needs no pandas. Every problem with a file is an ``InputError`` naming the file (and line).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from affectllm.errors import InputError

# Windows-1252 code points that old exports stored as C1 control characters (U+0080-U+009F). MELD's original
# CSVs carried eight of these (declare-lab/MELD PR #28); a UTF-8 reader shows them as invisible controls.
_C1_RANGE = re.compile("[\u0080-\u009f]")
# A run that looks like UTF-8 bytes decoded as Windows-1252 ("â€™" for "’", "Ã©" for "é").
_MOJIBAKE_RUN = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]{1,3}"
)


def _c1_to_cp1252(match: re.Match[str]) -> str:
    byte = bytes([ord(match.group(0))])
    try:
        return byte.decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d are undefined in cp1252
        return ""


def _undo_mojibake(match: re.Match[str]) -> str:
    run = match.group(0)
    try:
        return run.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return run


def fix_text(text: str | None) -> str:
    """Repair the encoding damage found in released emotion corpora and normalise whitespace.

    Handles C1 control characters that stand for cp1252 punctuation, UTF-8 read as cp1252 ("â€™" → "’"),
    and non-breaking spaces. Text that is already clean is returned unchanged (apart from trimmed ends).
    """
    if not text:
        return ""
    if _C1_RANGE.search(text):
        text = _C1_RANGE.sub(_c1_to_cp1252, text)
    if _MOJIBAKE_RUN.search(text):
        text = _MOJIBAKE_RUN.sub(_undo_mojibake, text)
    return text.replace("\u00a0", " ").strip()


def read_text_file(path: Path) -> str:
    """Decode a text file: UTF-8 (with or without BOM) first, Windows-1252 as the fallback older releases need."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def read_table(
    path: Path,
    required: Sequence[str] = (),
    delimiter: str = ",",
    header: Sequence[str] | None = None,
    aliases: dict[str, Sequence[str]] | None = None,
) -> list[tuple[int, dict[str, str]]]:
    """Read a CSV/TSV file into ``(line_number, row)`` pairs with the ``required`` columns checked.

    ``header`` names the columns of header-less files (GoEmotions). ``aliases`` lets a canonical column accept
    the spellings different releases use (``{"name": ["names", "video_name"]}``); rows are returned under the
    canonical names. Line numbers are physical lines in the file, so errors point at the right place even when
    quoted fields span several lines.
    """
    text = read_text_file(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, dict[str, str]]] = []
    if header is None:
        try:
            columns = [c.strip() for c in next(reader)]
        except StopIteration:
            raise InputError(path, "file is empty") from None
        except csv.Error as exc:
            raise InputError(path, f"malformed header ({exc})", line=1) from None
    else:
        columns = list(header)
    rename: dict[str, str] = {}
    for canonical, spellings in (aliases or {}).items():
        if canonical in columns:
            continue
        for spelling in spellings:
            if spelling in columns:
                rename[spelling] = canonical
                break
    columns = [rename.get(c, c) for c in columns]
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(
            path,
            f"missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}",
            line=None if header is not None else 1,
        )
    line_start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputError(path, f"malformed CSV ({exc})", line=reader.line_num) from None
        if not values or all(not v.strip() for v in values):
            line_start = reader.line_num + 1
            continue
        if len(values) > len(columns):
            raise InputError(
                path, f"{len(values)} fields but the header has {len(columns)} columns", line=line_start
            )
        row = dict(zip(columns, values + [""] * (len(columns) - len(values)), strict=True))
        rows.append((line_start, row))
        line_start = reader.line_num + 1
    return rows


def _as_dirs(data_dir: Path | Sequence[Path]) -> list[Path]:
    return [data_dir] if isinstance(data_dir, Path) else list(data_dir)


def optional_file(data_dir: Path | Sequence[Path], candidates: Sequence[str]) -> Path | None:
    """The first of ``candidates`` that exists, trying each directory in turn (``data_dir`` may be a list)."""
    for folder in _as_dirs(data_dir):
        for name in candidates:
            path = folder / name
            if path.is_file():
                return path
    return None


def find_file(data_dir: Path | Sequence[Path], candidates: Sequence[str], what: str) -> Path:
    """Like ``optional_file`` but an InputError naming the folder and the expected file names when absent."""
    path = optional_file(data_dir, candidates)
    if path is None:
        expected = " or ".join(candidates)
        raise InputError(_as_dirs(data_dir)[0], f"{what} not found: expected {expected} (see the data card)")
    return path


def check_data_dir(data_dir: str | Path) -> Path:
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise InputError(
            path, "data directory does not exist (pass --data-dir with the dataset's upstream files)"
        )
    return path


def name_hash(name: str) -> int:
    """A platform-independent hash of a sample name; the basis of every derived split (see the data cards)."""
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest(), 16)


def parity_split(name: str) -> str:
    """Half-split used for OV-MERD and EMER, which ship without dev/test: even SHA-1 → dev, odd → test."""
    return "dev" if name_hash(name) % 2 == 0 else "test"


@functools.lru_cache(maxsize=64)
def _file_names(folder: str) -> frozenset[str]:
    # One listing per folder instead of a stat per row and extension: converters look up tens of
    # thousands of optional media files, mostly absent.
    try:
        return frozenset(entry.name for entry in os.scandir(folder) if entry.is_file())
    except OSError:
        return frozenset()


def forget_file_listings() -> None:
    """Drop cached folder listings, so media added since the last conversion are found."""
    _file_names.cache_clear()


def find_media(data_dir: Path, stem: str, folders: Iterable[str], exts: Iterable[str]) -> str | None:
    """The first ``folder/stem.ext`` that exists under ``data_dir`` (media are optional sidecars)."""
    for folder in folders:
        base = data_dir / folder if folder else data_dir
        names = _file_names(str(base))
        for ext in exts:
            if f"{stem}{ext}" in names:
                return str(base / f"{stem}{ext}")
    return None


VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".m4a", ".ogg")


def openface_csv(
    data_dir: Path, stem: str, folders: Sequence[str] = ("openface_face", "openface")
) -> str | None:
    """An OpenFace FeatureExtraction CSV for ``stem``: ``folder/stem.csv`` or ``folder/stem/stem.csv``."""
    for folder in folders:
        for candidate in (data_dir / folder / f"{stem}.csv", data_dir / folder / stem / f"{stem}.csv"):
            if candidate.is_file():
                return str(candidate)
    return None


def make_row(
    row_id: str,
    *,
    transcript: str = "",
    labels: Sequence[str] = (),
    label: str | None = None,
    context: Sequence[dict[str, str]] = (),
    media: str | None = None,
    au_csv: str | None = None,
    rationale: str | None = None,
    speaker: str | None = None,
    dataset: str,
    split: str,
    source: str,
    **extra: Any,
) -> dict[str, Any]:
    """One clip-manifest row; every converter builds rows through this so all carry the same keys."""
    out: dict[str, Any] = {
        "id": row_id,
        "transcript": transcript,
        "labels": list(labels),
        "label": label,
        "context": [dict(turn) for turn in context],
        "media": media,
        "au_csv": au_csv,
        "rationale": rationale,
        "speaker": speaker,
        "dataset": dataset,
        "split": split,
        "source": source,
    }
    out.update(extra)
    return out
