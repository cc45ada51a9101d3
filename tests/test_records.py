"""The one prediction record: written by chat --json, predict and eval run; older files upgrade or are refused
with the command that converts them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from affectllm.errors import InputError
from affectllm.labels import read_label_file
from affectllm.records import prediction_record, upgrade_record
from affectllm.schema import Prediction, RationaleItem


def test_record_shape_and_label_reader(tmp_path):
    pred = Prediction(
        ["joy", "surprise"], [RationaleItem("says 'no way'", cue_id="L1")], format_ok=True, raw="x"
    )
    record = prediction_record("c1", pred, include_raw=False, gold={"labels": ["joy"]})
    assert list(record)[:4] == ["id", "emotions", "rationale", "answer"] and record["gold"] == {
        "labels": ["joy"]
    }
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert read_label_file(path) == {"c1": ["joy", "surprise"]}


def test_old_files_upgrade_or_are_refused_with_the_command(tmp_path):
    nested = {"id": "c1", "gold": {}, "prediction": {"emotions": ["sad"], "rationale": [], "answer": ""}}
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps(nested) + "\n" + json.dumps({"name": "c2", "labels": ["joy"]}) + "\n")
    with pytest.raises(InputError, match=r"affectllm\.records upgrade"):
        read_label_file(old)
    assert upgrade_record({"name": "c2", "labels": ["joy"]}) == {"id": "c2", "emotions": ["joy"]}
    done = subprocess.run(
        [sys.executable, "-m", "affectllm.records", "upgrade", str(old)], capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert read_label_file(old) == {"c1": ["sad"], "c2": ["joy"]}
