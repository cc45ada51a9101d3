"""The textualize pipeline: inputs and sidecars, modality toggles, warnings, cache, batches."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from affectllm.batch import read_jsonl
from affectllm.errors import InputError
from affectllm.textualize import TEXTUALIZERS, get_textualizer
from affectllm.textualize.pipeline import (
    cache_path,
    find_sidecars,
    textualize_batch,
    textualize_clip,
)

SAY = "I really did not expect to see you here today."
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def make_video(path: Path, audio: str | None = None, seconds: float = 2.0) -> Path:
    """A tiny test-pattern video; audio: None, "tone", or "speech" (espeak-ng, else the test skips)."""
    cmd = [
        "ffmpeg",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size=64x48:rate=10:duration={seconds}",
    ]
    if audio == "tone":
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=16000:duration={seconds}"]
    elif audio == "speech":
        if shutil.which("espeak-ng") is None:
            pytest.skip("espeak-ng not installed")
        wav = path.with_suffix(".speech.wav")
        subprocess.run(["espeak-ng", "-w", str(wav), SAY], check=True)
        cmd += ["-i", str(wav)]
    cmd += ["-pix_fmt", "yuv420p", "-t", str(seconds)]
    if audio:
        cmd += ["-c:a", "aac"]
    subprocess.run([*cmd, str(path)], check=True)
    return path


def write_au_csv(path: Path, n: int = 20, fps: float = 10.0) -> Path:
    rows = ["frame, face_id, timestamp, confidence, success, AU06_r, AU12_r, AU06_c, AU12_c"]
    for i in range(n):
        on = 5 <= i < 15
        rows.append(
            f"{i + 1}, 0, {i / fps:.3f}, 0.95, 1, {2.0 if on else 0.0}, {3.0 if on else 0.0}, {int(on)}, {int(on)}"
        )
    path.write_text("\n".join(rows) + "\n")
    return path


def write_captions(path: Path) -> Path:
    path.write_text(json.dumps([{"start": 0, "end": 1, "text": "A test pattern fills the screen."}]))
    return path


def modalities_of(clip) -> set[str]:
    return {c.modality for c in clip.cues}


# --------------------------------------------------------------------------------------------------- inputs


def test_registry_is_lazy_and_resolves():
    assert set(TEXTUALIZERS) >= {"audio", "face", "scene", "transcript"}
    assert get_textualizer("face").__name__ == "face_cues_from_csv"
    with pytest.raises(ValueError):
        get_textualizer("smell")


def test_transcript_only_row_and_sidecar_only_path(tmp_path):
    clip = textualize_clip({"id": "t1", "transcript": "Well, that went great."}, use_cache=False)
    assert clip.clip_id == "t1" and clip.transcript == "Well, that went great."
    assert [(c.modality, c.name, c.value) for c in clip.cues] == [
        ("linguistic", "transcript", "Well, that went great.")
    ]

    (tmp_path / "u.transcript.txt").write_text("[00:00.0-00:01.2] Hello there.\n[00:01.5] Bye.\n")
    write_au_csv(tmp_path / "u.openface.csv")
    clip = textualize_clip(tmp_path / "u.transcript.txt", use_cache=False)
    assert clip.clip_id == "u" and clip.media is None
    speech = [c for c in clip.cues if c.modality == "linguistic"]
    assert [(c.name, c.start, c.end) for c in speech] == [("speech", 0.0, 1.2), ("speech", 1.5, None)]
    assert "facial" in modalities_of(clip)  # the AU sidecar of the same stem was found


@needs_ffmpeg
def test_sidecars_found_by_name_next_to_video_without_audio(tmp_path):
    video = make_video(tmp_path / "clip.mp4")
    write_au_csv(tmp_path / "clip.au.csv")
    write_captions(tmp_path / "clip.captions.json")
    (tmp_path / "clip.transcript.txt").write_text(SAY)
    assert set(find_sidecars(video)) == {"au_csv", "captions", "transcript"}

    clip = textualize_clip(video, use_cache=False)
    assert modalities_of(clip) == {"facial", "visual-scene", "linguistic"}
    assert any(c.name == "AU6+AU12" for c in clip.cues)
    assert clip.transcript == SAY and clip.duration == pytest.approx(2.0, abs=0.1)
    # The audio extractor failed (no audio stream): a warning, not a crash.
    assert (
        len(clip.warnings) == 1
        and clip.warnings[0].startswith("audio:")
        and "no audio stream" in clip.warnings[0]
    )

    only_face = textualize_clip(video, modalities="face", use_cache=False)
    assert modalities_of(only_face) == {"facial", "linguistic"} and not only_face.warnings


@needs_ffmpeg
def test_explicit_sidecars_override_and_extractor_failure_is_a_warning(tmp_path):
    video = make_video(tmp_path / "clip.mp4")
    bad = tmp_path / "elsewhere.csv"
    bad.write_text("frame, timestamp, pose_Rx\n1, 0.0, 0.1\n")
    clip = textualize_clip(
        video,
        modalities=["face", "scene"],
        au_csv=bad,
        captions=write_captions(tmp_path / "c.json"),
        use_cache=False,
    )
    assert modalities_of(clip) == {"visual-scene"}
    assert (
        clip.warnings
        and clip.warnings[0].startswith("face:")
        and "no action-unit columns" in clip.warnings[0]
    )


@needs_ffmpeg
def test_nothing_extractable_raises(tmp_path):
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x01not a video at all" * 50)
    with pytest.raises(InputError, match="no evidence could be extracted"):
        textualize_clip(corrupt, use_cache=False)
    video = make_video(tmp_path / "silent.mp4")
    with pytest.raises(InputError, match="nothing to textualize"):
        textualize_clip(video, modalities="scene", use_cache=False)
    (tmp_path / "c.json").write_text("[]")
    with pytest.raises(InputError, match="unsupported file type"):
        textualize_clip(tmp_path / "c.json")
    with pytest.raises(InputError, match="not found"):
        textualize_clip(tmp_path / "absent.mp4")
    with pytest.raises(InputError, match="unknown extractor"):
        textualize_clip({"id": "x", "transcript": "hi"}, modalities="smell")


def test_manifest_row_paths_resolve_against_base_dir(tmp_path):
    write_au_csv(tmp_path / "faces.csv")
    (tmp_path / "t.txt").write_text("Said words.")
    clip = textualize_clip(
        {"id": "m1", "au_csv": "faces.csv", "transcript": "t.txt"}, base_dir=tmp_path, use_cache=False
    )
    assert clip.transcript == "Said words." and "facial" in modalities_of(clip)
    with pytest.raises(InputError, match="au csv file not found"):
        textualize_clip({"id": "m2", "au_csv": "missing.csv"}, base_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------- cache


def test_cache_hit_on_rerun_and_miss_on_change(tmp_path):
    csv = write_au_csv(tmp_path / "k.openface.csv")
    first = textualize_clip(csv)
    entries = list(cache_path("00").parent.parent.glob("*/*.json"))
    assert len(entries) == 1
    # Prove the rerun reads the cache: a marker written into the entry comes back.
    data = json.loads(entries[0].read_text())
    data["cues"][0]["detail"] = "from the cache"
    entries[0].write_text(json.dumps(data))
    again = textualize_clip(csv)
    assert again.cues[0].detail == "from the cache" and again.clip_id == first.clip_id
    assert textualize_clip(csv, use_cache=False).cues[0].detail != "from the cache"
    # Other options or other content: a new entry.
    textualize_clip(csv, face_options={"confidence_threshold": 0.5})
    write_au_csv(csv, n=25)
    assert textualize_clip(csv).cues[0].detail != "from the cache"
    assert len(list(cache_path("00").parent.parent.glob("*/*.json"))) == 3


# ---------------------------------------------------------------------------------------------------- audio


@needs_ffmpeg
def test_video_with_speech_gives_acoustic_and_linguistic_cues(tmp_path):
    pytest.importorskip("affectllm.textualize.audio")
    video = make_video(tmp_path / "talk.mp4", audio="speech", seconds=3.5)
    clip = textualize_clip(video, modalities="audio", use_cache=False)
    assert not clip.warnings, clip.warnings
    assert "acoustic" in modalities_of(clip) and "linguistic" in modalities_of(clip)
    assert clip.transcript and "expect" in clip.transcript.lower()

    # A transcript sidecar is authoritative: ASR speech cues give way to it.
    (tmp_path / "talk.transcript.txt").write_text("Words from the sidecar.")
    clip = textualize_clip(video, modalities="audio", use_cache=False)
    assert [c.value for c in clip.cues if c.modality == "linguistic"] == ["Words from the sidecar."]
    assert "acoustic" in modalities_of(clip)


# -------------------------------------------------------------------------------------------------- batches


@needs_ffmpeg
def test_folder_batch_records_errors_keeps_results_and_resumes(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    make_video(folder / "good.mp4")
    write_au_csv(folder / "good.openface.csv")
    (folder / "bad.mp4").write_bytes(b"garbage" * 100)
    (folder / "textonly.transcript.txt").write_text("Just words.")
    (folder / "notes.md").write_text("ignored")
    out = tmp_path / "out.jsonl"

    summary = textualize_batch(folder, out, progress=False)
    assert (summary["total"], summary["done"], summary["failed"], summary["skipped"]) == (3, 2, 1, 0)
    records = {r["id"]: r for r in read_jsonl(out)}
    assert set(records) == {"good", "bad", "textonly"}
    assert "error" in records["bad"] and "bad.mp4" in records["bad"]["error"]
    assert records["good"]["text"].startswith("Facial action units:")
    assert {"clip", "cues", "text", "warnings"} <= set(records["good"])

    again = textualize_batch(folder, out, progress=False)
    assert (again["skipped"], again["done"], again["failed"]) == (2, 0, 1)  # failures are retried
    again = textualize_batch(folder, out, progress=False, retry_failed=False)
    assert (again["skipped"], again["done"], again["failed"]) == (3, 0, 0)


def test_manifest_batch_and_bad_manifest(tmp_path):
    write_au_csv(tmp_path / "a.csv")
    manifest = tmp_path / "m.jsonl"
    rows = [
        {"id": "one", "au_csv": "a.csv", "transcript": "Hello."},
        {"id": "two", "transcript": "Only text."},
        {"id": "three", "au_csv": "missing.csv"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = textualize_batch(manifest, tmp_path / "o.jsonl", progress=False)
    assert (summary["done"], summary["failed"]) == (2, 1)
    records = {r["id"]: r for r in read_jsonl(tmp_path / "o.jsonl")}
    assert records["two"]["transcript"] == "Only text." and "missing.csv" in records["three"]["error"]

    manifest.write_text('{"id": "ok"}\n{"media": "x.mp4"}\n')
    with pytest.raises(InputError) as info:
        textualize_batch(manifest, tmp_path / "o2.jsonl", progress=False)
    assert info.value.line == 2
    manifest.write_text('{"id": "ok"}\nnot json\n')
    with pytest.raises(InputError, match="not valid JSON"):
        textualize_batch(manifest, tmp_path / "o3.jsonl", progress=False)
