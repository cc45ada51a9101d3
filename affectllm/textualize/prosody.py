"""Prosody as time-stamped acoustic cues: pitch level, range and contour, loudness, speaking rate, pauses,
jitter, shimmer and HNR, per utterance (ASR segment) or per window, each banded against a baseline.

Extractors and why each is used where it is:

- **Praat** (praat-parselmouth): the F0 track (autocorrelation method, Boersma 1993) for pitch level, range and
  contour, and HNR from the same analysis (the normalised autocorrelation peak r of voiced frames,
  HNR = 10 log10(r / (1 - r)), Praat's own harmonicity definition); jitter and shimmer (local) from the glottal
  pulses, the measures clinical norms are stated in; the intensity contour for energy-based pauses and syllable
  nuclei (de Jong & Wempe, 2009) when there is no ASR.
- **openSMILE eGeMAPSv02** (Eyben et al., 2016): loudness, the perceptual (auditory-spectrum) measure eGeMAPS
  defines, where Praat only has uncalibrated intensity. The LLD is extracted once per clip and per-utterance
  means are taken from it (eGeMAPS' functional: arithmetic mean over all frames). Only that LLD is computed
  (``affectllm/data/egemaps_v02_prosody.conf``, eGeMAPSv02's own components and settings).

Cost: prosody is meant to add at most ~20 % to ASR alone (``bench/bench_audio.py``). Hence one F0 analysis
serves pitch, HNR and the glottal pulses, at a 20 ms hop (mean, percentiles and slopes over an utterance do not
need 10 ms; the pulses are found in the waveform, not on the F0 grid), and eGeMAPS' own F0/HNR branch (subharmonic
summation on 60 ms frames, ~3.5x the cost of its loudness) is not run.

Baselines: with three or more utterances in the clip (or a ``baseline`` from the speaker's other clips), each
value is a z-score against the speaker's *other* utterances. Otherwise pitch level, pitch range and speaking
rate are compared with approximate population norms (``affectllm/data/prosody_norms.json``, by sex when known);
loudness, pauses, jitter, shimmer and HNR have no trustworthy population norm for uncalibrated running speech, so
they are then reported with their values and no band.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from affectllm.errors import require
from affectllm.media import AudioData
from affectllm.resources import data_path
from affectllm.schema import ACOUSTIC, Cue
from affectllm.textualize.asr import Transcript

log = logging.getLogger(__name__)

SRC_PRAAT = "praat"
SRC_OPENSMILE = "opensmile:eGeMAPSv02"
SRC_ASR = "asr word times"

# Pitch search ranges by voice: wide enough for shouting, narrow enough to avoid octave errors.
PITCH_RANGE_HZ = {"female": (100.0, 600.0), "male": (60.0, 400.0), "unknown": (75.0, 600.0)}
FRAME_S = 0.01  # intensity hop: pauses and syllable nuclei need 10 ms
PITCH_STEP_S = 0.02  # F0 hop (see the module docstring for why not 10 ms)
COARSE_PITCH_STEP_S = 0.05  # first-pass F0 hop: only its quartiles are used
# F0 candidates per frame for the path finder. Praat's default of 15 costs ~10 % more and, on the EmoDB clips,
# changed 0.1 % of voicing decisions and F0 by < 0.01 semitones (eGeMAPS' tracker keeps 6 as well).
PITCH_CANDIDATES = 6
MIN_PAUSE_S = 0.25  # shorter gaps are articulatory (stop closures), not pauses (Goldman-Eisler's cut-off)
SILENCE_DB_BELOW_PEAK = 25.0  # de Jong & Wempe's silence threshold relative to the 99th-percentile intensity
MIN_VOICED_S = 0.1  # voiced time needed for pitch statistics, HNR and glottal pulses
MIN_VOICED_FRAMES = round(MIN_VOICED_S / PITCH_STEP_S)
MIN_UNITS_FOR_SPEAKER_BASELINE = 3
DEFAULT_WINDOW_S = 8.0
SILENT_PEAK_DBFS = -50.0
# Contours kept for the cue timeline (Clip.signals): a 50 ms grid shows every rise and fall a reader can see
# on a plot, and the point cap keeps a long clip's record small.
SIGNAL_STEP_S = 0.05
MAX_SIGNAL_POINTS = 400

# Smallest SD used for a speaker baseline, per feature: with 3-4 utterances the sample SD can be tiny and a
# negligible difference would read as "+5 SD".
MIN_SD = {
    "pitch": 0.5,  # semitones
    "pitch range": 1.0,  # semitones
    "loudness": 0.05,  # fraction of the speaker mean (applied relatively)
    "speaking rate (words)": 0.25,
    "speaking rate (syllables)": 0.4,
    "pause share": 0.05,
    "jitter": 0.2,  # percent
    "shimmer": 0.8,  # percent
    "HNR": 1.0,  # dB
}


@dataclass
class UnitFeatures:
    """Raw measurements of one utterance or window (``None`` where not measurable)."""

    start: float
    end: float
    f0_mean_hz: float | None = None
    f0_range_st: float | None = None
    f0_change_st: float | None = None  # fitted slope x voiced span
    f0_final_change_st: float | None = None
    voiced_fraction: float = 0.0
    loudness: float | None = None
    loudness_unit: str | None = None  # "sone" (eGeMAPS loudness) or "dB" (Praat intensity, fast mode)
    hnr_db: float | None = None
    jitter_pct: float | None = None
    shimmer_pct: float | None = None
    words_per_s: float | None = None
    syllables_per_s: float | None = None
    rate_source: str | None = None
    n_words: int | None = None
    pauses: list[float] = field(default_factory=list)
    pause_spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each pause
    pause_share: float | None = None
    pause_source: str | None = None

    def values(self) -> dict[str, float | None]:
        """The values baselines are computed over (pitch on the semitone scale)."""
        return {
            "pitch": None if self.f0_mean_hz is None else hz_to_st(self.f0_mean_hz),
            "pitch range": self.f0_range_st,
            "loudness": self.loudness,
            "speaking rate (words)": self.words_per_s,
            "speaking rate (syllables)": self.syllables_per_s,
            "pause share": self.pause_share,
            "jitter": self.jitter_pct,
            "shimmer": self.shimmer_pct,
            "HNR": self.hnr_db,
        }


@dataclass
class SpeakerBaseline:
    """Mean and SD of each feature over a speaker's utterances (from this clip or from other clips)."""

    stats: dict[str, tuple[float, float]]
    n: int
    label: str = "speaker"

    @classmethod
    def from_units(cls, units: list[UnitFeatures], label: str = "speaker") -> SpeakerBaseline:
        stats: dict[str, tuple[float, float]] = {}
        for name in MIN_SD:
            vals = [v for u in units if (v := u.values().get(name)) is not None and math.isfinite(v)]
            if len(vals) >= 2:
                stats[name] = (float(np.mean(vals)), float(np.std(vals, ddof=1)))
        return cls(stats, len(units), label)

    def z(self, name: str, value: float) -> float | None:
        if name not in self.stats:
            return None
        mean, sd = self.stats[name]
        floor = MIN_SD[name] * abs(mean) if name == "loudness" else MIN_SD[name]
        return (value - mean) / max(sd, floor, 1e-9)


def hz_to_st(hz: float, ref: float = 100.0) -> float:
    return 12.0 * math.log2(hz / ref)


@lru_cache(maxsize=1)
def load_norms() -> dict[str, Any]:
    with open(data_path("prosody_norms.json"), encoding="utf-8") as fh:
        return json.load(fh)


def normalize_sex(sex: str | None) -> str:
    if sex is None:
        return "unknown"
    key = str(sex).strip().lower()
    if key in ("f", "female", "woman", "w", "girl"):
        return "female"
    if key in ("m", "male", "man", "boy"):
        return "male"
    return "unknown"


def band_of(z: float) -> str:
    bands = load_norms()["bands"]
    for cut, label in zip(bands["cuts"], bands["labels"][:-1], strict=True):
        if z < cut:
            return label
    return bands["labels"][-1]


def norm_z(name: str, value: float, sex: str) -> tuple[float, str] | None:
    """z-score of ``value`` against the population norm for ``name`` (pitch in semitones), or None."""
    spec = load_norms()["features"].get(name)
    if spec is None:
        return None
    norm = spec.get(sex) or spec.get("any") or spec.get("unknown")
    if norm is None:
        return None
    if name == "pitch":
        sd_st = norm.get("sd_semitones") or 12.0 * math.log2(1.0 + norm["sd"] / norm["mean"])
        return (hz_to_st(value) - hz_to_st(norm["mean"])) / sd_st, norm["label"]
    return (value - norm["mean"]) / norm["sd"], norm["label"]


# ------------------------------------------------------------------------------------------- measurement


@dataclass
class _Tracks:
    """Frame-level tracks of the whole clip, computed once and sliced per unit."""

    pitch_t: np.ndarray
    pitch_hz: np.ndarray  # 0 = unvoiced
    pitch_strength: np.ndarray
    int_t: np.ndarray
    int_db: np.ndarray
    silence_db: float
    sound: Any
    pitch: Any
    points: Any = None
    loudness_t: np.ndarray | None = None  # eGeMAPS loudness frame centres (s) and values (sone)
    loudness: np.ndarray | None = None


def _praat_tracks(audio: AudioData, sex: str) -> _Tracks:
    parselmouth = require("parselmouth", "audio", "Praat prosody (praat-parselmouth)")
    sound = parselmouth.Sound(audio.samples.astype(np.float64), sampling_frequency=audio.sample_rate)
    floor, ceiling = PITCH_RANGE_HZ[sex]
    # Two passes (De Looze & Hirst 2008): a coarse first F0 estimate in the wide range gives the speaker's
    # quartiles, the real pass searches 0.75 x q25 .. 2.5 x q75 (the wider factor suits expressive speech). This
    # removes most octave errors, e.g. halving on creaky, sad speech. Quartiles need few frames, so the first
    # pass runs at a 50 ms hop (about half the real pass's cost).
    coarse = sound.to_pitch_ac(
        time_step=COARSE_PITCH_STEP_S,
        pitch_floor=floor,
        pitch_ceiling=ceiling,
        max_number_of_candidates=PITCH_CANDIDATES,
    )
    voiced = np.asarray(coarse.selected_array["frequency"], dtype=float)
    voiced = voiced[voiced > 0]
    if len(voiced) * COARSE_PITCH_STEP_S >= MIN_VOICED_S:
        q25, q75 = np.percentile(voiced, [25, 75])
        floor, ceiling = max(40.0, 0.75 * q25), min(800.0, max(2.5 * q75, 1.5 * floor))
    pitch = sound.to_pitch_ac(
        time_step=PITCH_STEP_S,
        pitch_floor=floor,
        pitch_ceiling=ceiling,
        max_number_of_candidates=PITCH_CANDIDATES,
    )
    arr = pitch.selected_array
    # The intensity window stays fixed per voice (not speaker-adapted) so syllable counts are comparable.
    intensity = sound.to_intensity(
        minimum_pitch=PITCH_RANGE_HZ[sex][0], time_step=FRAME_S, subtract_mean=False
    )
    int_db = np.asarray(intensity.values[0], dtype=float)
    finite = int_db[np.isfinite(int_db)]
    peak = float(np.percentile(finite, 99)) if len(finite) else 0.0
    return _Tracks(
        pitch_t=np.asarray(pitch.xs(), dtype=float),
        pitch_hz=np.nan_to_num(np.asarray(arr["frequency"], dtype=float)),
        pitch_strength=np.asarray(arr["strength"], dtype=float),
        int_t=np.asarray(intensity.xs(), dtype=float),
        int_db=np.nan_to_num(int_db, nan=-100.0, neginf=-100.0),
        silence_db=peak - SILENCE_DB_BELOW_PEAK,
        sound=sound,
        pitch=pitch,
    )


# The eGeMAPSv02 LLD columns the cues read. Our configuration computes only these (see EGEMAPS_LLD_CONFIG).
_SMILE_COLUMNS = ("Loudness_sma3",)
EGEMAPS_LLD_CONFIG = data_path("egemaps_v02_prosody.conf")
_SMILE_SOURCE, _SMILE_SINK = "in", "out"


class _EgemapsEngine:
    """openSMILE running ``EGEMAPS_LLD_CONFIG``: parsed and set up once per sample rate, reset between clips.

    The full eGeMAPSv02 graph also computes F0, HNR, formants, jitter/shimmer, spectral balance and MFCCs that
    no cue reads from it, and ``Smile.process`` re-parses its configuration and wraps every frame time in pandas
    on each call; together that was more than 10x the cost of this engine. The loudness column is identical to
    eGeMAPSv02's frame for frame (checked in tests/test_prosody.py). It runs a little longer: the full set's
    rows stop where its 60 ms pitch frames do, the 20 ms loudness frames go on to the clip's last 20 ms.
    """

    def __init__(self, sample_rate: int) -> None:
        from opensmile.core import lib

        self.sample_rate = sample_rate
        self._engine = lib.OpenSMILE()
        self._engine.initialize(
            str(EGEMAPS_LLD_CONFIG), options={"sampleRate": sample_rate}, loglevel=1, debug=False
        )
        self._used = False
        names = tuple(
            self._engine.external_sink_get_element_name(_SMILE_SINK, i)
            for i in range(self._engine.external_sink_get_num_elements(_SMILE_SINK))
        )
        if names != _SMILE_COLUMNS:
            self.close()
            raise RuntimeError(f"{EGEMAPS_LLD_CONFIG.name} yields {names}, expected {_SMILE_COLUMNS}")
        # The sink hands over blocks of 64 frames, so the wrapper's public callback runs once per block (a
        # per-frame Python callback was a third of this engine's time).
        self._frames: list[bytes] = []
        self._blocks: list[tuple[float, float, int]] = []  # (first frame centre, frame period, frames)

    def _collect(self, data: np.ndarray, meta: Any) -> None:
        block = np.asarray(data, dtype=np.float32)
        self._frames.append(block.tobytes())
        self._blocks.append((meta.time + meta.lengthSec / 2.0, meta.period, block.shape[0]))

    def _set_sink_callback(self) -> None:
        # A reset engine forgets its sink callback, so it is registered again for every clip.
        self._engine.external_sink_set_callback_ex(_SMILE_SINK, self._collect)
        # The wrapper keeps every callback it was ever given alive: drop the stale ones.
        callbacks = getattr(self._engine, "_callbacks", None)
        if isinstance(callbacks, list):
            del callbacks[:-1]

    def process(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(frame centres in s, values with one column per ``_SMILE_COLUMNS`` entry) of one clip."""
        engine = self._engine
        if self._used:
            engine.reset()
        self._used = True
        self._frames, self._blocks = [], []
        self._set_sink_callback()
        # Resampled audio can overshoot +-1.0: clip rather than let the int16 cast wrap round into a click.
        pcm = np.clip(samples * 32768.0, -32768, 32767).astype(np.int16)
        engine.external_audio_source_write_data(_SMILE_SOURCE, pcm.tobytes())
        engine.external_audio_source_set_eoi(_SMILE_SOURCE)
        engine.run()
        frames, blocks = self._frames, self._blocks
        self._frames, self._blocks = [], []
        values = np.frombuffer(b"".join(frames), dtype=np.float32).astype(np.float64)
        centres = [t0 + period * np.arange(nt) for t0, period, nt in blocks]
        return (
            np.concatenate(centres) if centres else np.zeros(0),
            values.reshape(-1, len(_SMILE_COLUMNS)),
        )

    def close(self) -> None:
        self._engine.free()


# One engine per thread and sample rate: an openSMILE instance runs one clip at a time.
_engines = threading.local()


def _egemaps_engine(sample_rate: int) -> _EgemapsEngine | None:
    """The cached engine for ``sample_rate``, or None when this opensmile cannot run our configuration."""
    cache: dict[int, _EgemapsEngine | None] = _engines.__dict__.setdefault("by_rate", {})
    if sample_rate not in cache:
        require("opensmile", "audio", "openSMILE eGeMAPSv02 features")
        try:
            from opensmile.core.lib import OpenSmileException
        except ImportError:
            OpenSmileException = RuntimeError
        try:
            cache[sample_rate] = _EgemapsEngine(sample_rate)
        except (ImportError, AttributeError, ValueError, RuntimeError, OSError, OpenSmileException) as exc:
            # A future opensmile may move its engine wrapper or rename component options; the public API with
            # the stock eGeMAPSv02 set still gives the same columns, only slower.
            log.warning("openSMILE: %s; using the full eGeMAPSv02 set instead", exc)
            cache[sample_rate] = None
    return cache[sample_rate]


@lru_cache(maxsize=1)
def _smile():
    opensmile = require("opensmile", "audio", "openSMILE eGeMAPSv02 features")
    return opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.LowLevelDescriptors)


def _opensmile_tracks(audio: AudioData) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """eGeMAPSv02 LLD frame centres (s) and the columns in ``_SMILE_COLUMNS``, from one pass over the clip."""
    engine = _egemaps_engine(audio.sample_rate)
    if engine is not None:
        centres, values = engine.process(audio.samples)
        return centres, {c: values[:, i] for i, c in enumerate(_SMILE_COLUMNS)}
    smile = _smile()
    names = list(smile.feature_names)
    starts, ends, values = smile.process(np.clip(audio.samples, -1.0, 32767 / 32768), audio.sample_rate)
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[0] == len(names) and values.shape[1] != len(names):
        values = values.T
    centres = (np.asarray(starts.total_seconds()) + np.asarray(ends.total_seconds())) / 2.0
    return centres, {c: values[:, names.index(c)] for c in _SMILE_COLUMNS}


def _sounding_extent(tracks: _Tracks, start: float, end: float) -> tuple[float, float] | None:
    sel = (tracks.int_t >= start) & (tracks.int_t <= end) & (tracks.int_db > tracks.silence_db)
    if not np.any(sel):
        return None
    t = tracks.int_t[sel]
    return float(t[0]) - FRAME_S, float(t[-1]) + FRAME_S


def _energy_pauses(tracks: _Tracks, start: float, end: float) -> list[tuple[float, float]]:
    """(duration, start time) of the silent runs >= MIN_PAUSE_S strictly inside the sounding part of
    [start, end]."""
    extent = _sounding_extent(tracks, start, end)
    if extent is None:
        return []
    sel = (tracks.int_t >= extent[0]) & (tracks.int_t <= extent[1])
    times = tracks.int_t[sel]
    silent = tracks.int_db[sel] <= tracks.silence_db
    pauses, run = [], 0
    for i, s in enumerate(silent):
        if s:
            run += 1
        else:
            if run * FRAME_S >= MIN_PAUSE_S:
                pauses.append((round(run * FRAME_S, 2), float(times[i - run])))
            run = 0
    return pauses


def _syllable_nuclei(tracks: _Tracks, start: float, end: float) -> int:
    """Count syllable nuclei: intensity peaks above the silence threshold, >= 2 dB above the dip before them,
    and voiced (de Jong & Wempe, 2009, simplified)."""
    sel = (tracks.int_t >= start) & (tracks.int_t <= end)
    t, db = tracks.int_t[sel], tracks.int_db[sel]
    if len(db) < 3:
        return 0
    count, dip, last_peak = 0, db[0], None
    for i in range(1, len(db) - 1):
        dip = min(dip, db[i])
        if db[i] >= db[i - 1] and db[i] > db[i + 1] and db[i] > tracks.silence_db:
            if last_peak is not None and db[i] - dip < 2.0:
                continue
            if last_peak is not None and last_peak - dip < 2.0 and db[i] <= last_peak:
                continue
            if _voiced_at(tracks, t[i]):
                count += 1
                last_peak, dip = db[i], db[i]
    return count


def _voiced_at(tracks: _Tracks, t: float) -> bool:
    """Whether a pitch frame within 25 ms of ``t`` is voiced (an intensity peak may fall between F0 frames)."""
    lo = int(np.searchsorted(tracks.pitch_t, t - 0.025))
    hi = int(np.searchsorted(tracks.pitch_t, t + 0.025, side="right"))
    return bool(np.any(tracks.pitch_hz[lo:hi] > 0))


def _contour(t: np.ndarray, st: np.ndarray) -> tuple[float | None, float | None]:
    """Overall and final pitch movement in semitones, from least-squares slopes over voiced frames."""
    if len(t) < MIN_VOICED_FRAMES:
        return None, None
    span = float(t[-1] - t[0])
    if span <= 0:
        return None, None
    slope = float(np.polyfit(t, st, 1)[0])
    overall = slope * span
    # The final movement carries question/continuation/finality: the last 30 % of the voiced span, >= 0.3 s.
    tail_start = t[-1] - max(0.3, 0.3 * span)
    tail = t >= tail_start
    final = None
    if np.count_nonzero(tail) * PITCH_STEP_S >= 0.05 and float(t[tail][-1] - t[tail][0]) > 0.1:
        tail_slope = float(np.polyfit(t[tail], st[tail], 1)[0])
        final = tail_slope * float(t[tail][-1] - t[tail][0])
    return overall, final


def _measure_unit(
    tracks: _Tracks, start: float, end: float, words: list | None, transcript_words: int | None
) -> UnitFeatures:
    call = require("parselmouth.praat", "audio", "Praat prosody").call
    u = UnitFeatures(round(start, 3), round(end, 3))
    sel = (tracks.pitch_t >= start) & (tracks.pitch_t <= end)
    f0 = tracks.pitch_hz[sel]
    voiced = f0 > 0
    u.voiced_fraction = float(np.mean(voiced)) if len(f0) else 0.0
    if np.count_nonzero(voiced) >= MIN_VOICED_FRAMES:
        hz = f0[voiced]
        st = 12.0 * np.log2(hz / 100.0)
        u.f0_mean_hz = float(np.mean(hz))
        p10, p90 = np.percentile(st, [10, 90])
        u.f0_range_st = float(p90 - p10)
        u.f0_change_st, u.f0_final_change_st = _contour(tracks.pitch_t[sel][voiced], st)
        if tracks.points is not None:
            jit = call(tracks.points, "Get jitter (local)", start, end, 0.0001, 0.02, 1.3)
            shim = call(
                [tracks.sound, tracks.points], "Get shimmer (local)", start, end, 0.0001, 0.02, 1.3, 1.6
            )
            u.jitter_pct = None if not math.isfinite(jit) else 100.0 * jit
            u.shimmer_pct = None if not math.isfinite(shim) else 100.0 * shim
    # HNR from the F0 analysis' autocorrelation peak r of voiced frames, HNR = 10 log10(r / (1 - r)) (Boersma
    # 1993), the definition Praat's harmonicity uses.
    r = np.clip(tracks.pitch_strength[sel][voiced], 1e-6, 1 - 1e-6) if np.any(voiced) else np.array([])
    if len(r) >= MIN_VOICED_FRAMES:
        u.hnr_db = float(np.mean(10.0 * np.log10(r / (1.0 - r))))
    if tracks.loudness is not None and tracks.loudness_t is not None:
        lsel = (tracks.loudness_t >= start) & (tracks.loudness_t <= end)
        if np.any(lsel):
            u.loudness, u.loudness_unit = float(np.mean(tracks.loudness[lsel])), "sone"
    else:
        # No openSMILE: intensity in dB over the sounding frames (uncalibrated).
        isel = (tracks.int_t >= start) & (tracks.int_t <= end) & (tracks.int_db > tracks.silence_db)
        if np.any(isel):
            u.loudness, u.loudness_unit = float(np.mean(tracks.int_db[isel])), "dB"

    extent = _sounding_extent(tracks, start, end)
    if words:
        first, last = words[0].start, words[-1].end
        span = max(1e-3, last - first)
        u.n_words = len(words)
        u.words_per_s = len(words) / span if span >= 0.3 else None
        u.rate_source = SRC_ASR
        gaps = [(b.start - a.end, a.end) for a, b in itertools.pairwise(words)]
        u.pauses = [round(g, 2) for g, _ in gaps if g >= MIN_PAUSE_S]
        u.pause_spans = [(round(t, 3), round(t + g, 3)) for g, t in gaps if g >= MIN_PAUSE_S]
        u.pause_share = sum(u.pauses) / span if span > 0 else None
        u.pause_source = SRC_ASR
    else:
        if extent is not None:
            span = extent[1] - extent[0]
            if transcript_words and span >= 0.3:
                u.n_words = transcript_words
                u.words_per_s = transcript_words / span
                u.rate_source = "transcript + energy"
            elif span >= 0.3:
                u.syllables_per_s = _syllable_nuclei(tracks, extent[0], extent[1]) / span
                u.rate_source = SRC_PRAAT
            found = _energy_pauses(tracks, start, end)
            u.pauses = [d for d, _ in found]
            u.pause_spans = [(round(t, 3), round(t + d, 3)) for d, t in found]
            u.pause_share = sum(u.pauses) / span if span > 0 else None
            u.pause_source = SRC_PRAAT
    return u


def _units_from_windows(tracks: _Tracks, duration: float, window_s: float) -> list[tuple[float, float]]:
    extent = _sounding_extent(tracks, 0.0, duration)
    if extent is None:
        return []
    lo, hi = max(0.0, extent[0]), min(duration, extent[1])
    if hi - lo <= 1.5 * window_s:
        return [(lo, hi)]
    bounds, t = [lo], lo
    while hi - t > 1.5 * window_s:
        target = t + window_s
        # Snap the boundary to the quietest frame within +-1 s, so a window does not cut a word in half.
        near = (tracks.int_t >= max(target - 1.0, t + 0.5 * window_s)) & (tracks.int_t <= target + 1.0)
        if np.any(near):
            target = float(tracks.int_t[near][int(np.argmin(tracks.int_db[near]))])
        bounds.append(target)
        t = target
    bounds.append(hi)
    return list(itertools.pairwise(bounds))


def measure_prosody(
    audio: AudioData,
    transcript: Transcript | None = None,
    sex: str | None = None,
    transcript_text: str | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    use_opensmile: bool = True,
    signals: dict[str, Any] | None = None,
) -> list[UnitFeatures]:
    """Raw per-utterance (or per-window) measurements; :func:`extract_prosody` turns them into cues.

    ``signals``, when given, receives the contours the measurements came from (see :func:`contour_signals`).
    """
    if audio.duration < 0.1 or audio.peak_dbfs() < SILENT_PEAK_DBFS:
        return []
    voice = normalize_sex(sex)
    tracks = _praat_tracks(audio, voice)
    if use_opensmile:
        tracks.loudness_t, columns = _opensmile_tracks(audio)
        tracks.loudness = columns["Loudness_sma3"]
    if np.count_nonzero(tracks.pitch_hz > 0) >= MIN_VOICED_FRAMES:
        call = require("parselmouth.praat", "audio", "Praat prosody").call
        tracks.points = call([tracks.sound, tracks.pitch], "To PointProcess (cc)")
    segments = [s for s in (transcript.segments if transcript else []) if s.end > s.start]
    if segments:
        spans = [(s.start, min(s.end, audio.duration), s.words) for s in segments]
    else:
        spans = [(a, b, None) for a, b in _units_from_windows(tracks, audio.duration, window_s)]
    text_words = (
        len(transcript_text.split()) if transcript_text and not segments and len(spans) == 1 else None
    )
    units = [_measure_unit(tracks, a, b, w, text_words) for a, b, w in spans if b - a > 0.05]
    if signals is not None:
        signals.update(contour_signals(tracks, units, audio.duration))
    return units


def regular_series(
    t: np.ndarray, values: np.ndarray, end: float, reduce: str = "mean", keep: np.ndarray | None = None
) -> dict[str, Any]:
    """``values`` at times ``t`` on a regular grid from 0 to ``end`` (``{"step", "values"}``, value i at
    ``(i + 0.5) * step``), reduced per bin by ``"mean"``, ``"median"`` or ``"max"``; a bin with no kept frame
    is ``None``. The step is SIGNAL_STEP_S, coarser for long clips so at most MAX_SIGNAL_POINTS remain."""
    step = max(SIGNAL_STEP_S, end / MAX_SIGNAL_POINTS) if end > 0 else SIGNAL_STEP_S
    n = max(1, math.ceil(end / step))
    ok = np.isfinite(values) if keep is None else keep & np.isfinite(values)
    bins = np.minimum((t[ok] / step).astype(int), n - 1)
    kept = values[ok]
    fn = {"mean": np.mean, "median": np.median, "max": np.max}[reduce]
    out: list[float | None] = [None] * n
    for b in np.unique(bins[bins >= 0]):
        out[int(b)] = round(float(fn(kept[bins == b])), 3)
    return {"step": round(step, 4), "values": out}


def contour_signals(tracks: _Tracks, units: list[UnitFeatures], duration: float) -> dict[str, Any]:
    """The clip's pitch contour (Hz, voiced frames only), loudness contour (eGeMAPS sone, or Praat intensity in
    dB in fast mode) and pause spans, small enough to keep with the cues (``Clip.signals``)."""
    voiced = tracks.pitch_hz > 0
    out: dict[str, Any] = {
        "pitch": {
            "unit": "Hz",
            "source": SRC_PRAAT,
            **regular_series(tracks.pitch_t, tracks.pitch_hz, duration, "median", voiced),
        }
    }
    if tracks.loudness is not None and tracks.loudness_t is not None:
        loud = regular_series(tracks.loudness_t, np.asarray(tracks.loudness, float), duration)
        out["loudness"] = {"unit": "sone", "source": SRC_OPENSMILE, **loud}
    else:
        # The same sounding-frame intensity the fast mode's loudness cue averages.
        sounding = tracks.int_db > tracks.silence_db
        loud = regular_series(tracks.int_t, tracks.int_db, duration, "mean", sounding)
        out["loudness"] = {"unit": "dB", "source": SRC_PRAAT, **loud}
    out["pauses"] = [
        {"start": a, "end": b, "source": u.pause_source} for u in units for a, b in u.pause_spans
    ]
    return out


# ------------------------------------------------------------------------------------------- cues


def _fmt(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}"


def _signed(z: float) -> str:
    return f"{z:+.1f} SD"


def _contour_word(change: float | None, final: float | None) -> str | None:
    if change is None:
        return None
    overall = "rising" if change > 2.0 else "falling" if change < -2.0 else "flat"
    if final is None:
        return overall
    if final > 1.5 and overall != "rising":
        return f"{overall} with a final rise" if overall != "flat" else "flat with a final rise"
    if final < -1.5 and overall != "falling":
        return f"{overall} with a final fall"
    return overall


def extract_prosody(
    audio: AudioData,
    transcript: Transcript | None = None,
    sex: str | None = None,
    transcript_text: str | None = None,
    baseline: SpeakerBaseline | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    use_opensmile: bool = True,
    signals: dict[str, Any] | None = None,
) -> list[Cue]:
    """Acoustic cues for each utterance (ASR segment) or window. See the module docstring for baselines.

    Silent or unvoiced audio yields one explicit ``speech activity: no speech detected`` cue, never an error.
    ``baseline`` (e.g. ``SpeakerBaseline.from_units(...)`` over the speaker's other clips) overrides both the
    in-clip baseline and the population norms. ``signals``, when given, receives the contours
    (:func:`contour_signals`) and, under ``"bands"``, each unit's band edges (:func:`band_edges`).
    """
    units = measure_prosody(audio, transcript, sex, transcript_text, window_s, use_opensmile, signals)
    if not units or all(u.voiced_fraction == 0 and u.f0_mean_hz is None for u in units):
        return [no_speech_cue(audio)]
    voice = normalize_sex(sex)
    cues: list[Cue] = []
    bands: list[dict[str, Any]] = []
    for i, unit in enumerate(units):
        if baseline is not None:
            base = baseline
        elif len(units) >= MIN_UNITS_FOR_SPEAKER_BASELINE:
            base = SpeakerBaseline.from_units(units[:i] + units[i + 1 :], "speaker")
        else:
            base = None
        cues.extend(_unit_cues(unit, base, voice))
        for name, present in (("pitch", unit.f0_mean_hz), ("loudness", unit.loudness)):
            edges = None if present is None else band_edges(name, base, voice)
            if edges is not None:
                bands.append({"feature": name, "start": unit.start, "end": unit.end, **edges})
    if signals is not None:
        signals["bands"] = bands
    return cues


def band_edges(name: str, base: SpeakerBaseline | None, voice: str) -> dict[str, Any] | None:
    """The values (Hz for pitch) at the band cut points :func:`_banded` applies to feature ``name``, and what
    they are relative to: ``{"edges": [v(-2 SD), v(-1 SD), v(+1 SD), v(+2 SD)], "labels", "reference"}``, or
    None where the cue has no band. The cue timeline shades them behind the contour."""
    cuts = load_norms()["bands"]["cuts"]
    mean = sd = None
    if base is not None and name in base.stats:
        mean, raw_sd = base.stats[name]
        floor = MIN_SD[name] * abs(mean) if name == "loudness" else MIN_SD[name]
        sd, reference = max(raw_sd, floor, 1e-9), f"{base.label} baseline"
    elif base is None or name in load_norms()["features"]:
        spec = load_norms()["features"].get(name)
        norm = None if spec is None else spec.get(voice) or spec.get("any") or spec.get("unknown")
        if norm is None:
            return None
        if name == "pitch":
            sd = norm.get("sd_semitones") or 12.0 * math.log2(1.0 + norm["sd"] / norm["mean"])
            mean = hz_to_st(norm["mean"])
        else:
            mean, sd = norm["mean"], norm["sd"]
        reference = norm["label"]
    if mean is None or sd is None:
        return None
    values = [mean + cut * sd for cut in cuts]
    if name == "pitch":  # baselines and norms are on the semitone scale; the contour is in Hz
        values = [100.0 * 2.0 ** (v / 12.0) for v in values]
    return {
        "edges": [round(v, 3) for v in values],
        "labels": list(load_norms()["bands"]["labels"]),
        "reference": reference,
    }


def no_speech_cue(audio: AudioData) -> Cue:
    peak = audio.peak_dbfs()
    level = "digital silence" if not math.isfinite(peak) else f"peak {peak:.0f} dBFS"
    return Cue(
        ACOUSTIC,
        "speech activity",
        value="no speech detected",
        start=0.0,
        end=round(audio.duration, 3),
        source=SRC_PRAAT,
        detail=f"no speech detected (no voiced sound; {level})",
    )


def _banded(
    name: str, value: float, base: SpeakerBaseline | None, voice: str, base_value: float | None = None
) -> tuple[str | None, str | None]:
    """(band, "+1.8 SD vs speaker") for a feature value, or (None, None) when there is no baseline for it."""
    v = value if base_value is None else base_value
    if base is not None:
        z = base.z(name, v)
        if z is not None:
            return band_of(z), f"{_signed(z)} vs {base.label}"
        if name not in load_norms()["features"]:
            return None, None
    got = norm_z(name, value, voice)
    if got is None:
        return None, None
    z, label = got
    return band_of(z), f"{_signed(z)} vs {label}"


def _unit_cues(u: UnitFeatures, base: SpeakerBaseline | None, voice: str) -> list[Cue]:
    out: list[Cue] = []

    def add(
        name: str, value: float | str, unit: str | None, band: str | None, source: str, detail: str
    ) -> None:
        out.append(
            Cue(
                ACOUSTIC,
                name,
                value if isinstance(value, str) else round(float(value), 3),
                unit,
                band,
                u.start,
                u.end,
                source,
                None,
                detail,
            )
        )

    if u.f0_mean_hz is not None:
        band, rel = _banded("pitch", u.f0_mean_hz, base, voice, hz_to_st(u.f0_mean_hz))
        contour = _contour_word(u.f0_change_st, u.f0_final_change_st)
        head = " and ".join(x for x in (band, contour) if x) or "measured"
        bits = [f"mean {u.f0_mean_hz:.0f} Hz"] + ([rel] if rel else [])
        add("pitch", u.f0_mean_hz, "Hz", band, SRC_PRAAT, f"{head} ({', '.join(bits)})")
    if u.loudness is not None:
        unit = u.loudness_unit or "sone"
        band, rel = _banded("loudness", u.loudness, base, voice)
        src = SRC_OPENSMILE if unit == "sone" else SRC_PRAAT
        desc = band or "level measured"
        extra = rel or "uncalibrated level, no speaker baseline"
        add("loudness", u.loudness, unit, band, src, f"{desc} ({_fmt(u.loudness, 2)} {unit}, {extra})")
    if u.words_per_s is not None or u.syllables_per_s is not None:
        if u.words_per_s is not None:
            key, value, unit = "speaking rate (words)", u.words_per_s, "words/s"
            how = f"{u.n_words} words" + (
                " from ASR word times" if u.rate_source == SRC_ASR else " over the voiced span"
            )
        else:
            key, value, unit = "speaking rate (syllables)", u.syllables_per_s or 0.0, "syll/s"
            how = "syllable nuclei estimate"
        band, rel = _banded(key, value, base, voice)
        desc = {
            "very low": "very slow",
            "low": "slow",
            "average": "average",
            "high": "fast",
            "very high": "very fast",
        }
        head = desc.get(band or "", "measured")
        bits = [f"{value:.1f} {unit}", how] + ([rel] if rel else [])
        add("speaking rate", value, unit, band, u.rate_source or SRC_PRAAT, f"{head} ({', '.join(bits)})")
    if u.f0_range_st is not None:
        band, rel = _banded("pitch range", u.f0_range_st, base, voice)
        desc = {
            "very low": "very narrow (monotone)",
            "low": "narrow",
            "average": "average",
            "high": "wide",
            "very high": "very wide",
        }
        head = desc.get(band or "", "measured")
        bits = [f"{u.f0_range_st:.1f} semitones, 10th-90th percentile"] + ([rel] if rel else [])
        add("pitch range", u.f0_range_st, "st", band, SRC_PRAAT, f"{head} ({', '.join(bits)})")
    if u.f0_change_st is not None:
        word = _contour_word(u.f0_change_st, u.f0_final_change_st) or "flat"
        final = "" if u.f0_final_change_st is None else f", {u.f0_final_change_st:+.1f} st at the end"
        add(
            "pitch contour",
            u.f0_change_st,
            "st",
            word,
            SRC_PRAAT,
            f"{word} ({u.f0_change_st:+.1f} st overall{final})",
        )
    if u.pause_share is not None:
        n = len(u.pauses)
        band, rel = _banded("pause share", u.pause_share, base, voice)
        if n:
            text = (
                f"{n} pause{'s' if n > 1 else ''}, mean {np.mean(u.pauses):.2f} s, max {max(u.pauses):.2f} s, "
                f"{100 * u.pause_share:.0f}% silence"
            )
        else:
            text = "no pauses of 0.25 s or longer"
        add(
            "pauses",
            float(n),
            "pauses",
            band,
            u.pause_source or SRC_PRAAT,
            text + (f" ({rel})" if rel else ""),
        )
    for key, value, unit, src, what in (
        (
            "HNR",
            u.hnr_db,
            "dB",
            SRC_PRAAT,
            "harmonics-to-noise ratio; lower = breathier/hoarser",
        ),
        ("jitter", u.jitter_pct, "%", SRC_PRAAT, "cycle-to-cycle pitch perturbation"),
        ("shimmer", u.shimmer_pct, "%", SRC_PRAAT, "cycle-to-cycle amplitude perturbation"),
    ):
        if value is None:
            continue
        band, rel = _banded(key, value, base, voice)
        add(
            key,
            value,
            unit,
            band,
            src,
            f"{band or 'measured'} ({value:.2f} {unit}, {what}"
            + (f", {rel})" if rel else "; no speaker baseline)"),
        )
    return out
