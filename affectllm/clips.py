"""The one function that turns a dataset row, a manifest row or a path into the Clip a prompt is built from.

``chat``, ``predict``, ``eval run``, the SFT and GRPO data builders and the benches all call
:func:`clip_from_row` (or :func:`clip_from_path`), so the same sample always yields the same evidence, speaker
and context lines, whoever asks. A row is a plain mapping:

``{"id", "transcript"?, "speaker"?, "context"?, "media"?, "au_csv"?, "captions"?, "cues"?, "sex"?}``

- ``cues`` (or an entry of ``precomputed``, e.g. ``affectllm textualize --json`` output) is used as is;
- otherwise the ``ClipSettings.source`` decides between what was said (linguistic cues) and textualized media;
- ``transcript`` is text; a ``transcript_file`` key names a text file instead (it must exist).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from affectllm.errors import InputError
from affectllm.schema import Clip, Cue
from affectllm.settings import ClipSettings

ID_KEYS = ("id", "name", "clip", "clip_id")
# Manifests written by other tools name the media file in several ways.
MEDIA_KEYS = ("media", "path", "video", "audio", "file")
TRANSCRIPT_FILE_RE = re.compile(r"^\S+\.(?:txt|srt|vtt)$", re.I)


def row_id(row: Mapping[str, Any]) -> str:
    """A row's id: the first of ``id``/``name``/``clip``/``clip_id``, else its media file's stem."""
    for key in ID_KEYS:
        value = row.get(key)
        if value in (None, ""):
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InputError(
                None, f"row {key!r} must be a string or a whole number, not {type(value).__name__}"
            )
        return str(value)
    for key in MEDIA_KEYS:
        if row.get(key):
            return Path(str(row[key])).stem
    raise InputError(None, f"row has no id (one of {', '.join(ID_KEYS)}) and no media path")


def _media(row: Mapping[str, Any]) -> str | None:
    return next((str(row[k]) for k in MEDIA_KEYS if row.get(k)), None)


def _context(row: Mapping[str, Any]) -> list[dict[str, str]]:
    """Dialogue context as ``[{"speaker", "text"}]``; accepts speaker/role/name and text/content/utterance."""
    turns: list[dict[str, str]] = []
    context = row.get("context") or []
    if not isinstance(context, list):
        raise InputError(None, f"sample {row_id(row)}: context must be a list of turns")
    for i, turn in enumerate(context):
        if isinstance(turn, str):
            turns.append({"speaker": "Speaker", "text": turn})
        elif isinstance(turn, Mapping):
            speaker = turn.get("speaker") or turn.get("role") or turn.get("name") or "Speaker"
            text = turn.get("text", turn.get("content", turn.get("utterance", "")))
            turns.append({"speaker": str(speaker), "text": str(text)})
        else:
            raise InputError(
                None, f"sample {row_id(row)}: context turn {i + 1} must be a string or a mapping"
            )
    return turns


def _transcript(row: Mapping[str, Any]) -> tuple[str | None, Path | None]:
    """The row's transcript as ``(text, None)`` or, when it names a file, ``(None, path)``: a file goes to the
    transcript reader whole, so time-stamped lines (``[mm:ss.s] words``) keep their times."""
    text = row.get("transcript")
    if text is not None and not isinstance(text, str):
        raise InputError(None, f"sample {row_id(row)}: transcript must be text, not {type(text).__name__}")
    file = row.get("transcript_file")
    if not file and text and TRANSCRIPT_FILE_RE.match(text.strip()):
        # A manifest that names a transcript file in "transcript": read the file; a missing one is an error,
        # never a "transcript" made of the path's own characters.
        file = text.strip()
    if file:
        path = Path(str(file)).expanduser()
        if not path.is_file():
            raise InputError(path, "transcript file not found")
        return None, path
    text = " ".join((text or "").split())
    return text or None, None


def _transcript_clip(clip_id: str, text: str | None, path: Path | None, media: str | None) -> Clip:
    """A clip whose evidence is what was said, read as the textualize pipeline reads a transcript."""
    from affectllm.textualize.pipeline import transcript_cues

    cues = transcript_cues(path=path) if path is not None else transcript_cues(text)
    return Clip(clip_id, cues, media, " ".join(str(c.value) for c in cues) or None)


def _finish(clip: Clip, row: Mapping[str, Any], settings: ClipSettings, clip_id: str) -> Clip:
    clip.clip_id = clip_id
    clip.speaker = str(row["speaker"]) if row.get("speaker") else clip.speaker
    clip.context = _context(row) if settings.context else []
    return clip


def clip_from_row(
    row: Mapping[str, Any],
    settings: ClipSettings | None = None,
    precomputed: Mapping[str, Clip] | None = None,
) -> Clip:
    """The Clip for one row (see the module docstring); raises ``InputError`` for a row that gives no evidence."""
    settings = settings or ClipSettings()
    clip_id = row_id(row)
    transcript, transcript_file = _transcript(row)
    if transcript_file is not None and (row.get("cues") or (precomputed and clip_id in precomputed)):
        transcript = _transcript_clip(clip_id, None, transcript_file, None).transcript
    if precomputed is not None and clip_id in precomputed:
        given = precomputed[clip_id]
        # A copy (the cache is shared), without the speaker and context another row may have given it.
        lists = {"cues": list(given.cues), "warnings": list(given.warnings), "signals": dict(given.signals)}
        clip = replace(given, **lists, speaker=None, context=[])
        if settings.source != "media" and transcript and not clip.transcript:
            clip.transcript = transcript
        return _finish(clip, row, settings, clip_id)
    if row.get("cues"):
        try:
            cues = [c if isinstance(c, Cue) else Cue.from_dict(dict(c)) for c in row["cues"]]
        except (TypeError, ValueError) as exc:
            raise InputError(None, f"sample {clip_id}: bad cue ({exc})") from None
        clip = Clip(
            clip_id, cues, _media(row), transcript, row.get("duration"), list(row.get("warnings") or [])
        )
        return _finish(clip, row, settings, clip_id)

    has_media = bool(_media(row) or row.get("au_csv") or row.get("captions"))
    if settings.source == "transcript" or (settings.source == "auto" and not has_media):
        if not transcript and transcript_file is None:
            raise InputError(
                None, f"sample {clip_id}: no transcript (and the input source is the transcript)"
            )
        clip = _transcript_clip(clip_id, transcript, transcript_file, _media(row))
        if not clip.cues:
            raise InputError(transcript_file, "transcript is empty")
        return _finish(clip, row, settings, clip_id)
    if not has_media:
        raise InputError(
            None, f"sample {clip_id}: no media, AU CSV or captions for an input that reads media"
        )

    from affectllm.textualize import textualize_clip

    manifest: dict[str, Any] = {"id": clip_id, "media": _media(row)}
    for key in ("au_csv", "captions"):
        if row.get(key):
            manifest[key] = row[key]
    if transcript_file is not None or transcript:
        manifest["transcript"] = str(transcript_file) if transcript_file is not None else transcript
    # A given transcript is authoritative for the words; the pipeline still runs ASR (when asked) for the
    # speaking-rate and pause cues its word timings give.
    clip = textualize_clip(
        manifest,
        modalities=settings.extractors,
        asr=settings.asr,
        asr_model=settings.asr_model,
        use_cache=settings.use_cache,
        sex=row.get("sex") or None,
        **dict(settings.options),
    )
    if not clip.cues and not clip.transcript:
        reasons = "; ".join(clip.warnings) or "no cues and no transcript"
        raise InputError(clip.media or clip_id, f"no evidence could be extracted ({reasons})")
    return _finish(clip, row, settings, clip_id)


def clip_from_path(
    path: str | Path,
    settings: ClipSettings | None = None,
    au_csv: str | Path | None = None,
    captions: str | Path | None = None,
    transcript_file: str | Path | None = None,
) -> Clip:
    """The Clip for a file on disk: a video or audio file (with sidecars found by name or given), or a
    transcript-only ``.txt``."""
    settings = settings or ClipSettings()
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(path, "clip not found")
    if path.suffix.lower() == ".txt" and not path.name.lower().endswith(".transcript.txt"):
        row = {"id": path.stem, "transcript_file": str(path.resolve())}
        return clip_from_row(row, settings.replace(source="transcript"))
    from affectllm.textualize.pipeline import resolve_inputs

    # The sidecars given, else those found by name (<stem>.openface.csv, .captions.json, .transcript.txt).
    found = resolve_inputs(str(path), au_csv, captions, transcript_file)
    row = {"id": path.stem, "media": str(path.resolve())}
    for key, value in (
        ("au_csv", found.au_csv),
        ("captions", found.captions),
        ("transcript_file", found.transcript),
    ):
        if value is not None:
            row[key] = str(value)
    return clip_from_row(row, settings.replace(source="media"))


def load_clips_jsonl(path: str | Path) -> dict[str, Clip]:
    """Clips from an ``affectllm textualize --json``/batch JSONL file, keyed by clip id (and by the manifest
    ``id`` a batch record also carries). Failure records are skipped: their clips have no evidence."""
    from affectllm.batch import read_jsonl

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "cues file not found")
    try:
        records = read_jsonl(path)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    clips: dict[str, Clip] = {}
    for lineno, record in enumerate(records, 1):
        if not isinstance(record, dict) or "error" in record:
            continue
        try:
            clip = Clip.from_dict({**record, "clip": record.get("clip") or record.get("id")})
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(path, f"not a textualized clip record ({exc})", line=lineno) from None
        clips[clip.clip_id] = clip
        if record.get("id") not in (None, ""):
            clips[str(record["id"])] = clip
    return clips


__all__ = ["ID_KEYS", "MEDIA_KEYS", "clip_from_path", "clip_from_row", "load_clips_jsonl", "row_id"]
