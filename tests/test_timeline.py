"""The cue timeline: the signals the textualizers keep, the PNG, citations, and the commands that draw it."""

from __future__ import annotations

import bisect
import io
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("parselmouth")
from PIL import Image

from affectllm.cli.main import main
from affectllm.media import AudioData
from affectllm.schema import ACOUSTIC, FACIAL, LINGUISTIC, SCENE, Clip, Cue, Prediction, RationaleItem
from affectllm.textualize.asr import Segment, Transcript
from affectllm.textualize.audio import audio_cues
from affectllm.textualize.face import face_cues_from_csv
from affectllm.textualize.prosody import extract_prosody
from affectllm.timeline import COLORS, cited_ids, render_timeline, timeline_tracks, ungrounded_ids

SR = 16000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def voiced(f0_from: float, f0_to: float, seconds: float) -> np.ndarray:
    """A vowel-like buzz gliding from ``f0_from`` to ``f0_to`` Hz (harmonics, so Praat finds its pitch)."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(np.linspace(f0_from, f0_to, len(t))) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 8))
    ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (0.3 * wave * ramp).astype(np.float32)


def utterances_with_a_pause() -> AudioData:
    """1.2 s rising glide, 0.6 s silence, 1.2 s falling glide."""
    samples = np.concatenate(
        [voiced(140, 220, 1.2), np.zeros(int(0.6 * SR), np.float32), voiced(200, 130, 1.2)]
    )
    return AudioData.from_array(samples, SR)


def write_au_csv(path: Path, fps: float = 30.0, seconds: float = 3.0) -> Path:
    """AU12 rises to 3.2 at 1.5 s (a smile), AU01 stays absent."""
    rows = ["frame, face_id, timestamp, confidence, success, AU01_r, AU12_r, AU01_c, AU12_c"]
    for i in range(int(seconds * fps)):
        t = i / fps
        au12 = max(0.0, 3.2 - 4.0 * abs(t - 1.5)) if 0.8 <= t <= 2.2 else 0.0
        rows.append(f"{i + 1}, 0, {t:.3f}, 0.97, 1, 0.0, {au12:.3f}, 0, {int(au12 >= 0.5)}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def measured_clip(tmp_path_factory) -> Clip:
    """A clip built by the real extractors: prosody from synthetic audio, AUs from a CSV, plus captions and
    timed speech lines."""
    signals: dict = {}
    cues, _ = audio_cues(utterances_with_a_pause(), asr=None, signals=signals)
    csv = write_au_csv(tmp_path_factory.mktemp("au") / "x.openface.csv")
    cues += face_cues_from_csv(csv, signals=signals)
    cues += [
        Cue(SCENE, "scene", value="a person smiles at a birthday cake", start=0.0, end=3.0),
        Cue(LINGUISTIC, "speech", value="No way!", start=0.0, end=1.2),
        Cue(LINGUISTIC, "speech", value="I love it.", start=1.8, end=3.0),
    ]
    return Clip("synthetic", cues, duration=3.0, signals=signals)


def cited_pixels(png: bytes) -> int:
    """Pixels drawn in the timeline's 'cited' colour (nothing else uses it)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    target = np.array([int(COLORS["cited"][i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).sum(axis=2) < 30).sum())


# ------------------------------------------------------------------------------------------------ signals


def test_textualizers_keep_small_json_contours_pauses_and_au_series(measured_clip):
    signals = measured_clip.signals
    pitch = [v for v in signals["pitch"]["values"] if v is not None]
    assert signals["pitch"]["unit"] == "Hz" and 120 < min(pitch) < 160 and 190 < max(pitch) < 240
    # The silent 0.6 s between the utterances is unvoiced: gaps in the contour, and one pause.
    step = signals["pitch"]["step"]
    gap = signals["pitch"]["values"][int(1.35 / step) : int(1.65 / step)]
    assert gap and all(v is None for v in gap)
    assert signals["loudness"]["unit"] in ("sone", "dB") and any(signals["loudness"]["values"])
    [pause] = signals["pauses"]
    assert 1.1 < pause["start"] < 1.35 and 1.65 < pause["end"] < 1.9
    assert set(signals["au"]["series"]) == {"AU12"}  # AU01 never appears in a cue, so it is not kept
    au12 = signals["au"]["series"]["AU12"]
    apex = (au12.index(max(v for v in au12 if v is not None)) + 0.5) * signals["au"]["step"]
    assert abs(apex - 1.5) < 0.1 and abs(max(v for v in au12 if v is not None) - 3.2) < 0.1
    encoded = json.dumps(measured_clip.to_dict())
    assert len(json.dumps(signals)) < 10_000
    again = Clip.from_dict(json.loads(encoded))
    assert again.signals == signals and again.without(FACIAL).signals == signals


@pytest.mark.parametrize("n_segments", [1, 3])
def test_band_edges_are_the_cut_points_the_pitch_cues_were_banded_with(n_segments):
    """One unit: bands against the population norm; three: against the speaker's other utterances."""
    pieces = [voiced(f0, f0 * 1.1, 0.8) for f0 in (120, 160, 210)[:n_segments]]
    silence = np.zeros(int(0.3 * SR), np.float32)
    samples = np.concatenate([x for p in pieces for x in (p, silence)])
    segments = [Segment("w", i * 1.1, i * 1.1 + 0.8) for i in range(n_segments)]
    signals: dict = {}
    transcript = Transcript("w", "en", [], segments) if n_segments > 1 else None
    cues = extract_prosody(AudioData.from_array(samples, SR), transcript, signals=signals)
    pitch_cues = [c for c in cues if c.name == "pitch"]
    bands = [b for b in signals["bands"] if b["feature"] == "pitch"]
    assert len(bands) == len(pitch_cues) == n_segments
    for cue, band in zip(pitch_cues, bands, strict=True):
        assert (band["start"], band["end"]) == (cue.start, cue.end)
        assert band["edges"] == sorted(band["edges"])
        # Where the cue's mean pitch falls among the edges is the band the cue states.
        assert band["labels"][bisect.bisect_right(band["edges"], cue.value)] == cue.band
        expected = "speaker baseline" if n_segments == 3 else "norm"
        assert expected in band["reference"]


# ---------------------------------------------------------------------------------------------- drawing


def test_timeline_png_highlights_cited_cues_and_lists_ungrounded_ids(measured_clip, tmp_path):
    evidence = {e.id: e.cue for e in measured_clip.evidence()}
    smile = next(i for i, c in evidence.items() if c.name.startswith("AU12"))
    pitch = next(i for i, c in evidence.items() if c.name == "pitch")
    prediction = Prediction(
        emotions=["joy"],
        rationale=[
            RationaleItem("smiles", cue_id=smile),
            RationaleItem(f"the pitch rises ({pitch})"),
            RationaleItem("says she loves it [L2]"),
        ],
        errors=["cited unknown cue id 'F42'"],
    )
    assert cited_ids(prediction) == [smile, "F42", pitch, "L2"]
    assert ungrounded_ids(measured_clip, prediction) == ["F42"]

    out = tmp_path / "timeline.png"
    png = render_timeline(measured_clip, prediction, path=out)
    assert png.startswith(PNG_SIGNATURE) and out.read_bytes() == png
    image = Image.open(io.BytesIO(png))
    image.verify()
    width, height = Image.open(io.BytesIO(png)).size
    assert width == 1210 and 500 < height < 2500  # 11 in at 110 dpi; one row per kind of evidence
    plain = render_timeline(measured_clip)
    assert cited_pixels(plain) == 0 and cited_pixels(png) > 100

    tracks = timeline_tracks(measured_clip)
    assert tracks["lanes"] == ["words", "voice", "pitch", "loudness", "AU12", "scene"]
    assert tracks["words_source"] == "transcript lines" and tracks["duration"] == 3.0
    au = next(c for c in tracks["cues"] if c["id"] == smile)
    assert au["lane"] == "AU12" and abs(au["apex"] - 1.5) < 0.15
    assert {c["lane"] for c in tracks["cues"] if c["modality"] == ACOUSTIC} <= {"voice", "pitch", "loudness"}
    assert render_timeline(measured_clip, width=6.0) != plain  # the width is the caller's


@pytest.mark.parametrize(
    "clip",
    [
        Clip("t1", transcript="No way, is this for me? I love it!"),
        Clip("t2", [Cue(FACIAL, "blink rate", value=20.0, unit="per min", band="typical")]),
        Clip("t3", [Cue(LINGUISTIC, "speech", value="hello", start=0.0, end=None)]),
        Clip("empty"),
    ],
    ids=["transcript-only", "untimed-cue", "no-end-time", "no-evidence"],
)
def test_clips_without_timed_evidence_still_draw(clip):
    prediction = Prediction(emotions=["joy"], rationale=[RationaleItem("said so", cue_id="L1")])
    png = render_timeline(clip, prediction)
    width, height = Image.open(io.BytesIO(png)).size
    assert width == 1210 and 150 < height < 1200
    tracks = timeline_tracks(clip)
    if clip.clip_id == "t1":
        assert (
            tracks["lanes"] == ["words"] and tracks["words"] == [] and ungrounded_ids(clip, prediction) == []
        )
    if clip.clip_id == "empty":
        assert tracks["lanes"] == [] and ungrounded_ids(clip, prediction) == ["L1"]


# ---------------------------------------------------------------------------------------------- commands


def test_textualize_plot_draws_the_clip_and_json_carries_the_signals(tmp_path, capsys):
    import soundfile

    wav = tmp_path / "x.wav"
    soundfile.write(wav, utterances_with_a_pause().samples, SR)
    write_au_csv(tmp_path / "x.openface.csv")
    out, record = tmp_path / "plots" / "x.png", tmp_path / "x.json"
    assert main(["textualize", str(wav), "--asr", "none", "--plot", str(out), "--json", str(record)]) == 0
    assert "AU12 lip corner puller" in capsys.readouterr().out
    assert Image.open(out).size[0] == 1210
    signals = json.loads(record.read_text())["signals"]
    assert {"pitch", "loudness", "pauses", "bands", "au"} <= set(signals)
    # The second run reads the cache; the contours come with it, so the plot has them without re-extracting.
    again = tmp_path / "again.png"
    assert main(["textualize", str(wav), "--asr", "none", "--plot", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()
    assert main(["textualize", str(tmp_path), "--out", str(tmp_path / "b.jsonl"), "--plot", str(out)]) == 2
    assert "--plot is for a single clip" in capsys.readouterr().err


def test_chat_repl_plot_highlights_the_last_answers_citations(tmp_path, monkeypatch, capsys):
    clip = tmp_path / "greeting.txt"
    clip.write_text("No way, is this for me? Thank you, I love it!\n", encoding="utf-8")
    answer = {
        "emotions": ["joy"],
        "rationale": [{"id": "L1", "cue": "says she loves it"}, {"id": "F7", "cue": "smiles"}],
    }
    replies = tmp_path / "replies.jsonl"
    replies.write_text(json.dumps(f"<answer>{json.dumps(answer)}</answer>") + "\n", encoding="utf-8")
    target = tmp_path / "t.png"
    monkeypatch.setattr(
        sys, "stdin", io.StringIO(f"/help\n/plot {target}\n/plot {clip / 'under-a-file.png'}\nexit\n")
    )
    monkeypatch.chdir(tmp_path)
    assert main(["chat", str(clip), "--backend", "mock", "--model", str(replies)]) == 0
    out = capsys.readouterr().out
    assert "/plot [FILE]" in out
    assert f"wrote the cue timeline to {target} (cited but not in the evidence: F7)" in out
    assert "could not plot to" in out  # a bad path is reported and the session goes on
    assert cited_pixels(target.read_bytes()) > 0


def test_report_shows_a_few_samples_with_their_timelines(measured_clip, tmp_path):
    from affectllm.report import SAMPLES_SHOWN, write_report

    smile = next(e.id for e in measured_clip.evidence() if e.cue.name.startswith("AU12"))
    lines = [{"id": "broken", "error": "ValueError: no media", "gold": {}}]
    for i in range(SAMPLES_SHOWN + 2):
        lines.append(
            {
                "id": f"s/{i}",
                "emotions": ["joy"],
                "rationale": [{"cue": "smiles", "cue_id": smile, "modality": "facial", "time": None}],
                "answer": "joy",
                "parse_errors": ["cited unknown cue id 'A77'"],
                "gold": {"labels": ["happy"]},
                "clip": measured_clip.to_dict(),
            }
        )
    (tmp_path / "predictions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    metrics = {"task": "demo", "metrics": {}, "primary": {}, "run": {}}
    text = write_report(tmp_path, metrics).read_text()
    assert "## Samples" in text and text.count("### `s/") == SAMPLES_SHOWN and "broken" not in text
    assert "ungrounded): A77" in text and f"[{smile}] smiles" in text
    pngs = sorted(p.name for p in tmp_path.glob("timeline_*.png"))
    assert pngs == [f"timeline_{i + 1}_s_{i}.png" for i in range(SAMPLES_SHOWN)]
    assert all(f"]({name})" in text for name in pngs)
    write_report(tmp_path, metrics, plots=False)  # without plots: the samples, no drawings
    assert "## Samples" in (tmp_path / "report.md").read_text()


def test_precomputed_cues_keep_their_signals(measured_clip, tmp_path):
    """`eval run --cues FILE` reads clips from a textualize JSONL: the timeline's contours come with them."""
    from affectllm.clips import clip_from_row, load_clips_jsonl

    cues = tmp_path / "cues.jsonl"
    cues.write_text(json.dumps({"id": "row1", **measured_clip.to_dict()}) + "\n", encoding="utf-8")
    clip = clip_from_row({"id": "row1", "media": "row1.mp4"}, precomputed=load_clips_jsonl(cues))
    assert clip.clip_id == "row1" and clip.signals == measured_clip.signals


def test_asr_word_times_are_kept_and_drawn(tmp_path):
    """Real speech through faster-whisper: the words row shows the recognised words at their times."""
    import shutil
    import subprocess

    pytest.importorskip("faster_whisper")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from affectllm.media import load_audio

    wav = tmp_path / "speech.wav"
    text = "Please call me back tomorrow morning."
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True, capture_output=True)
    signals: dict = {}
    cues, transcript = audio_cues(load_audio(wav), asr_options={"cpu_threads": 1}, signals=signals)
    words = signals["words"]
    assert [w["text"] for w in words] == [w.text.strip() for s in transcript.segments for w in s.words]
    assert "tomorrow" in " ".join(w["text"].lower() for w in words)
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in itertools.pairwise(words))
    clip = Clip("speech", cues, duration=load_audio(wav).duration, signals=signals)
    tracks = timeline_tracks(clip)
    assert tracks["words_source"] == "ASR word times" and tracks["words"] == words
    assert Image.open(io.BytesIO(render_timeline(clip))).size[0] == 1210


def test_malformed_signals_are_skipped_not_fatal():
    """Signals come from JSON files a person may have edited: unusable entries are left out of the drawing."""
    signals = {
        "pitch": {"step": 0.05, "values": [None, "high", float("nan"), 120.0, 130.0]},
        "loudness": {"step": -1, "values": [1.0]},
        "bands": [{"feature": "pitch", "start": 0, "end": 1, "edges": [1, 2]}, {"feature": "pitch"}],
        "pauses": [{"start": "0.2", "end": 0.5}, {"start": 0.1, "end": 0.2}, "pause"],
        "words": [{"start": 0, "end": 0.1, "text": " "}, {"start": 0.1, "text": "hi"}],
        "au": {"step": 0.1, "series": ["AU12"]},
    }
    clip = Clip("odd", [Cue(LINGUISTIC, "speech", value="hi there", start=0.0, end=0.3)], signals=signals)
    tracks = timeline_tracks(clip)
    assert tracks["pitch"]["values"] == [None, None, None, 120.0, 130.0] and tracks["loudness"] is None
    assert tracks["bands"] == [] and tracks["pauses"] == [{"start": 0.1, "end": 0.2}] and tracks["au"] == {}
    assert tracks["words_source"] == "transcript lines"
    assert tracks["lanes"] == ["words", "voice", "pitch"]
    assert render_timeline(clip).startswith(PNG_SIGNATURE)
