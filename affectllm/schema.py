"""The shared vocabulary of every stage: evidence cues, clips and parsed model predictions.

Every stage of the pipeline (textualizers → prompts → backends → parser → metrics/rewards) speaks only in
these types, so each stage can be tested, cached and swapped on its own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

# The four evidence modalities. Facial action units and scene captions are both *visual* for the
# rationale metrics, which follow EMER's visual / acoustic / textual split (see COARSE_MODALITY).
ACOUSTIC = "acoustic"
FACIAL = "facial"
SCENE = "visual-scene"
LINGUISTIC = "linguistic"
MODALITIES: tuple[str, ...] = (ACOUSTIC, FACIAL, SCENE, LINGUISTIC)

COARSE_MODALITY: dict[str, str] = {
    ACOUSTIC: "acoustic",
    FACIAL: "visual",
    SCENE: "visual",
    LINGUISTIC: "textual",
}

# Short prefixes used to give each rendered cue a stable citation id (A1, F3, S2, L1).
CUE_ID_PREFIX: dict[str, str] = {ACOUSTIC: "A", FACIAL: "F", SCENE: "S", LINGUISTIC: "L"}
# The one pattern of a citation id, shared by the renderer, the parser, the answer schema, the grounding metric
# and the grounding reward (ids start at 1 and stay under 1000 cues per modality).
CUE_ID_PATTERN = r"[AFSL][1-9]\d{0,2}"

# Aliases accepted wherever a user names a modality (CLI flags, YAML, model output).
MODALITY_ALIASES: dict[str, str] = {
    "acoustic": ACOUSTIC,
    "audio": ACOUSTIC,
    "speech": ACOUSTIC,
    "prosody": ACOUSTIC,
    "vocal": ACOUSTIC,
    "facial": FACIAL,
    "face": FACIAL,
    "au": FACIAL,
    "visual": FACIAL,
    "visual-scene": SCENE,
    "scene": SCENE,
    "caption": SCENE,
    "captions": SCENE,
    "linguistic": LINGUISTIC,
    "text": LINGUISTIC,
    "textual": LINGUISTIC,
    "transcript": LINGUISTIC,
    "asr": LINGUISTIC,
    "lexical": LINGUISTIC,
}


def normalize_modality(name: str) -> str:
    """Map a user- or model-supplied modality name onto one of MODALITIES; raise on unknown names."""
    key = name.strip().lower()
    if key not in MODALITY_ALIASES:
        raise ValueError(f"unknown modality {name!r}; expected one of {sorted(set(MODALITY_ALIASES))}")
    return MODALITY_ALIASES[key]


def _clean_number(x: Any) -> Any:
    # JSON has no NaN/inf; an extractor that produced one has no value to report.
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@dataclass
class Cue:
    """One named, time-stamped piece of evidence.

    ``value``/``unit`` hold the measurement (e.g. 245.0 "Hz"), ``band`` its interpretation relative to a
    baseline ("high", "C" for FACS intensity), ``detail`` a short human-readable phrase the renderer shows
    (e.g. "high and rising (mean 245 Hz, +1.8 SD vs speaker)"). ``start``/``end`` are seconds into the clip,
    ``None`` when the cue spans the whole clip.
    """

    modality: str
    name: str
    value: float | str | None = None
    unit: str | None = None
    band: str | None = None
    start: float | None = None
    end: float | None = None
    source: str | None = None
    confidence: float | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        self.modality = normalize_modality(self.modality)

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean_number(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cue:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown cue fields: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Evidence:
    """One line of a clip's evidence as every consumer sees it: the citation id, the cue and its rendered text
    (``F2 [0.4-1.8s] AU12 lip corner puller: strong (C, 2.31)``)."""

    id: str
    cue: Cue
    text: str


@dataclass
class Clip:
    """A clip and the evidence extracted from it.

    ``speaker`` and ``context`` (the dialogue before the clip, ``[{"speaker", "text"}]``) belong to the clip so
    that every caller that builds a prompt from it shows the same lines.
    """

    clip_id: str
    cues: list[Cue] = field(default_factory=list)
    media: str | None = None
    transcript: str | None = None
    duration: float | None = None
    # Per-extractor problems that did not stop the clip (e.g. "face: no AU columns in x.csv").
    warnings: list[str] = field(default_factory=list)
    speaker: str | None = None
    context: list[dict[str, str]] = field(default_factory=list)
    # What the textualizers measured alongside the cues, kept so the cue timeline (affectllm.timeline) can draw
    # it without re-running them: downsampled pitch/loudness contours, their bands, pauses, ASR word times and
    # AU intensities. JSON-serialisable; never shown to the model.
    signals: dict[str, Any] = field(default_factory=dict)

    def evidence(self) -> list[Evidence]:
        """The clip's evidence lines with their citation ids, assigned once over all cues.

        A transcript with no linguistic cue of its own becomes one whole-clip ``transcript`` cue, so what was
        said is citable (``L1``) however the clip was built; ids never depend on which modalities a prompt
        shows. The prompt renderer, the grounding metric and the grounding reward all read this list.
        """
        from affectllm.textualize.render import assign_ids, cue_line

        cues = list(self.cues)
        if self.transcript and self.transcript.strip() and not any(c.modality == LINGUISTIC for c in cues):
            cues.append(
                Cue(LINGUISTIC, "transcript", value=" ".join(self.transcript.split()), source="transcript")
            )
        return [Evidence(cid, cue, cue_line(cid, cue)) for cid, cue in assign_ids(cues)]

    def without(self, *modalities: str) -> Clip:
        """The same clip with the named modalities' cues removed (used for modality ablation)."""
        dropped = {normalize_modality(m) for m in modalities}
        words = LINGUISTIC not in dropped
        return replace(
            self,
            cues=[c for c in self.cues if c.modality not in dropped],
            transcript=self.transcript if words else None,
            context=[dict(t) for t in self.context] if words else [],
            warnings=list(self.warnings),
            signals=dict(self.signals),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "clip": self.clip_id,
            "media": self.media,
            "transcript": self.transcript,
            "duration": _clean_number(self.duration),
            "cues": [c.to_dict() for c in self.cues],
            "warnings": list(self.warnings),
        }
        if self.speaker:
            out["speaker"] = self.speaker
        if self.context:
            out["context"] = [dict(t) for t in self.context]
        if self.signals:
            out["signals"] = self.signals
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Clip:
        return cls(
            clip_id=str(data["clip"]),
            cues=[Cue.from_dict(c) for c in data.get("cues", [])],
            media=data.get("media"),
            transcript=data.get("transcript"),
            duration=data.get("duration"),
            warnings=list(data.get("warnings", [])),
            speaker=data.get("speaker") or None,
            context=[dict(t) for t in data.get("context") or []],
            signals=dict(data.get("signals") or {}),
        )


@dataclass(frozen=True)
class Media:
    """What a multimodal backbone receives besides the text: key frames and the audio track.

    ``frames`` holds ``affectllm.media.Frame`` objects, PIL images, paths or URLs; ``audio`` an
    ``affectllm.media.AudioData``, a path or a sample array (``sampling_rate`` then says its rate). The prompt
    builder turns them into content parts and each backend converts those parts for its engine.
    """

    frames: tuple[Any, ...] = ()
    audio: Any = None
    sampling_rate: int = 16000

    def __bool__(self) -> bool:
        return bool(self.frames) or self.audio is not None


@dataclass
class RationaleItem:
    """One piece of evidence a model cites for its answer."""

    cue: str
    modality: str | None = None
    time: str | None = None
    cue_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prediction:
    """What the parser recovers from one model answer. Never raises on model text: ``format_ok`` says
    whether the answer followed the contract, ``errors`` what was repaired or missing."""

    emotions: list[str] = field(default_factory=list)
    rationale: list[RationaleItem] = field(default_factory=list)
    answer: str = ""
    confidence: float | None = None
    raw: str = ""
    format_ok: bool = False
    errors: list[str] = field(default_factory=list)
    # Closed sets decoded by likelihood: each label's (calibrated) log-probability.
    label_scores: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "emotions": list(self.emotions),
            "rationale": [r.to_dict() for r in self.rationale],
            "answer": self.answer,
            "confidence": self.confidence,
            "format_ok": self.format_ok,
        }
        if self.errors:
            out["errors"] = list(self.errors)
        if self.label_scores:
            out["label_scores"] = dict(self.label_scores)
        return out
