"""`affectllm chat`: one-shot --json and the stdin-driven REPL, on a tiny local LM and transcript-only clips."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import tiny_model_args

from affectllm.cli.main import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def transcript_clip(tmp_path: Path) -> Path:
    path = tmp_path / "greeting.txt"
    path.write_text("No way, is this for me? Thank you, I love it!\n", encoding="utf-8")
    return path


def test_one_shot_json_prints_exactly_the_contract(tiny_lm_dir, transcript_clip, tmp_path):
    env = {**os.environ, "AFFECTLLM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "affectllm", "chat", str(transcript_clip), "What is she feeling?", "--json",
         *tiny_model_args(tiny_lm_dir, 8)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # nothing but the JSON on stdout: scripts parse it
    data = json.loads(lines[0])
    # The one prediction record (affectllm.records): the contract's keys first, then the record's own.
    assert list(data)[:4] == ["id", "emotions", "rationale", "answer"] and "raw" not in data
    assert isinstance(data["emotions"], list) and isinstance(data["rationale"], list)
    assert isinstance(data["answer"], str)


def test_one_shot_without_json_streams_the_reply(tiny_lm_dir, transcript_clip, capsys):
    assert main(["chat", str(transcript_clip), "Why?", *tiny_model_args(tiny_lm_dir, 8)]) == 0
    assert capsys.readouterr().out.strip()


def test_repl_over_stdin(tiny_lm_dir, transcript_clip, tmp_path, monkeypatch, capsys):
    md, js = tmp_path / "out.md", tmp_path / "out.json"
    script = f"/cues\n/help\n/nope\nWhy do you say that?\n\n/save {md}\n/save {js}\nexit\nnever read\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    assert main(["chat", str(transcript_clip), "--task", "chat", *tiny_model_args(tiny_lm_dir, 8)]) == 0
    out = capsys.readouterr().out
    assert 'L1 [whole clip] transcript: "No way, is this for me?' in out  # /cues shows the evidence
    assert "/save [FILE]" in out and "unknown command /nope" in out
    assert f"saved 4 turns to {md}" in out
    text = md.read_text()
    assert "# Conversation about `greeting`" in text and "**You:** Why do you say that?" in text
    data = json.loads(js.read_text())
    assert [t["role"] for t in data["turns"]] == ["user", "assistant", "user", "assistant"]
    assert data["turns"][2]["content"] == "Why do you say that?"


def test_repl_ends_on_eof(tiny_lm_dir, transcript_clip, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["chat", str(transcript_clip), *tiny_model_args(tiny_lm_dir, 8)]) == 0


def test_example_clip_with_sidecars(tiny_lm_dir, capsys):
    """The shipped example: AU CSV and captions sidecars are found next to the video."""
    clip = REPO / "examples" / "surprise_joy.mp4"
    # face only: the scene captions' de-duplication loads a sentence embedder, too slow for the default suite
    assert main(["chat", str(clip), "--json", "--modalities", "face", *tiny_model_args(tiny_lm_dir, 8)]) == 0
    assert {"id", "emotions", "rationale", "answer"} <= set(json.loads(capsys.readouterr().out))


def test_bad_inputs_are_reported_without_traceback(tmp_path, transcript_clip, capsys):
    assert main(["chat", str(tmp_path / "missing.mp4"), "hi"]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert main(["chat", str(empty), "hi"]) == 2
    assert "empty" in capsys.readouterr().err
    assert (
        main(["chat", str(transcript_clip), "hi", "--backend", "transformers", "--base-url", "http://x/v1"])
        == 2
    )
    assert "--base-url" in capsys.readouterr().err
