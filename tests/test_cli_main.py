"""The `affectllm` entry point: a closed pipe is not an error, `--` hands arguments to an engine, -q means
the same in every command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from affectllm.cli.main import main, split_passthrough


def _files(tmp_path):
    gold, pred = tmp_path / "gold.csv", tmp_path / "pred.csv"
    rows = "".join(f's{i},"happy,sad"\n' for i in range(300))
    gold.write_text("name,labels\n" + rows)
    pred.write_text("name,labels\n" + rows)
    return gold, pred


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_a_reader_that_stops_early_is_not_an_error(tmp_path, extra):
    """`affectllm eval ov ... | head` used to end with "Broken pipe" and exit 2."""
    gold, pred = _files(tmp_path)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written, as with `| head -n0`
    proc = subprocess.run(
        [sys.executable, "-m", "affectllm", "eval", "ov", "--pred", str(pred), "--gold", str(gold), "--no-floor", *extra],
        stdout=write, stderr=subprocess.PIPE, text=True, timeout=300,
    )  # fmt: skip
    os.close(write)
    assert proc.returncode == 0, proc.stderr
    assert "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr


def test_double_dash_splits_engine_arguments_for_serve_only():
    assert split_passthrough(["serve", "m", "--port", "1", "--", "--x", "2"]) == (
        ["serve", "m", "--port", "1"],
        ["--x", "2"],
    )
    assert split_passthrough(["--debug", "serve", "--", "--dry-run"]) == (["--debug", "serve"], ["--dry-run"])
    # Other commands keep `--` (it ends their options, as usual).
    assert split_passthrough(["chat", "--", "-odd-name.mp4"]) == (["chat", "--", "-odd-name.mp4"], [])


def test_options_after_the_model_stay_affectllm_s_own(capsys):
    """`affectllm serve MODEL --dry-run` (as vLLM users type it) must not start the engine with --dry-run."""
    assert main(["serve", "some/model", "--dry-run", "--", "--max-model-len", "64"]) == 0
    argv = capsys.readouterr().out.split()
    assert "--dry-run" not in argv and argv[-2:] == ["--max-model-len", "64"]


def test_quiet_switches_library_progress_bars_off_too(monkeypatch, capsys):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert main(["serve", "some/model", "--dry-run", "-q"]) == 0
    assert os.environ.get("TQDM_DISABLE") == "1"
    monkeypatch.delenv("TQDM_DISABLE")
