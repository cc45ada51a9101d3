"""`affectllm predict`: batched output that `affectllm eval ov` reads, per-clip errors, and resuming."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_models import tiny_model_args

from affectllm.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def _write_manifest(tmp_path: Path, n: int = 5) -> Path:
    (tmp_path / "clips").mkdir()
    rows = []
    for i in range(n):
        rows.append({"id": f"t{i}", "transcript": f"Line number {i}: I cannot believe this happened again!"})
    # Already textualized evidence (the `affectllm textualize --json` form) is used as it is.
    rows.append(
        {
            "clip": "cues1",
            "transcript": "Thanks a lot.",
            "cues": [
                {"modality": "acoustic", "name": "pitch", "detail": "low and flat", "start": 0.0, "end": 1.2}
            ],
        }
    )
    # A corrupt video fails on its own; the rest of the run carries on.
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"\x00\x01 not a video")
    rows.append({"id": "broken", "media": "clips/broken.mp4"})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_predict_writes_one_record_per_clip_and_records_failures(tiny_lm_dir, tmp_path, capsys):
    manifest = _write_manifest(tmp_path)
    out = tmp_path / "pred.jsonl"
    argv = ["predict", "--data", str(manifest), "--out", str(out), "--batch-size", "3", "-q"]
    assert main([*argv, *tiny_model_args(tiny_lm_dir, 6)]) == 0
    records = {r["id"]: r for r in _lines(out)}
    assert list(records) == ["t0", "t1", "t2", "t3", "t4", "cues1", "broken"]  # manifest order
    for name in ["t0", "cues1"]:
        rec = records[name]
        assert isinstance(rec["emotions"], list) and isinstance(rec["rationale"], list)
        assert isinstance(rec["answer"], str) and isinstance(rec["raw"], str) and "error" not in rec
    assert "broken.mp4" in records["broken"]["error"] and records["broken"]["emotions"] == []
    err = capsys.readouterr().err
    assert "6 predicted, 1 failed" in err

    # A rerun has nothing left but the failure, retries it, and still writes each name once; every clip it
    # tried failed, which the exit status says (a wrong server URL looks like this too).
    assert main([*argv, *tiny_model_args(tiny_lm_dir, 6)]) == 1
    assert [r["id"] for r in _lines(out)] == list(records)
    assert "0 predicted, 1 failed, 6 already done" in capsys.readouterr().err
    assert main([*argv, "--skip-failed", *tiny_model_args(tiny_lm_dir, 6)]) == 0
    assert "already in" in capsys.readouterr().err


def test_resume_after_a_crash_keeps_finished_work(tiny_lm_dir, tmp_path, capsys):
    manifest = _write_manifest(tmp_path)
    out = tmp_path / "pred.jsonl"
    # What a run killed mid-write leaves: two finished records and a cut-off third line.
    finished = [
        {"id": "t0", "emotions": ["sentinel-a"], "rationale": [], "answer": ""},
        {"id": "t1", "emotions": ["sentinel-b"], "rationale": [], "answer": ""},
    ]
    out.write_text("".join(json.dumps(r) + "\n" for r in finished) + '{"id": "t2", "emo', encoding="utf-8")
    argv = ["predict", "--data", str(manifest), "--out", str(out), "-q", "--limit", "4"]
    assert main([*argv, *tiny_model_args(tiny_lm_dir, 6)]) == 0
    records = {r["id"]: r for r in _lines(out)}
    assert list(records) == ["t0", "t1", "t2", "t3"]
    # Finished clips were skipped, not redone: their (sentinel) labels survive.
    assert records["t0"]["emotions"] == ["sentinel-a"] and records["t1"]["emotions"] == ["sentinel-b"]
    assert "2 predicted, 0 failed, 2 already done" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_mid_run_then_resume(tiny_lm_dir, tmp_path):
    """SIGKILL a real run after its first record lands; the rerun completes without redoing or losing work."""
    n = 12
    manifest = _write_manifest(tmp_path, n)
    out = tmp_path / "pred.jsonl"
    cmd = [sys.executable, "-m", "affectllm", "predict", "--data", str(manifest), "--out", str(out),
           "--batch-size", "1", "-q", *tiny_model_args(tiny_lm_dir, 6)]  # fmt: skip
    env = {**os.environ, "AFFECTLLM_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    before = {r["id"]: r for r in _lines(out)} if out.exists() else {}
    assert before, "the run was killed before writing anything"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = _lines(out)
    names = [r["id"] for r in after]
    assert len(names) == len(set(names)) == n + 2
    by_name = {r["id"]: r for r in after}
    for name, rec in before.items():  # finished work is kept as it was
        assert by_name[name] == rec


def test_output_is_scored_by_eval_ov(tiny_lm_dir, tmp_path, capsys):
    pytest.importorskip("affectllm.metrics.ov")
    manifest = _write_manifest(tmp_path, 3)
    out = tmp_path / "pred.jsonl"
    assert main(["predict", "--data", str(manifest), "--out", str(out), "-q",
                 *tiny_model_args(tiny_lm_dir, 6)]) == 0  # fmt: skip
    gold = tmp_path / "gold.jsonl"
    names = [r["id"] for r in _lines(out)]
    gold.write_text("".join(json.dumps({"name": n, "labels": ["surprised", "happy"]}) + "\n" for n in names))
    capsys.readouterr()
    report = tmp_path / "ov.json"
    assert (
        main(["eval", "ov", "--pred", str(out), "--gold", str(gold), "--output", str(report), "--json"]) == 0
    )
    scores = json.loads(report.read_text())
    assert set(scores["variants"]) >= {"M1", "W1-L1"} and 0.0 <= scores["l1"]["f"] <= 1.0


def test_bad_manifests_name_file_and_line(tmp_path, capsys):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"id": "a", "transcript": "x"}\n{"id": "a", "transcript": "y"}\n')
    assert main(["predict", "--data", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert f"{bad}:2: duplicate id 'a'" in capsys.readouterr().err
    bad.write_text('{"id": "a"\n')
    assert main(["predict", "--data", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert f"{bad}:1: not valid JSON" in capsys.readouterr().err
    assert main(["predict", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "manifest not found" in capsys.readouterr().err


def test_bad_counts_are_reported_under_the_flag_name(tmp_path, capsys):
    from affectllm.cli.main import main

    for flag, value in (("--batch-size", "0"), ("--limit", "-2"), ("--batch-size", "many")):
        with pytest.raises(SystemExit) as exc:
            main(
                [
                    "predict",
                    "--data",
                    str(tmp_path / "m.jsonl"),
                    "--out",
                    str(tmp_path / "p.jsonl"),
                    flag,
                    value,
                ]
            )
        assert exc.value.code == 2
        assert f"argument {flag}" in capsys.readouterr().err


def test_predict_with_a_label_prior_chooses_with_its_offsets(tiny_lm_dir, tmp_path, capsys):
    """`--label-prior` reuses the offsets `eval run` fitted: a closed choice by likelihood over the prior's
    labels, each answer the best label after the offsets, each rationale item citing a line of its prompt."""
    from affectllm.choice import LabelPrior

    manifest = _write_manifest(tmp_path, n=2)
    labels = ["joy", "anger", "sadness"]
    prior = LabelPrior({lab: (40.0 if lab == "sadness" else 0.0) for lab in labels}, {}, {}, {}, rows=3)
    prior_file = tmp_path / "label_prior.json"
    prior_file.write_text(json.dumps({"fitted_on": {"split": "train"}, **prior.to_dict()}), encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    argv = ["predict", "--data", str(manifest), "--out", str(out), "-q", "--extractors", "none"]
    assert main([*argv, "--label-prior", str(prior_file), *tiny_model_args(tiny_lm_dir, 6)]) == 0
    records = {r["id"]: r for r in _lines(out)}
    for name in ("t0", "t1", "cues1"):
        assert records[name]["emotions"] == ["sadness"], records[name]
        assert set(records[name]["label_scores"]) == set(labels)
    # The tiny model writes noise after the id, but the id is one the prompt shows.
    assert re.search(r'"rationale": \[\{"id": "(A1|L1)",', records["cues1"]["raw"]), records["cues1"]["raw"]

    # The prior's file and its fit with --labels are checked before any clip is read.
    assert main([*argv, "--overwrite", "--label-prior", str(prior_file), "--labels", "joy,fear"]) == 2
    assert "fitted for joy, anger, sadness" in capsys.readouterr().err
    prior_file.write_text('{"offsets": ', encoding="utf-8")
    assert main([*argv, "--overwrite", "--label-prior", str(prior_file)]) == 2
    assert f"{prior_file}:1: not JSON" in capsys.readouterr().err
