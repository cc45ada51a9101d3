"""Acted emotional-speech corpora: EmoDB (German), RAVDESS and CREMA-D (English). Media = the audio file.

Labels come from ``labels.csv`` when the folder has one (EmoDB as prepared in affectllm's shared data), otherwise
from the corpora's documented file-name codes. None of the three ships a dev/test split; affectllm splits them by
speaker (``train``/``dev``, see ``speaker_split`` and the data cards) so a recipe that trains on ``train`` never
hears a voice that the ``*-speech`` tasks evaluate on ``dev``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from affectllm.datasets._common import make_row, optional_file, read_table
from affectllm.errors import InputError

# EmoDB file names: speaker(2) text(3) emotion letter (German initial) version letter, e.g. 03a01Fa.wav.
EMODB_CODES = {
    "W": "anger",  # Wut/Ärger
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fear",  # Angst
    "F": "happiness",  # Freude
    "T": "sadness",  # Trauer
    "N": "neutral",
}
EMODB_LABELS: tuple[str, ...] = tuple(EMODB_CODES.values())


def _code_table(text: str) -> dict[str, str]:
    """``code text`` lines → {code: text}; keeps the corpora's fixed sentence lists readable as plain text."""
    pairs = (line.strip().split(" ", 1) for line in text.strip().splitlines())
    return {code: sentence for code, sentence in pairs}


EMODB_TEXTS = _code_table(
    """
a01 Der Lappen liegt auf dem Eisschrank.
a02 Das will sie am Mittwoch abgeben.
a04 Heute abend könnte ich es ihm sagen.
a05 Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.
a07 In sieben Stunden wird es soweit sein.
b01 Was sind denn das für Tüten, die da unter dem Tisch stehen?
b02 Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.
b03 An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.
b09 Ich will das eben wegbringen und dann mit Karl was trinken gehen.
b10 Die wird auf dem Platz sein, wo wir sie immer hinlegen.
"""
)

RAVDESS_EMOTIONS = dict(
    zip(
        ("01", "02", "03", "04", "05", "06", "07", "08"),
        ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
        strict=True,
    )
)
RAVDESS_LABELS: tuple[str, ...] = tuple(RAVDESS_EMOTIONS.values())
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}

CREMAD_EMOTIONS = dict(
    zip(
        ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD"),
        ("anger", "disgust", "fear", "happy", "neutral", "sad"),
        strict=True,
    )
)
CREMAD_LABELS: tuple[str, ...] = tuple(CREMAD_EMOTIONS.values())
CREMAD_SENTENCES = _code_table(
    """
IEO It's eleven o'clock.
TIE That is exactly what happened.
IOM I'm on my way to the meeting.
IWW I wonder what this is about.
TAI The airplane is almost full.
MTI Maybe tomorrow it will be cold.
IWL I would like a new alarm clock.
ITH I think I have a doctor's appointment.
DFA Don't forget a jacket.
ITS I think I've seen this before.
TSI The surface is slick.
WSI We'll stop in a couple of minutes.
"""
)

# Speaker-independent dev sets. None of the three corpora ships a split, and a model that has heard a speaker in
# training scores that speaker's voice far better, so train and dev never share a speaker (see the data cards):
# EmoDB speakers 13 (female) and 15 (male) of 10; RAVDESS actors 01-04 (two male, two female) of 24; CREMA-D
# actors 1001-1018 of 91. Everything else is train; ``all`` is both and, like a test set, needs ``final``.
EMODB_DEV_SPEAKERS = frozenset({"13", "15"})
RAVDESS_DEV_ACTORS = range(1, 5)
CREMAD_DEV_ACTORS = range(1001, 1019)
SPEECH_SPLITS: tuple[str, ...] = ("train", "dev", "all")


def speaker_split(dataset: str, speaker: str) -> str:
    """``"dev"`` or ``"train"`` for a speaker id as the converters write it (``"03"``, ``"actor01"``, ``"1001"``)."""
    digits = "".join(ch for ch in speaker if ch.isdigit())
    if dataset == "emodb":
        dev = speaker in EMODB_DEV_SPEAKERS
    elif dataset == "ravdess":
        dev = bool(digits) and int(digits) in RAVDESS_DEV_ACTORS
    elif dataset == "cremad":
        dev = bool(digits) and int(digits) in CREMAD_DEV_ACTORS
    else:
        raise ValueError(f"no speaker split for dataset {dataset!r}")
    return "dev" if dev else "train"


def _in_split(rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    if split == "all":
        return rows
    return [r for r in rows if speaker_split(r["dataset"], str(r["speaker"] or "")) == split]


def _wavs(data_dir: Path, subfolders: tuple[str, ...]) -> list[Path]:
    for folder in subfolders:
        base = data_dir / folder if folder else data_dir
        found = sorted(p for p in base.rglob("*.wav") if p.is_file()) if base.is_dir() else []
        if found:
            return found
    return []


def load_emodb(data_dir: Path, split: str) -> list[dict[str, Any]]:
    labels_csv = optional_file(data_dir, ("labels.csv",))
    rows = []
    if labels_csv is not None:
        for line, row in read_table(labels_csv, required=("file", "emotion")):
            wav = data_dir / row["file"].strip()
            if not wav.is_file():
                wav = data_dir / "wav" / row["file"].strip()
            if not wav.is_file():
                raise InputError(labels_csv, f"audio file {row['file']!r} not found", line=line)
            label = row["emotion"].strip().lower()
            if label not in EMODB_LABELS:
                raise InputError(labels_csv, f"unknown EmoDB emotion {label!r}", line=line)
            rows.append(_emodb_row(wav, label, split, f"{labels_csv.name}:{line}", row))
        return _in_split(rows, split)
    wavs = _wavs(data_dir, ("wav", ""))
    if not wavs:
        raise InputError(
            data_dir, "no EmoDB audio found: expected wav/*.wav or *.wav (and optionally labels.csv)"
        )
    for wav in wavs:
        stem = wav.stem
        if len(stem) != 7 or stem[5] not in EMODB_CODES:
            raise InputError(
                wav, "not an EmoDB file name (speaker, text id, emotion letter, version: 03a01Fa)"
            )
        rows.append(_emodb_row(wav, EMODB_CODES[stem[5]], split, wav.name, {}))
    return _in_split(rows, split)


def _emodb_row(wav: Path, label: str, split: str, source: str, meta: dict[str, str]) -> dict[str, Any]:
    stem = wav.stem
    text_id = meta.get("text_id") or stem[2:5]
    return make_row(
        stem,
        transcript=meta.get("text_de") or EMODB_TEXTS.get(text_id, ""),
        labels=[label],
        label=label,
        media=str(wav),
        # labels.csv may write speaker 3 for the file name's "03"; the speaker split needs one spelling.
        speaker=(meta.get("speaker") or stem[:2]).strip().zfill(2),
        dataset="emodb",
        split=split,
        source=source,
        sex=meta.get("gender") or meta.get("sex") or None,
        language="de",
    )


def load_ravdess(data_dir: Path, split: str, include_song: bool = False) -> list[dict[str, Any]]:
    """RAVDESS: ``MM-VV-EE-II-SS-RR-AA.wav`` (modality, vocal channel, emotion, intensity, statement,
    repetition, actor; odd actors are male)."""
    rows = []
    wavs = _wavs(data_dir, ("",))
    if not wavs:
        raise InputError(data_dir, "no RAVDESS .wav files found (Actor_NN/*.wav or *.wav)")
    for wav in wavs:
        parts = wav.stem.split("-")
        if len(parts) != 7 or parts[2] not in RAVDESS_EMOTIONS or not parts[6].isdigit():
            raise InputError(wav, "not a RAVDESS file name (e.g. 03-01-05-02-01-01-12.wav)")
        if parts[1] == "02" and not include_song:
            continue
        label = RAVDESS_EMOTIONS[parts[2]]
        actor = int(parts[6])
        rows.append(
            make_row(
                wav.stem,
                transcript=RAVDESS_STATEMENTS.get(parts[4], ""),
                labels=[label],
                label=label,
                media=str(wav),
                speaker=f"actor{actor:02d}",
                dataset="ravdess",
                split=split,
                source=wav.name,
                sex="male" if actor % 2 else "female",
                intensity="strong" if parts[3] == "02" else "normal",
                language="en",
            )
        )
    return _in_split(rows, split)


def load_cremad(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """CREMA-D: ``AudioWAV/{actor}_{sentence}_{emotion}_{level}.wav`` (acted, intended emotion)."""
    wavs = _wavs(data_dir, ("AudioWAV", ""))
    if not wavs:
        raise InputError(data_dir, "no CREMA-D audio found: expected AudioWAV/*.wav")
    rows = []
    for wav in wavs:
        parts = wav.stem.split("_")
        if len(parts) != 4 or parts[2] not in CREMAD_EMOTIONS:
            raise InputError(wav, "not a CREMA-D file name (e.g. 1001_DFA_ANG_XX.wav)")
        label = CREMAD_EMOTIONS[parts[2]]
        rows.append(
            make_row(
                wav.stem,
                transcript=CREMAD_SENTENCES.get(parts[1], ""),
                labels=[label],
                label=label,
                media=str(wav),
                speaker=parts[0],
                dataset="cremad",
                split=split,
                source=wav.name,
                level=parts[3],
                language="en",
            )
        )
    return _in_split(rows, split)


__all__ = [
    "CREMAD_LABELS",
    "EMODB_LABELS",
    "RAVDESS_LABELS",
    "SPEECH_SPLITS",
    "load_cremad",
    "load_emodb",
    "load_ravdess",
    "speaker_split",
]
