"""The settings objects the one row → clip → messages path is configured with.

``ClipSettings`` says how a dataset row, manifest row or path becomes a :class:`~affectllm.schema.Clip` (which
input to read, which extractors run on media, whether the dialogue context comes along); ``PromptSettings``
says how a clip becomes chat messages (template, task, label set, few-shot examples, the evidence shown).

Both are frozen and built whole from a task YAML (``Task.clip`` / ``Task.prompt``), a recipe data source or CLI
flags, then passed along as one object: a training row and an evaluation row built from the same settings give
identical messages, which is what ``tests/test_prompt_parity.py`` holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from affectllm.errors import InputError
from affectllm.schema import normalize_modality

# The extractors ``textualize_clip`` can run on media. "Modalities" always means cue modalities
# (acoustic, facial, visual-scene, linguistic); "extractors" names what runs.
EXTRACTORS: tuple[str, ...] = ("audio", "face", "scene")
EXTRACTOR_ALIASES: dict[str, str] = {
    "audio": "audio",
    "speech": "audio",
    "acoustic": "audio",
    "face": "face",
    "facial": "face",
    "au": "face",
    "scene": "scene",
    "visual-scene": "scene",
    "captions": "scene",
}
CLIP_SOURCES: tuple[str, ...] = ("transcript", "media", "auto")
# How the answer's emotions are chosen: "generate" them freely, or rank candidates by their "likelihood" as the
# answer (``affectllm.choice``); "auto" lets ``load_reasoner`` decide by the model (see ``resolve_decoding``).
DECODING: tuple[str, ...] = ("auto", "generate", "likelihood")
# How a closed-set likelihood choice corrects the model's label preferences (``affectllm.choice``): against a
# "content_free" prompt, not at all ("none"), or by a "label_prior" fitted on a labelled training split.
CALIBRATION: tuple[str, ...] = ("content_free", "none", "label_prior")


def parse_extractors(value: str | Iterable[str] | None, where: str = "extractors") -> tuple[str, ...]:
    """Extractor names from a list or one comma-separated string (the one syntax of every command)."""
    if value is None:
        return EXTRACTORS
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    out: list[str] = []
    for item in (i.strip().lower() for i in items):
        if not item or item in ("none", "off"):
            continue
        if item not in EXTRACTOR_ALIASES:
            raise InputError(
                None, f"{where}: unknown extractor {item!r}; expected some of {', '.join(EXTRACTORS)}"
            )
        if EXTRACTOR_ALIASES[item] not in out:
            out.append(EXTRACTOR_ALIASES[item])
    return tuple(out)


def parse_modalities(value: str | Iterable[str] | None, where: str = "modalities") -> tuple[str, ...] | None:
    """Cue modalities from a list or one comma-separated string; ``None`` means all."""
    if value is None:
        return None
    if not isinstance(value, (str, list, tuple)):
        raise InputError(None, f"{where}: a list of modality names, not {type(value).__name__}")
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    try:
        return tuple(dict.fromkeys(normalize_modality(i) for i in items if i.strip()))
    except ValueError as exc:
        raise InputError(None, f"{where}: {exc}") from None


@dataclass(frozen=True)
class ClipSettings:
    """How a row or a path becomes a Clip.

    - ``source``: ``transcript`` (what was said, as linguistic cues), ``media`` (textualize the row's media and
      sidecars; a row without any is an error) or ``auto`` (media when the row has some, else the transcript).
    - ``extractors``: what runs on media (``audio``, ``face``, ``scene``).
    - ``context``: keep the row's dialogue context (the turns before the clip) on the clip.
    - ``asr``: the speech recogniser run on media (``None`` = none). A row's own transcript is authoritative
      for the words; ASR then still gives the speaking-rate and pause cues its word timings yield. Training
      sources turn it off (seconds per clip, and the dataset's text is the reference).
    - ``options``: further ``textualize_clip`` keywords (``num_frames``, ``face_options``, ...).
    """

    source: str = "auto"
    extractors: tuple[str, ...] = EXTRACTORS
    context: bool = True
    asr: str | None = "faster-whisper"
    asr_model: str | None = None
    use_cache: bool = True
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.source not in CLIP_SOURCES:
            raise InputError(None, f"input source {self.source!r}: expected one of {', '.join(CLIP_SOURCES)}")
        object.__setattr__(self, "extractors", parse_extractors(self.extractors))
        if self.asr is not None:
            from affectllm.textualize.asr import asr_engine_name

            # An unknown engine is an error up front, not a per-clip warning.
            object.__setattr__(self, "asr", asr_engine_name(self.asr))
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", tuple(sorted(dict(self.options).items())))

    def replace(self, **changes: Any) -> ClipSettings:
        return replace(self, **changes)


@dataclass(frozen=True)
class PromptSettings:
    """How a Clip becomes chat messages.

    - ``task``: ``ov`` (open vocabulary), ``closed`` (one label of ``labels``) or ``chat`` (prose).
    - ``template``: a ``prompts/`` id or YAML path; ``None`` = the task's default.
    - ``few_shot``: how many hand-written examples precede the clip (0 = none).
    - ``modalities`` / ``max_cue_tokens``: which evidence is shown and its token budget (ids never change).
    - ``question``: replaces the template's default question.
    - ``decoding``: ``generate`` the emotions freely, or choose them by ``likelihood`` (backends with
      log-probabilities only): for ``closed`` the best label of ``labels``; for ``ov`` every word of
      ``candidates`` (empty: ``affectllm.choice.default_candidates()``) whose probability as the answer is at
      least ``min_ratio`` times the best one's, at most ``max_emotions`` of them, the best first. ``auto``
      (the default) is resolved by ``load_reasoner`` from the model; a reasoner built by hand reads it as
      ``generate``. The prompt is the same for every decoding.
    - ``calibration`` (closed sets chosen by likelihood): subtract the scores on a ``content_free`` prompt,
      use the raw scores (``none``), or add a ``label_prior`` (``affectllm.choice.fit_label_prior``) fitted on
      ``calibration_rows`` labelled rows of the dataset's training split (``affectllm eval run`` fits it;
      from Python, ``EmotionReasoner.fit_label_prior``).
    """

    task: str = "ov"
    template: str | None = None
    labels: tuple[str, ...] = ()
    few_shot: int = 0
    modalities: tuple[str, ...] | None = None
    max_cue_tokens: int | None = None
    question: str | None = None
    decoding: str = "auto"
    candidates: tuple[str, ...] = ()
    max_emotions: int = 4
    min_ratio: float = 0.3
    calibration: str = "content_free"
    calibration_rows: int = 400

    def __post_init__(self) -> None:
        from affectllm.prompting import normalize_task

        try:
            object.__setattr__(self, "task", normalize_task(self.task))
        except ValueError as exc:
            raise InputError(None, str(exc)) from None
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels or ()))
        # True: the template's own default count (-1).
        object.__setattr__(self, "few_shot", -1 if self.few_shot is True else int(self.few_shot or 0))
        object.__setattr__(self, "modalities", parse_modalities(self.modalities))
        if self.task == "closed" and not self.labels:
            raise InputError(None, "task 'closed' needs its label set (labels=[...])")
        if self.max_cue_tokens is not None and (
            not isinstance(self.max_cue_tokens, int) or self.max_cue_tokens < 1
        ):
            raise InputError(None, f"max_cue_tokens must be at least 1, not {self.max_cue_tokens}")
        if self.decoding not in DECODING:
            raise InputError(None, f"decoding {self.decoding!r}: expected one of {', '.join(DECODING)}")
        if self.calibration not in CALIBRATION:
            raise InputError(
                None, f"calibration {self.calibration!r}: expected one of {', '.join(CALIBRATION)}"
            )
        for name in ("calibration_rows", "max_emotions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(None, f"{name} must be a whole number of at least 1, not {value!r}")
        object.__setattr__(self, "candidates", tuple(dict.fromkeys(str(x) for x in self.candidates or ())))
        if (
            isinstance(self.min_ratio, bool)
            or not isinstance(self.min_ratio, (int, float))
            or not (0.0 <= self.min_ratio <= 1.0)
        ):
            raise InputError(None, f"min_ratio must be a number between 0 and 1, not {self.min_ratio!r}")

    @property
    def uses_label_prior(self) -> bool:
        """Whether answers need a fitted ``label_prior``: a closed set chosen by likelihood with that calibration
        (under ``decoding: auto`` a closed set is generated)."""
        return self.task == "closed" and self.decoding == "likelihood" and self.calibration == "label_prior"

    def replace(self, **changes: Any) -> PromptSettings:
        """These settings with ``changes`` applied; unknown names are refused (a typo must not pass silently)."""
        known = {f.name for f in fields(self)}
        if set(changes) - known:
            raise TypeError(f"unknown prompt settings {sorted(set(changes) - known)}; known: {sorted(known)}")
        return replace(self, **changes)


__all__ = [
    "CALIBRATION",
    "CLIP_SOURCES",
    "DECODING",
    "EXTRACTORS",
    "ClipSettings",
    "PromptSettings",
    "parse_extractors",
    "parse_modalities",
]
