"""Textualize one clip or a batch: find its inputs, run the extractors, cache the result.

A clip is a video, an audio file, or a transcript-only item, plus optional sidecars found by name next to
the media (or given explicitly):

- ``<stem>.openface.csv`` / ``<stem>.au.csv`` — OpenFace 2.x or py-feat AU CSV → facial cues;
- ``<stem>.captions.json`` / ``<stem>.captions.txt`` — scene captions → visual-scene cues;
- ``<stem>.transcript.txt`` — what was said → linguistic cues (replaces the ASR transcript).

One extractor failing (e.g. a video with no audio track) becomes a ``Clip.warnings`` entry; only a clip
from which nothing at all could be extracted raises :class:`~affectllm.errors.InputError`. Results are
cached per clip under ``user_cache_dir()/textualize``, keyed by the inputs' content hashes, the options and
the affectllm version, so a rerun does no work twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectllm import __version__
from affectllm.errors import InputError
from affectllm.registry import Registry
from affectllm.resources import user_cache_dir
from affectllm.schema import LINGUISTIC, Clip, Cue
from affectllm.settings import EXTRACTOR_ALIASES, EXTRACTORS, parse_extractors

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS
SIDECAR_SUFFIXES: dict[str, tuple[str, ...]] = {
    "au_csv": (".openface.csv", ".au.csv"),
    "captions": (".captions.json", ".captions.txt"),
    "transcript": (".transcript.txt",),
}
# The extractors and their aliases live in affectllm.settings (one table for every command and YAML key).
MODALITY_NAMES: dict[str, str] = EXTRACTOR_ALIASES
DEFAULT_MODALITIES = EXTRACTORS
# Bump when the cached record layout or any extractor's output changes without a version bump.
# 2: HNR from Praat's pitch analysis, F0 at a 20 ms hop. 3: Clip.signals (the contours the cue timeline draws).
CACHE_FORMAT = 3


@dataclass
class ClipInputs:
    """Everything known about one clip before extraction."""

    clip_id: str
    media: Path | None = None
    au_csv: Path | None = None
    captions: Path | None = None
    transcript: Path | None = None
    transcript_text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- inputs


def _sidecar_stem(path: Path) -> tuple[str, str] | None:
    name = path.name
    for role, suffixes in SIDECAR_SUFFIXES.items():
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                return role, name[: -len(suffix)]
    return None


def find_sidecars(media_or_stem: str | Path) -> dict[str, Path]:
    """Sidecars next to a media file (or for a path stem), by role: ``au_csv``, ``captions``, ``transcript``."""
    path = Path(media_or_stem)
    stem = path.stem if path.suffix.lower() in MEDIA_EXTENSIONS else path.name
    found: dict[str, Path] = {}
    for role, suffixes in SIDECAR_SUFFIXES.items():
        for suffix in suffixes:
            candidate = path.parent / f"{stem}{suffix}"
            if candidate.is_file():
                found[role] = candidate
                break
    return found


def _media_for_stem(directory: Path, stem: str) -> Path | None:
    for ext in MEDIA_EXTENSIONS:
        for candidate in (directory / f"{stem}{ext}", directory / f"{stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def resolve_inputs(
    item: str | Path | Mapping[str, Any] | ClipInputs,
    au_csv: str | Path | None = None,
    captions: str | Path | None = None,
    transcript: str | Path | None = None,
    base_dir: str | Path | None = None,
    clip_id: str | None = None,
) -> ClipInputs:
    """Turn a path, a manifest row or a :class:`ClipInputs` into :class:`ClipInputs`, finding sidecars.

    A manifest row is ``{"id", "media"?, "au_csv"?, "captions"?, "transcript"?}``; relative paths resolve
    against ``base_dir``; ``"transcript"`` may be a path to a text file or the transcript text itself.
    Explicit ``au_csv``/``captions``/``transcript`` arguments override sidecars found by name.
    """
    if isinstance(item, ClipInputs):
        inputs = ClipInputs(**vars(item))
    elif isinstance(item, Mapping):
        inputs = _inputs_from_row(item, Path(base_dir) if base_dir else Path.cwd())
    else:
        inputs = _inputs_from_path(Path(item))
    if au_csv is not None:
        inputs.au_csv = Path(au_csv)
    if captions is not None:
        inputs.captions = Path(captions)
    if transcript is not None:
        inputs.transcript, inputs.transcript_text = Path(transcript), None
    if clip_id:
        inputs.clip_id = clip_id
    for role in ("media", "au_csv", "captions", "transcript"):
        path = getattr(inputs, role)
        if path is not None:
            require_regular_file(path, role.replace("_", " "))
    return inputs


def require_regular_file(path: Path, role: str) -> None:
    """InputError unless ``path`` is a readable regular file. Checked with stat before anything opens it:
    a FIFO blocks the reader forever and a device never ends (the cache hash reads every input whole)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(path, f"{role} file not found") from None
    except OSError as exc:
        raise InputError(path, f"cannot read the {role} file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(path, f"{role} path is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else "a device or socket"
        raise InputError(path, f"{role} path is {kind}, not a regular file")


def _inputs_from_path(path: Path) -> ClipInputs:
    if path.is_dir():
        raise InputError(path, "is a folder; use textualize_batch for folders")
    require_regular_file(path, "input")
    sidecar = _sidecar_stem(path)
    if sidecar is not None:
        # A sidecar given as the clip itself: the clip is its stem (with its media, if any, next to it).
        _, stem = sidecar
        media = _media_for_stem(path.parent, stem)
        found = find_sidecars(media if media else path.parent / stem)
        found[sidecar[0]] = path
        return ClipInputs(stem, media=media, **found)
    if path.suffix.lower() not in MEDIA_EXTENSIONS:
        raise InputError(
            path,
            f"unsupported file type {path.suffix or '(none)'!r}; expected a video ({', '.join(VIDEO_EXTENSIONS)}), "
            f"audio ({', '.join(AUDIO_EXTENSIONS)}) or a sidecar ({', '.join(s for v in SIDECAR_SUFFIXES.values() for s in v)})",
        )
    return ClipInputs(path.stem, media=path, **find_sidecars(path))


def _inputs_from_row(row: Mapping[str, Any], base: Path) -> ClipInputs:
    if "id" not in row or row["id"] in (None, ""):
        raise InputError(None, 'manifest row has no "id"')

    def resolve(value: Any) -> Path | None:
        if value in (None, ""):
            return None
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else base / p

    media = resolve(row.get("media"))
    if media is not None:
        require_regular_file(media, "media")
    for role in ("au_csv", "captions"):
        if row.get(role) not in (None, "") and not isinstance(row[role], str):
            raise InputError(None, f"manifest row {row['id']!r}: {role!r} must be a path string")
    if "transcript" in row and row["transcript"] is not None and not isinstance(row["transcript"], str):
        raise InputError(None, f"manifest row {row['id']!r}: 'transcript' must be text or a path string")
    found = find_sidecars(media) if media is not None else {}
    inputs = ClipInputs(str(row["id"]), media=media, **found)
    for role in ("au_csv", "captions"):
        if row.get(role):
            setattr(inputs, role, resolve(row[role]))
    text = row.get("transcript")
    if isinstance(text, str) and text.strip():
        candidate = resolve(text)
        if len(text) < 1024 and "\n" not in text and candidate is not None and candidate.is_file():
            inputs.transcript, inputs.transcript_text = candidate, None
        elif _looks_like_a_path(text):
            # "a.transcript.txt" that is not there is a broken reference, not the words someone said.
            raise InputError(candidate, "transcript file not found (the manifest names it as a path)")
        else:
            inputs.transcript, inputs.transcript_text = None, text
    inputs.extra = {
        k: v for k, v in row.items() if k not in {"id", "media", "au_csv", "captions", "transcript"}
    }
    return inputs


def _looks_like_a_path(text: str) -> bool:
    """One word ending in a transcript extension (``clips/a.txt``), which nobody says in a sentence."""
    word = text.strip()
    return (
        len(word) < 1024
        and not any(c.isspace() for c in word)
        and word.lower().endswith((".txt", ".srt", ".vtt", ".json"))
    )


def _normalise_modalities(modalities: Iterable[str] | str | None) -> tuple[str, ...]:
    return tuple(sorted(parse_extractors(modalities), key=EXTRACTORS.index))


# ---------------------------------------------------------------------------------------------- transcript


def transcript_cues(
    text: str | None = None, path: str | Path | None = None, source: str | None = None
) -> list[Cue]:
    """Linguistic cues from a transcript: one ``speech`` cue per time-stamped line (``[mm:ss.s] words``, as
    the ASR path names them), else one ``transcript`` cue for the whole text."""
    from affectllm.textualize.scene import read_captions

    if path is not None:
        lines = read_captions(path, what="transcript lines")
        source = source or f"transcript:{Path(path).name}"
    else:
        if not text or not text.strip():
            return []
        from affectllm.textualize.scene import Caption

        lines = [Caption(" ".join(text.split()))]
        source = source or "transcript"
    if all(c.start is None for c in lines):
        whole = " ".join(c.text for c in lines)
        return [Cue(LINGUISTIC, "transcript", value=whole, source=source)]
    return [Cue(LINGUISTIC, "speech", value=c.text, start=c.start, end=c.end, source=source) for c in lines]


# --------------------------------------------------------------------------------------------------- cache

_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content (memoised per path, size and mtime within the process)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_MEMO:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def cache_key(inputs: ClipInputs, options: Mapping[str, Any]) -> str:
    """Content hash of the inputs + the options + the affectllm version (not the paths or the clip id)."""
    material = {
        "affectllm": __version__,
        "format": CACHE_FORMAT,
        "options": dict(options),
        "inputs": {
            role: None if getattr(inputs, role) is None else file_digest(getattr(inputs, role))
            for role in ("media", "au_csv", "captions", "transcript")
        },
        "transcript_text": None
        if inputs.transcript_text is None
        else hashlib.sha256(inputs.transcript_text.encode("utf-8")).hexdigest(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def cache_path(key: str) -> Path:
    return user_cache_dir() / "textualize" / key[:2] / f"{key}.json"


def _cache_read(key: str) -> dict[str, Any] | None:
    path = cache_path(key)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # a missing or damaged entry is simply recomputed


def _cache_write(key: str, data: dict[str, Any]) -> None:
    path = cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache directory must not fail the extraction itself


# ----------------------------------------------------------------------------------------------- one clip


def textualize_clip(
    path_or_row: str | Path | Mapping[str, Any] | ClipInputs,
    modalities: Iterable[str] | str | None = DEFAULT_MODALITIES,
    au_csv: str | Path | None = None,
    captions: str | Path | None = None,
    transcript: str | Path | None = None,
    asr: str | None = "faster-whisper",
    asr_model: str | None = None,
    captioner: Any = None,
    caption_model: str | None = None,
    base_url: str | None = None,
    num_frames: int = 8,
    use_cache: bool = True,
    face_options: Mapping[str, Any] | None = None,
    run_openface: bool = False,
    sex: str | None = None,
    clip_id: str | None = None,
    base_dir: str | Path | None = None,
) -> Clip:
    """Extract a clip's cues: acoustic + linguistic (audio), facial (AU CSV) and visual-scene (captions).

    ``modalities`` toggles the extractors (``audio``, ``face``, ``scene``); a transcript sidecar or text is
    always turned into linguistic cues. ``asr`` is an ASR engine name or ``None``/``"none"``; ``captioner``
    is ``"openai"``, ``"transformers"`` or a captioner object (only used without a captions sidecar);
    ``face_options`` go to :func:`~affectllm.textualize.face.face_cues_from_csv`; ``run_openface`` runs
    OpenFace's FeatureExtraction on a video without an AU CSV when the binary is on PATH.
    """
    inputs = resolve_inputs(path_or_row, au_csv, captions, transcript, base_dir=base_dir, clip_id=clip_id)
    mods = _normalise_modalities(modalities)
    asr = None if asr in (None, "", "none") else asr
    captioner_name = getattr(captioner, "name", captioner)
    options = {
        "modalities": mods,
        "asr": asr if "audio" in mods else None,
        "asr_model": asr_model if "audio" in mods and asr else None,
        "sex": sex,
        "face": dict(face_options or {}) if "face" in mods else None,
        "run_openface": run_openface and "face" in mods,
        "captioner": [captioner_name, caption_model, base_url, num_frames]
        if "scene" in mods and captioner is not None and inputs.captions is None
        else None,
    }
    key = cache_key(inputs, options) if use_cache else None
    if key is not None:
        cached = _cache_read(key)
        if cached is not None:
            clip = Clip.from_dict(cached)
            clip.clip_id = inputs.clip_id
            clip.media = None if inputs.media is None else str(inputs.media)
            return clip

    clip = _extract(
        inputs,
        mods,
        asr,
        asr_model,
        sex,
        captioner,
        caption_model,
        base_url,
        num_frames,
        dict(face_options or {}),
        run_openface,
    )
    if key is not None:
        _cache_write(key, clip.to_dict())
    return clip


@dataclass
class _Extraction:
    """What every extraction step reads and writes for one clip: the inputs, the options, the clip so far."""

    inputs: ClipInputs
    clip: Clip
    mods: tuple[str, ...]
    info: Any
    asr: str | None
    asr_model: str | None
    sex: str | None
    captioner: Any
    caption_model: str | None
    base_url: str | None
    num_frames: int
    face_options: dict[str, Any]
    run_openface: bool
    au_csv: Path | None = None

    @property
    def media(self) -> Path | None:
        return self.inputs.media

    @property
    def is_video(self) -> bool:
        return self.media is not None and self.media.suffix.lower() in VIDEO_EXTENSIONS

    @property
    def has_transcript(self) -> bool:
        return self.inputs.transcript is not None or self.inputs.transcript_text is not None


@dataclass(frozen=True)
class ExtractionStep:
    """One extractor as the pipeline runs it: ``applies`` says whether this clip has what it needs under the
    chosen modalities, ``run`` adds its cues (or raises; the failure becomes a ``Clip.warnings`` entry)."""

    name: str
    applies: Callable[[_Extraction], bool]
    run: Callable[[_Extraction], None]


def _transcript_applies(x: _Extraction) -> bool:
    return x.has_transcript


def _run_transcript(x: _Extraction) -> None:
    if x.inputs.transcript is not None:
        cues = transcript_cues(path=x.inputs.transcript)
    else:
        cues = transcript_cues(text=x.inputs.transcript_text)
    x.clip.cues.extend(cues)
    x.clip.transcript = " ".join(str(c.value) for c in cues) or None


def _audio_applies(x: _Extraction) -> bool:
    return "audio" in x.mods and x.media is not None


def _run_audio(x: _Extraction) -> None:
    from affectllm.media import load_audio
    from affectllm.textualize import get_textualizer

    if x.info is not None and not getattr(x.info, "has_audio", True):
        raise InputError(x.media, "no audio stream")
    audio = load_audio(x.media)
    if x.clip.duration is None:
        x.clip.duration = getattr(audio, "duration", None)
    cues, spoken = get_textualizer("audio")(
        audio,
        asr=x.asr,
        asr_model=x.asr_model,
        sex=x.sex,
        transcript_text=x.clip.transcript if x.has_transcript else None,
        signals=x.clip.signals,
    )
    if x.has_transcript:
        # A provided transcript is authoritative; ASR still served the speaking-rate and pause cues.
        cues = [c for c in cues if c.modality != LINGUISTIC]
    elif spoken is not None and getattr(spoken, "text", "").strip():
        x.clip.transcript = spoken.text.strip()
    x.clip.cues.extend(cues)


def _openface_applies(x: _Extraction) -> bool:
    if "face" not in x.mods or x.au_csv is not None or not (x.run_openface and x.is_video):
        return False
    from affectllm.textualize.face import openface_binary

    return bool(openface_binary())


def _run_openface_step(x: _Extraction) -> None:
    from affectllm.textualize.face import run_openface

    out_dir = user_cache_dir() / "openface" / file_digest(x.media)[:16]
    x.au_csv = run_openface(x.media, out_dir)


def _face_applies(x: _Extraction) -> bool:
    return "face" in x.mods and x.au_csv is not None


def _run_face(x: _Extraction) -> None:
    from affectllm.textualize import get_textualizer

    x.clip.cues.extend(get_textualizer("face")(x.au_csv, signals=x.clip.signals, **x.face_options))


def _scene_applies(x: _Extraction) -> bool:
    return "scene" in x.mods and (x.inputs.captions is not None or (x.captioner is not None and x.is_video))


def _run_scene(x: _Extraction) -> None:
    from affectllm.textualize import get_textualizer

    scene_cues = get_textualizer("scene")
    if x.inputs.captions is not None:
        x.clip.cues.extend(scene_cues(captions=x.inputs.captions, duration=x.clip.duration))
    else:
        x.clip.cues.extend(
            scene_cues(
                media=x.media,
                captioner=x.captioner,
                caption_model=x.caption_model,
                base_url=x.base_url,
                num_frames=x.num_frames,
            )
        )


# The steps in the order they run: the transcript first (audio keeps it over ASR), OpenFace before face (it
# writes the AU CSV face reads). A new extractor is one step here and one entry in ``TEXTUALIZERS``.
EXTRACTION_STEPS: Registry[ExtractionStep] = Registry("extraction step")
for _step in (
    ExtractionStep("transcript", _transcript_applies, _run_transcript),
    ExtractionStep("audio", _audio_applies, _run_audio),
    ExtractionStep("openface", _openface_applies, _run_openface_step),
    ExtractionStep("face", _face_applies, _run_face),
    ExtractionStep("scene", _scene_applies, _run_scene),
):
    EXTRACTION_STEPS.register(_step.name, _step)


def _extract(
    inputs: ClipInputs,
    mods: tuple[str, ...],
    asr: str | None,
    asr_model: str | None,
    sex: str | None,
    captioner: Any,
    caption_model: str | None,
    base_url: str | None,
    num_frames: int,
    face_options: dict[str, Any],
    run_openface: bool,
) -> Clip:
    clip = Clip(inputs.clip_id, media=None if inputs.media is None else str(inputs.media))
    attempted: list[str] = []
    succeeded: list[str] = []
    media = inputs.media

    info = None
    if media is not None:
        try:
            from affectllm.media import probe

            info = probe(media)
            clip.duration = getattr(info, "duration", None)
        except KeyboardInterrupt:
            raise
        except Exception:
            info = None  # the extractors below report the decode problem in their own words

    extraction = _Extraction(
        inputs,
        clip,
        mods,
        info,
        asr,
        asr_model,
        sex,
        captioner,
        caption_model,
        base_url,
        num_frames,
        face_options,
        run_openface,
        au_csv=inputs.au_csv,
    )
    for name in EXTRACTION_STEPS:
        step = EXTRACTION_STEPS.get(name)
        if not step.applies(extraction):
            continue
        attempted.append(name)
        try:
            step.run(extraction)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one extractor's failure must not cost the others' evidence
            clip.warnings.append(f"{name}: {exc}")
        else:
            succeeded.append(name)

    where = inputs.media or inputs.au_csv or inputs.captions or inputs.transcript
    if not attempted:
        raise InputError(
            where or inputs.clip_id,
            f"nothing to textualize with modalities {','.join(mods) or '(none)'}: "
            "no media, AU CSV, captions or transcript",
        )
    if not succeeded:
        raise InputError(
            where or inputs.clip_id, "no evidence could be extracted — " + "; ".join(clip.warnings)
        )
    if clip.duration is None:
        ends = [c.end for c in clip.cues if c.end is not None]
        clip.duration = max(ends) if ends else None
    return clip


# ------------------------------------------------------------------------------------------------- batches


def batch_items(source: str | Path | Sequence[Any]) -> tuple[list[Any], Path | None]:
    """The items of a batch and the folder relative paths resolve against.

    ``source``: a folder (one item per media file, plus sidecar-only stems), a JSONL manifest, or a list of
    paths / manifest rows.
    """
    if not isinstance(source, (str, Path)):
        return list(source), None
    path = Path(source)
    if path.is_dir():
        return _folder_items(path), path
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return _manifest_rows(path), path.parent
    raise InputError(path, "expected a folder or a JSONL manifest for a batch")


def _folder_items(folder: Path) -> list[ClipInputs]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    media = [p for p in files if p.suffix.lower() in MEDIA_EXTENSIONS]
    stems = [p.stem for p in media]
    items = []
    for p in media:
        # Two media files with one stem (x.mp4 and x.wav) keep their full names as ids.
        clip_id = p.stem if stems.count(p.stem) == 1 else p.name
        items.append(ClipInputs(clip_id, media=p, **find_sidecars(p)))
    seen = set(stems)
    for p in files:
        sidecar = _sidecar_stem(p)
        if sidecar is None or sidecar[1] in seen:
            continue
        seen.add(sidecar[1])
        items.append(ClipInputs(sidecar[1], **find_sidecars(folder / sidecar[1])))
    if not items:
        raise InputError(folder, "no media files or sidecars in the folder")
    return items


def _manifest_rows(path: Path) -> list[dict[str, Any]]:
    from affectllm.batch import read_manifest

    rows = [row for _, row in read_manifest(path)]
    if not rows:
        raise InputError(path, "empty manifest")
    return rows


def _item_id(item: Any) -> str:
    if isinstance(item, ClipInputs):
        return item.clip_id
    if isinstance(item, Mapping):
        return str(item.get("id"))
    path = Path(item)
    sidecar = _sidecar_stem(path)
    return sidecar[1] if sidecar else path.stem


def textualize_batch(
    inputs: str | Path | Sequence[Any],
    out_jsonl: str | Path,
    progress: bool = True,
    retry_failed: bool = True,
    max_tokens: int | None = None,
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Textualize every clip of a folder / JSONL manifest / list into a resumable JSONL file.

    Each record is ``{"id", "clip", "media", "transcript", "duration", "cues", "warnings", "text"}``; a clip
    that fails gets ``{"id", "error", "where"}`` and the batch goes on. Ids already in ``out_jsonl`` are
    skipped (failed ones are retried unless ``retry_failed=False``). ``options`` are those of
    :func:`textualize_clip`. Returns counts: ``total``, ``done`` (this run), ``skipped``, ``failed``.
    ``out_jsonl`` may not be one of the batch's inputs; ``overwrite`` starts it afresh instead of resuming.
    On completion the file holds one row per id, in batch order.
    """
    from tqdm import tqdm

    from affectllm.batch import ResumableJSONL
    from affectllm.textualize.render import render_cues

    items, base_dir = batch_items(inputs)
    read_paths = [inputs] if isinstance(inputs, (str, Path)) else []
    read_paths += [p for item in items for p in _item_paths(item, base_dir)]
    writer = ResumableJSONL(
        out_jsonl, id_key="id", retry_failed=retry_failed, inputs=read_paths, overwrite=overwrite
    )
    pending = [item for item in items if not writer.should_skip(_item_id(item))]
    summary = {
        "total": len(items),
        "done": 0,
        "skipped": len(items) - len(pending),
        "failed": 0,
        "out": str(out_jsonl),
        "errors": [],  # (id, message) of the clips that failed in this run
    }
    bar = tqdm(pending, desc="textualize", unit="clip", file=sys.stderr, disable=not progress)
    for item in bar:
        item_id = _item_id(item)
        bar.set_postfix_str(item_id[-30:], refresh=False)
        try:
            clip = textualize_clip(item, base_dir=base_dir, **options)
            record = {"id": item_id, **clip.to_dict(), "text": render_cues(clip, max_tokens=max_tokens)}
            writer.write(record)
            summary["done"] += 1
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # recorded per clip; finished clips are already on disk
            writer.write_error(item_id, exc)
            summary["failed"] += 1
            summary["errors"].append((item_id, str(exc) or type(exc).__name__))
    writer.compact([_item_id(item) for item in items])
    return summary


def _item_paths(item: Any, base_dir: Path | None) -> list[Path]:
    """The files a batch item names (so the output can be refused when it is one of them)."""
    if isinstance(item, ClipInputs):
        values: list[Any] = [item.media, item.au_csv, item.captions, item.transcript]
    elif isinstance(item, Mapping):
        values = [item.get(k) for k in ("media", "au_csv", "captions", "transcript")]
    else:
        values = [item]
    paths = []
    for value in values:
        if isinstance(value, (str, Path)) and value and len(str(value)) < 1024 and "\n" not in str(value):
            path = Path(value).expanduser()
            paths.append(path if path.is_absolute() or base_dir is None else base_dir / path)
    return paths
