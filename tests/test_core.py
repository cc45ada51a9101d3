"""The shared core: schema round-trips, the resumable batch writer, the CLI's lazy imports and lint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from affectllm.batch import ResumableJSONL, read_jsonl
from affectllm.errors import InputError
from affectllm.schema import Clip, Cue, Prediction, RationaleItem, normalize_modality

REPO = Path(__file__).resolve().parents[1]


def test_cue_roundtrip_and_modality_aliases() -> None:
    cue = Cue("face", "AU12 lip corner puller", 2.31, "intensity", "C", 0.4, 1.8, "openface:x.csv", 0.97)
    assert cue.modality == "facial"
    again = Cue.from_dict(json.loads(json.dumps(cue.to_dict())))
    assert again == cue
    with pytest.raises(ValueError, match="unknown modality"):
        normalize_modality("smell")
    with pytest.raises(ValueError, match="unknown cue fields"):
        Cue.from_dict({"modality": "acoustic", "name": "pitch", "colour": "red"})


def test_nan_values_become_null_in_json() -> None:
    cue = Cue("acoustic", "pitch", float("nan"), "Hz")
    assert cue.to_dict()["value"] is None


def test_clip_without_drops_modality_and_transcript() -> None:
    clip = Clip(
        "c1",
        [
            Cue("acoustic", "pitch", 200.0, "Hz"),
            Cue("linguistic", "speech", "hello"),
            Cue("facial", "AU06", 1.0),
        ],
        transcript="hello",
    )
    no_text = clip.without("text")
    assert [c.modality for c in no_text.cues] == ["acoustic", "facial"]
    assert no_text.transcript is None
    assert Clip.from_dict(clip.to_dict()).cues == clip.cues


def test_prediction_serialises_rationale() -> None:
    pred = Prediction(
        ["happy"], [RationaleItem("smile", "facial", "0.4-1.8s", "F1")], "happy", format_ok=True
    )
    out = pred.to_dict()
    assert out["rationale"][0]["cue_id"] == "F1"
    assert "raw" not in out


def test_resumable_jsonl_skips_done_and_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    writer = ResumableJSONL(path)
    writer.write({"id": "a", "value": 1})
    try:
        raise RuntimeError("decoder exploded")
    except RuntimeError as exc:
        writer.write_error("b", exc)
    # A crash mid-write leaves half a line behind.
    with path.open("a") as fh:
        fh.write('{"id": "c", "val')
    again = ResumableJSONL(path)
    assert again.should_skip("a")
    assert not again.should_skip("b")  # failures are retried by default
    assert not again.should_skip("c")
    assert ResumableJSONL(path, retry_failed=False).should_skip("b")
    assert again.failed["b"]["error"].startswith("RuntimeError: decoder exploded")
    # The torn line was dropped, so the file is valid JSONL again.
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    again.write({"id": "b", "value": 2})
    assert ResumableJSONL(path).pending(["a", "b", "c"]) == ["c"]


def test_read_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n{oops}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        read_jsonl(path)


def test_input_error_message_names_file_and_line() -> None:
    err = InputError("gold.csv", "duplicate name 'x'", line=7)
    assert str(err) == "gold.csv:7: duplicate name 'x'"


def test_cli_help_imports_no_heavy_library() -> None:
    # `affectllm --help` must stay fast: no torch, transformers, sentence-transformers or av at import time.
    code = (
        "import sys; from affectllm.cli.main import build_parser; build_parser();"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'av', 'faster_whisper',"
        " 'opensmile', 'parselmouth', 'llama_cpp', 'vllm', 'trl', 'peft', 'matplotlib', 'pandas') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "affectllm", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("textualize", "chat", "predict", "serve", "eval", "train"):
        assert command in out.stdout


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_clean() -> None:
    out = subprocess.run(["ruff", "check", str(REPO)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
