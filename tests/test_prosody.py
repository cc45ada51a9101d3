"""Prosody on real emotional speech (EmoDB): sane values, and the expected direction between emotions of the
same speaker; plus synthetic signals whose pitch contour is known."""

from __future__ import annotations

import csv
import itertools
import math

import numpy as np
import pytest

pytest.importorskip("parselmouth")
pytest.importorskip("opensmile")

from affectllm.media import AudioData, load_audio
from affectllm.schema import ACOUSTIC
from affectllm.textualize.asr import Segment, Transcript, Word
from affectllm.textualize.prosody import (
    SpeakerBaseline,
    band_of,
    extract_prosody,
    load_norms,
    measure_prosody,
    norm_z,
)


@pytest.fixture(scope="module")
def emodb(shared_data):
    root = shared_data / "audio" / "emodb"
    with open(root / "labels.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for row in rows:
        audio = load_audio(root / row["file"])
        unit = measure_prosody(audio, sex=row["gender"])
        out[(row["speaker"], row["emotion"])] = (row, audio, unit)
    return out


def test_values_in_sane_ranges(emodb):
    for (speaker, emotion), (_row, audio, units) in emodb.items():
        assert len(units) == 1, (speaker, emotion)  # one 2 s utterance, no ASR: one window
        u = units[0]
        assert 0.0 <= u.start < u.end <= audio.duration + 1e-6
        assert 60 <= u.f0_mean_hz <= 600
        assert 0 < u.f0_range_st < 30
        assert 0.2 < u.loudness < 5.0  # eGeMAPS loudness (sone-like) of studio speech
        assert -5 < u.hnr_db < 30
        assert 0 < u.jitter_pct < 10 and 0 < u.shimmer_pct < 30
        assert 1.5 < u.syllables_per_s < 9
        assert 0.0 <= u.pause_share < 0.6
    # Male voices are lower than female voices in neutral speech.
    male = emodb[("03", "neutral")][2][0].f0_mean_hz
    female = emodb[("08", "neutral")][2][0].f0_mean_hz
    assert male < 160 < female


@pytest.mark.parametrize(
    ("speaker", "aroused", "calm"),
    [("09", "anger", "boredom"), ("11", "anger", "sadness"), ("03", "happiness", "sadness")],
)
def test_high_arousal_vs_low_arousal_same_speaker(emodb, speaker, aroused, calm):
    hi = emodb[(speaker, aroused)][2][0]
    lo = emodb[(speaker, calm)][2][0]
    assert hi.f0_mean_hz > 1.2 * lo.f0_mean_hz  # raised pitch
    assert hi.loudness > lo.loudness  # louder
    assert hi.syllables_per_s > lo.syllables_per_s  # faster


def test_cues_carry_values_bands_times_and_sources(emodb):
    audio = emodb[("09", "anger")][1]
    cues = extract_prosody(audio, sex="female")
    by_name = {c.name: c for c in cues}
    assert {
        "pitch",
        "loudness",
        "speaking rate",
        "pitch range",
        "pitch contour",
        "pauses",
        "HNR",
        "jitter",
        "shimmer",
    } <= set(by_name)
    assert all(c.modality == ACOUSTIC and c.start is not None and c.end is not None for c in cues)
    pitch = by_name["pitch"]
    assert pitch.unit == "Hz" and pitch.source == "praat"
    assert pitch.band in ("high", "very high")
    assert "vs adult female norm" in pitch.detail and "Hz" in pitch.detail
    assert by_name["loudness"].source == "opensmile:eGeMAPSv02"
    assert by_name["HNR"].source == "praat" and by_name["HNR"].unit == "dB"
    assert by_name["loudness"].band is None  # no population norm for uncalibrated loudness
    # The same voice is further above the male norm; the pooled norm (wider SD) judges it more cautiously.
    z_f = norm_z("pitch", pitch.value, "female")[0]
    z_u = norm_z("pitch", pitch.value, "unknown")[0]
    z_m = norm_z("pitch", pitch.value, "male")[0]
    assert 0 < z_u < z_f < z_m


def test_speaker_baseline_from_other_utterances(emodb):
    """A clip of several utterances of one speaker is banded against the speaker, not the population."""
    parts = [emodb[("09", e)][1] for e in ("boredom", "disgust", "anger", "happiness")]
    sr = parts[0].sample_rate
    gap = np.zeros(int(0.6 * sr), np.float32)
    samples = np.concatenate([np.concatenate([p.samples, gap]) for p in parts])
    audio = AudioData.from_array(samples, sr)
    step = parts[0].duration + 0.6
    segments = [
        Segment(f"utterance {i}", i * step, i * step + parts[0].duration, 0.1, -0.3) for i in range(4)
    ]
    cues = extract_prosody(audio, Transcript("", "de", [], segments), sex="female")
    pitch = [c for c in cues if c.name == "pitch"]
    assert len(pitch) == 4
    assert all("vs speaker" in c.detail for c in pitch)
    bored, angry = pitch[0], pitch[2]
    assert bored.value < angry.value
    assert bored.band in ("very low", "low") and angry.band in ("high", "very high", "average")
    loud = [c for c in cues if c.name == "loudness"]
    assert all(c.band is not None for c in loud)  # speaker baseline makes loudness bandable


def test_synthetic_rising_and_falling_contours():
    sr = 16000
    t = np.arange(int(1.5 * sr)) / sr

    def glide(f0: float, f1: float) -> AudioData:
        freq = f0 * (f1 / f0) ** (t / t[-1])  # exponential glide = linear in semitones
        phase = 2 * np.pi * np.cumsum(freq) / sr
        # A harmonic-rich, vowel-like source so pitch trackers see a voice.
        wave = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.2
        return AudioData.from_array(wave.astype(np.float32), sr)

    rising = {c.name: c for c in extract_prosody(glide(150, 250))}
    falling = {c.name: c for c in extract_prosody(glide(250, 150))}
    assert rising["pitch contour"].band == "rising" and rising["pitch contour"].value > 5
    assert falling["pitch contour"].band.startswith("falling") and falling["pitch contour"].value < -5
    expected_st = 12 * math.log2(250 / 150)
    assert rising["pitch contour"].value == pytest.approx(expected_st, abs=1.5)


def test_silence_gives_a_no_speech_cue():
    cues = extract_prosody(AudioData.from_array(np.zeros(16000, np.float32), 16000))
    assert len(cues) == 1 and cues[0].value == "no speech detected" and "digital silence" in cues[0].detail
    noise = np.random.default_rng(1).normal(0, 0.01, 16000).astype(np.float32)
    cues = extract_prosody(AudioData.from_array(noise, 16000))
    assert [c.name for c in cues] == ["speech activity"]


def test_asr_word_times_drive_rate_and_pauses(emodb):
    audio = emodb[("09", "anger")][1]
    words = [Word("a", 0.1, 0.4), Word("b", 0.45, 0.7), Word("c", 1.1, 1.4), Word("d", 1.45, 1.8)]
    tr = Transcript("a b c d", "de", words, [Segment("a b c d", 0.1, 1.8, 0.05, -0.2, words)])
    cues = {c.name: c for c in extract_prosody(audio, tr, sex="female")}
    rate = cues["speaking rate"]
    assert rate.unit == "words/s" and rate.value == pytest.approx(4 / 1.7, rel=1e-3)
    assert rate.source == "asr word times"
    assert cues["pauses"].value == 1 and "0.40 s" in cues["pauses"].detail


def test_norms_file_and_bands():
    norms = load_norms()
    assert set(norms["sources"]) >= {"holmberg1989", "traunmuller1995"}
    assert norms["features"]["pitch"]["female"]["mean"] > norms["features"]["pitch"]["male"]["mean"]
    assert [band_of(z) for z in (-3, -1.5, 0, 1.5, 3)] == ["very low", "low", "average", "high", "very high"]
    base = SpeakerBaseline({"pitch": (10.0, 0.01)}, 3)
    assert base.z("pitch", 11.0) == pytest.approx(2.0)  # SD floored at 0.5 st


def test_long_audio_without_asr_is_windowed_and_self_baselined(emodb):
    """~26 s of one speaker without ASR: several time-stamped windows, banded against each other."""
    parts = [emodb[("09", e)][1] for e in ("boredom", "disgust", "anger", "happiness")] * 3
    sr = parts[0].sample_rate
    gap = np.zeros(int(0.2 * sr), np.float32)
    audio = AudioData.from_array(np.concatenate([np.concatenate([p.samples, gap]) for p in parts]), sr)
    units = measure_prosody(audio, sex="female", window_s=6.0)
    assert len(units) >= 3
    # Windows tile the speech in order without overlap.
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(units))
    assert units[0].start < 0.5 and units[-1].end > audio.duration - 1.0
    cues = extract_prosody(audio, sex="female", window_s=6.0)
    pitch = [c for c in cues if c.name == "pitch"]
    assert len(pitch) == len(units) and all("vs speaker" in c.detail for c in pitch)


def test_unknown_sex_uses_the_pooled_norm(emodb):
    audio = emodb[("03", "neutral")][1]
    pitch = next(c for c in extract_prosody(audio) if c.name == "pitch")
    assert "pooled adult norm (sex unknown)" in pitch.detail


def _stock_egemaps_lld(audio: AudioData) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The opensmile package's own eGeMAPSv02 LLD set (all 25 columns) through its public API."""
    import opensmile

    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.LowLevelDescriptors)
    # Resampled audio can overshoot +-1.0; Smile.process's int16 cast then wraps round (a click), our engine
    # clips. Compare on the clipped signal, where the two must agree.
    clipped = np.clip(audio.samples, -1.0, 32767 / 32768)
    starts, ends, values = smile.process(clipped, audio.sample_rate)
    names = list(smile.feature_names)
    centres = (starts.total_seconds() + ends.total_seconds()) / 2.0
    return np.asarray(centres), {c: np.asarray(values)[:, names.index(c)] for c in names}


def test_prosody_lld_config_equals_the_full_egemaps_columns(emodb):
    """Our reduced openSMILE configuration gives eGeMAPSv02's loudness column frame for frame, on real speech:
    whole clips, and clips cut in mid-word (speech running into the end of input)."""
    from affectllm.textualize import prosody

    clips = [audio for _, audio, _ in emodb.values()]
    rng = np.random.default_rng(0)
    for audio in list(clips[:6]):
        n = int(rng.integers(4000, len(audio.samples)))
        clips.append(AudioData.from_array(audio.samples[-n:].copy(), audio.sample_rate))
    for audio in clips:
        centres, ours = prosody._opensmile_tracks(audio)  # one engine, reset between clips
        ref_centres, ref = _stock_egemaps_lld(audio)
        # The full set's rows stop where its 60 ms pitch frames do; the 20 ms loudness frames run on to the
        # clip's last 20 ms, one frame apart.
        n = len(ref_centres)
        assert n > 20 and n <= len(centres) <= n + 4
        np.testing.assert_allclose(centres[:n], ref_centres, atol=1e-9)
        np.testing.assert_allclose(np.diff(centres), 0.01, atol=1e-9)
        assert centres[-1] <= audio.duration
        np.testing.assert_allclose(ours["Loudness_sma3"][:n], ref["Loudness_sma3"], rtol=1e-6)


def test_prosody_lld_engine_is_reused_and_reset_between_clips(emodb):
    from affectllm.textualize import prosody

    (_, a, _), (_, b, _) = list(emodb.values())[:2]
    first = prosody._opensmile_tracks(a)
    engine = prosody._egemaps_engine(a.sample_rate)
    assert engine is not None and prosody._egemaps_engine(a.sample_rate) is engine
    prosody._opensmile_tracks(b)
    again = prosody._opensmile_tracks(a)
    np.testing.assert_array_equal(first[0], again[0])
    for col in prosody._SMILE_COLUMNS:
        np.testing.assert_array_equal(first[1][col], again[1][col])
    # Re-registering the sink callback on every clip must not pile up callbacks in the wrapper.
    assert len(getattr(engine._engine, "_callbacks", [])) <= 1
    # Another sample rate gets its own engine; shorter than one analysis frame gives no rows and no crash.
    tiny = AudioData.from_array(np.full(120, 0.1, np.float32), 8000)  # 15 ms: less than one 20 ms frame
    centres, cols = prosody._opensmile_tracks(tiny)
    assert len(centres) == 0 and all(len(v) == 0 for v in cols.values())
    assert prosody._egemaps_engine(8000) is not engine


def test_prosody_lld_config_ships_in_the_package():
    from affectllm.resources import PACKAGE_DIR
    from affectllm.textualize import prosody

    # The wheel packages the whole affectllm/ folder (pyproject: [tool.hatch.build.targets.wheel]), data included.
    conf = prosody.EGEMAPS_LLD_CONFIG
    assert conf.is_file() and conf.resolve().is_relative_to(PACKAGE_DIR)
    assert "cExternalAudioSource" in conf.read_text(encoding="utf-8")


def test_opensmile_falls_back_to_the_full_set_when_the_engine_cannot_start(emodb, monkeypatch):
    from affectllm.textualize import prosody

    _, audio, _ = next(iter(emodb.values()))
    expected = prosody._opensmile_tracks(audio)

    def broken(sample_rate: int) -> None:
        raise RuntimeError("component option renamed")

    monkeypatch.setattr(prosody, "_EgemapsEngine", broken)
    monkeypatch.setattr(prosody, "_engines", type(prosody._engines)())
    centres, cols = prosody._opensmile_tracks(audio)
    # The full set stops a few frames earlier (where its 60 ms pitch frames do); the rest is the same.
    n = len(centres)
    assert n > 20 and n <= len(expected[0]) <= n + 4
    np.testing.assert_allclose(centres, expected[0][:n], atol=1e-9)
    np.testing.assert_allclose(cols["Loudness_sma3"], expected[1]["Loudness_sma3"][:n], rtol=1e-6)


def test_opensmile_changes_only_the_loudness_cue(emodb):
    """openSMILE supplies loudness alone: pitch, HNR, jitter and shimmer come from the one Praat analysis either
    way, so the full and fast paths agree on them exactly and differ only in the loudness measure."""
    for _, audio, _ in list(emodb.values())[:4]:
        full = measure_prosody(audio)
        fast = measure_prosody(audio, use_opensmile=False)
        assert len(full) == len(fast) > 0
        for f, q in zip(full, fast, strict=True):
            for name in ("f0_mean_hz", "f0_range_st", "hnr_db", "jitter_pct", "shimmer_pct", "pause_share"):
                assert getattr(f, name) == getattr(q, name), name
            assert (f.loudness_unit, q.loudness_unit) == ("sone", "dB")
