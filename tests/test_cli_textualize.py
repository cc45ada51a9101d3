"""`affectllm textualize`: single clips (text block + JSON contract), batches, errors."""

from __future__ import annotations

import json
import shutil

import pytest
from test_textualize_pipeline import make_video, write_au_csv, write_captions

from affectllm.batch import read_jsonl
from affectllm.cli.main import main

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
CUE_FIELDS = {"modality", "name", "value", "unit", "band", "start", "end", "source", "confidence"}


@needs_ffmpeg
def test_single_clip_prints_block_and_writes_json(tmp_path, capsys):
    video = make_video(tmp_path / "clip.mp4")
    write_au_csv(tmp_path / "clip.openface.csv")
    captions = write_captions(tmp_path / "scene.json")
    out = tmp_path / "res" / "clip.json"
    rc = main(
        [
            "textualize",
            str(video),
            "--extractors",
            "face,scene",
            "--captions",
            str(captions),
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert (
        "Facial action units:" in printed and "Visual scene:" in printed and "S1 [0.0-1.0s] scene:" in printed
    )
    data = json.loads(out.read_text())
    assert data["clip"] == "clip" and data["text"] == printed.rstrip("\n")
    assert data["cues"] and all(set(c) >= CUE_FIELDS for c in data["cues"])
    assert {c["modality"] for c in data["cues"]} == {"facial", "visual-scene"}


def test_transcript_sidecar_as_clip_and_token_budget(tmp_path, capsys):
    write_au_csv(tmp_path / "x.au.csv", n=60)
    (tmp_path / "x.transcript.txt").write_text("Nothing to see here.")
    assert main(["textualize", str(tmp_path / "x.transcript.txt"), "--max-tokens", "40", "--no-cache"]) == 0
    printed = capsys.readouterr().out
    assert 'L1 [whole clip] transcript: "Nothing to see here."' in printed
    assert len(printed) < 40 * 4 + 80


@needs_ffmpeg
def test_batch_folder_with_corrupt_file_and_rerun(tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    make_video(folder / "a.mp4")
    write_au_csv(folder / "a.openface.csv")
    (folder / "b.transcript.txt").write_text("Hello.")
    (folder / "c.mp4").write_bytes(b"\x00corrupt" * 64)
    out = tmp_path / "out.jsonl"
    assert main(["textualize", str(folder), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "textualized 2 clip(s)" in err and "1 failed" in err
    records = {r["id"]: r for r in read_jsonl(out)}
    assert set(records) == {"a", "b", "c"} and "error" in records["c"]

    assert main(["textualize", str(folder), "--out", str(out), "--quiet", "--no-retry-failed"]) == 0
    assert "skipped 3 already done" in capsys.readouterr().err
    assert len(read_jsonl(out)) == 3


def test_cli_errors_exit_2_with_message(tmp_path, capsys):
    assert main(["textualize", str(tmp_path / "missing.mp4")]) == 2
    assert "affectllm: error:" in capsys.readouterr().err
    assert main(["textualize", str(tmp_path), "--json", "x.json"]) == 2
    assert "--json is for a single clip" in capsys.readouterr().err
    assert main(["textualize", str(tmp_path)]) == 2
    assert "needs --out" in capsys.readouterr().err
    (tmp_path / "t.transcript.txt").write_text("hi")
    assert main(["textualize", str(tmp_path / "t.transcript.txt"), "--asr", "no-such-asr"]) == 2
    assert "unknown ASR engine" in capsys.readouterr().err


@needs_ffmpeg
def test_cli_audio_with_speech(tmp_path, capsys):
    pytest.importorskip("affectllm.textualize.audio")
    video = make_video(tmp_path / "talk.mp4", audio="speech", seconds=3.5)
    out = tmp_path / "talk.json"
    assert (
        main(
            ["textualize", str(video), "--extractors", "audio", "--asr", "faster-whisper", "--json", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Acoustic (voice and prosody):" in printed and "Speech content:" in printed
    data = json.loads(out.read_text())
    assert "expect" in (data["transcript"] or "").lower()
