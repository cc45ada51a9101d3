"""Conformance: every released OV-MERD dev prediction file scores what the official code gives (1e-4)."""

from __future__ import annotations

import json

import pytest

from affectllm.cli.main import main
from affectllm.labels import read_label_file
from affectllm.metrics.ov import score_ov
from affectllm.wheel import VARIANTS

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def ovmerd(shared_data):
    root = shared_data / "ovmerd"
    expected = json.loads((root / "expected_dev.json").read_text())
    files = sorted((root / "predictions").glob("*.csv"))
    assert files, "no prediction files in the shared data"
    return root, expected, files


def test_every_file_and_version_matches_the_official_numbers(ovmerd):
    root, expected, files = ovmerd
    gold = read_label_file(root / "gold_dev.csv")
    assert expected["variant_names"] == list(VARIANTS)
    checked = 0
    for path in files:
        pred = read_label_file(path)
        for version in ("2025", "2026"):
            want = expected["results"][path.stem][f"ew_version_{version}"]
            got = score_ov(references=gold, predictions=pred, version=version)
            where = f"{path.stem} {version}"
            for variant in VARIANTS:
                assert got["variants"][variant]["n"] == want["variants"][variant]["n"], f"{where} {variant} n"
                for key in ("f", "p", "r"):
                    assert got["variants"][variant][key] == pytest.approx(
                        want["variants"][variant][key], abs=TOLERANCE
                    ), f"{where} {variant} {key}"
            assert got["m_avg"] == pytest.approx(want["m_avg"], abs=TOLERANCE), f"{where} m_avg"
            for level in ("l1", "l2"):
                for key in ("f", "p", "r"):
                    assert got[level][key] == pytest.approx(want[level][key], abs=TOLERANCE), (
                        f"{where} {level}"
                    )
            assert got["missing_predictions"] == [] and got["unknown_predictions"] == []
            checked += 1
    assert checked == 2 * len(files)


def test_cli_end_to_end(ovmerd, tmp_path, capsys):
    root, expected, files = ovmerd
    out = tmp_path / "scores" / "ov.json"
    pred = files[0]
    code = main(
        [
            "eval",
            "ov",
            "--pred",
            str(pred),
            "--gold",
            str(root / "gold_dev.csv"),
            "--ew-version",
            "2026",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "W5-L2" in printed and "M-avg" in printed
    result = json.loads(out.read_text())
    want = expected["results"][pred.stem]["ew_version_2026"]
    assert result["version"] == "2026"
    assert set(result["variants"]) == set(VARIANTS)
    for variant in VARIANTS:
        assert set(result["variants"][variant]) >= {"f", "p", "r", "n"}
        assert result["variants"][variant]["f"] == pytest.approx(
            want["variants"][variant]["f"], abs=TOLERANCE
        )
    assert result["l1"]["f"] == pytest.approx(want["l1"]["f"], abs=TOLERANCE)
    assert result["m_avg"] == pytest.approx(want["m_avg"], abs=TOLERANCE)


def test_cli_reports_bad_input(ovmerd, tmp_path, capsys):
    root, _, _ = ovmerd
    bad = tmp_path / "pred.csv"
    bad.write_text("name,labels\nsample_00000055,[happy]\nsample_00000055,[sad]\n")
    assert main(["eval", "ov", "--pred", str(bad), "--gold", str(root / "gold_dev.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3:" in err and "duplicate name" in err

    partial = tmp_path / "partial.jsonl"
    partial.write_text(
        '{"name": "sample_00000055", "labels": ["worried"]}\n{"name": "nobody", "labels": []}\n'
    )
    assert main(["eval", "ov", "--pred", str(partial), "--gold", str(root / "gold_dev.csv"), "--json"]) == 0
    captured = capsys.readouterr()
    assert f"{partial}:2: prediction for 'nobody'" in captured.err
    assert "gold_dev.csv:3: 'sample_00000070' has no prediction" in captured.err
    assert "169 gold name(s) have no prediction" in captured.err
    assert "not in the gold set, ignored: nobody" in captured.err
    assert json.loads(captured.out)["unknown_predictions"] == ["nobody"]
