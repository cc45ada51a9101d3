"""Converters for the two *Friends* dialogue corpora: MELD and EmoryNLP (both as distributed by declare-lab/MELD).

Each utterance becomes one row; the preceding turns of the same dialogue (MELD ``Dialogue_ID``; EmoryNLP
season/episode/``Scene_ID``) become its ``context`` with speakers, ordered by ``Utterance_ID``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Any

from affectllm.datasets._common import VIDEO_EXTS, find_file, find_media, fix_text, make_row, read_table
from affectllm.errors import InputError

MELD_LABELS: tuple[str, ...] = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
MELD_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
# Folders of MELD.Raw's clips (dia{D}_utt{U}.mp4), per split.
MELD_VIDEO_FOLDERS = {
    "train": ("train_splits", "train"),
    "dev": ("dev_splits_complete", "dev_splits", "dev"),
    "test": ("output_repeated_splits_test", "test_splits", "test"),
}

EMORYNLP_LABELS: tuple[str, ...] = ("neutral", "joyful", "peaceful", "powerful", "scared", "mad", "sad")
EMORYNLP_FILES = {
    "train": "emorynlp_train_final.csv",
    "dev": "emorynlp_dev_final.csv",
    "test": "emorynlp_test_final.csv",
}


def _int(value: str, path: Path, line: int, column: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise InputError(path, f"column {column} is not an integer: {value!r}", line=line) from None


def _with_context(
    utterances: list[dict[str, Any]], dialogue_key: str, max_turns: int | None
) -> list[dict[str, Any]]:
    """Attach each utterance's preceding turns (same dialogue, lower Utterance_ID) as ``context``."""
    dialogues: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for utt in utterances:
        dialogues[utt[dialogue_key]].append(utt)
    for turns in dialogues.values():
        turns.sort(key=lambda u: u["_utt"])
        for i, utt in enumerate(turns):
            previous = turns[:i] if max_turns is None else turns[max(0, i - max_turns) : i]
            utt["context"] = [{"speaker": p["speaker"] or "", "text": p["transcript"]} for p in previous]
    for utt in utterances:
        utt.pop("_utt", None)
    return utterances


def _utterance(
    row: dict[str, str],
    *,
    row_id: str,
    label: str,
    utt: int,
    speaker: str | None,
    dataset: str,
    split: str,
    source: str,
    times: tuple[str, str],
    **extra: Any,
) -> dict[str, Any]:
    """One utterance row of either corpus; ``times`` names the corpus's start/end columns."""
    out = make_row(
        row_id,
        transcript=fix_text(row["Utterance"]),
        labels=[label],
        label=label,
        speaker=speaker,
        dataset=dataset,
        split=split,
        source=source,
        start=(row.get(times[0]) or "").strip() or None,
        end=(row.get(times[1]) or "").strip() or None,
        **extra,
    )
    out["_utt"] = utt  # ordering key for _with_context, removed there
    return out


def _label(row: dict[str, str], labels: tuple[str, ...], corpus: str, path: Path, line: int) -> str:
    label = row["Emotion"].strip().lower()
    if label not in labels:
        raise InputError(path, f"unknown {corpus} emotion {row['Emotion']!r}", line=line)
    return label


def load_meld(data_dir: Path, split: str, context_turns: int | None = None) -> list[dict[str, Any]]:
    """MELD utterances with 7-way emotion (and sentiment); media = MELD.Raw clip when present."""
    path = find_file(data_dir, (MELD_FILES[split],), f"MELD {split} file")
    table = read_table(path, required=("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID"))
    rows = []
    for line, row in table:
        label = _label(row, MELD_LABELS, "MELD", path, line)
        dia = _int(row["Dialogue_ID"], path, line, "Dialogue_ID")
        utt = _int(row["Utterance_ID"], path, line, "Utterance_ID")
        row_id = f"dia{dia}_utt{utt}"
        rows.append(
            _utterance(
                row,
                row_id=row_id,
                label=label,
                utt=utt,
                speaker=fix_text(row["Speaker"]) or None,
                dataset="meld",
                split=split,
                source=f"{path.name}:{line}",
                times=("StartTime", "EndTime"),
                media=find_media(data_dir, row_id, MELD_VIDEO_FOLDERS[split], VIDEO_EXTS),
                sentiment=(row.get("Sentiment") or "").strip().lower() or None,
                dialogue_id=dia,
            )
        )
    return _with_context(rows, "dialogue_id", context_turns)


def _emorynlp_speakers(value: str, path: Path, line: int) -> list[str]:
    """EmoryNLP stores speakers as a Python list literal (``['Rachel Green']``); a few turns have several."""
    text = value.strip()
    if not text.startswith("["):
        return [fix_text(text)] if text else []
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise InputError(path, f"cannot parse Speaker {value!r}", line=line) from None
    return [fix_text(str(s)) for s in parsed]


def load_emorynlp(data_dir: Path, split: str, context_turns: int | None = None) -> list[dict[str, Any]]:
    """EmoryNLP utterances with the 7-way Willcox feeling-wheel labels (lower-cased)."""
    path = find_file(data_dir, (EMORYNLP_FILES[split],), f"EmoryNLP {split} file")
    table = read_table(
        path, required=("Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode")
    )
    rows = []
    for line, row in table:
        label = _label(row, EMORYNLP_LABELS, "EmoryNLP", path, line)
        season = _int(row["Season"], path, line, "Season")
        episode = _int(row["Episode"], path, line, "Episode")
        scene = _int(row["Scene_ID"], path, line, "Scene_ID")
        utt = _int(row["Utterance_ID"], path, line, "Utterance_ID")
        # Scene_ID restarts in every episode, so the dialogue is (season, episode, scene).
        dialogue = f"s{season:02d}_e{episode:02d}_c{scene:02d}"
        rows.append(
            _utterance(
                row,
                row_id=f"{dialogue}_u{utt:03d}",
                label=label,
                utt=utt,
                speaker=" & ".join(_emorynlp_speakers(row["Speaker"], path, line)) or None,
                dataset="emorynlp",
                split=split,
                source=f"{path.name}:{line}",
                times=("Start_Time", "End_Time"),
                dialogue_id=dialogue,
            )
        )
    return _with_context(rows, "dialogue_id", context_turns)


__all__ = ["EMORYNLP_LABELS", "MELD_LABELS", "load_emorynlp", "load_meld"]
