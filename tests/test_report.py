"""report.md and the PNG plots, from a metrics.json shaped like an `eval run` output."""

from __future__ import annotations

import json
from pathlib import Path

from affectllm.metrics import get_metric
from affectllm.report import write_report


def _metrics() -> dict:
    closed = get_metric("closed_set").fn(
        predictions=["joy", "anger", "joy", "fear"],
        references=["joy", "anger", "sadness", "joy"],
        labels=["joy", "anger", "sadness", "fear"],
    )
    ew = get_metric("ew").fn(
        predictions={"a": ["happy"], "b": ["angry", "sad"]},
        references={"a": ["happy", "excited"], "b": ["angry"]},
    )
    return {
        "task": "demo",
        "task_version": 2,
        "dataset": "meld",
        "split": "test",
        "final": True,
        "test_split": True,
        "n_samples": 4,
        "n_errors": 1,
        "failed_ids": ["dia3_utt0"],
        "metrics": {"closed_set": closed, "ew": ew, "grounding": {"error": "ValueError: no evidence"}},
        "primary": {
            "metric": "closed_set",
            "key": "weighted_f1",
            "value": closed["weighted_f1"],
            "higher_is_better": True,
        },
        "ablation": {
            "metric": "closed_set",
            "key": "weighted_f1",
            "full": 0.5,
            "modalities": {
                "acoustic": {"full": 0.5, "without": 0.3, "delta": 0.2, "n": 4, "n_errors": 0},
                "linguistic": {"full": 0.5, "without": 0.6, "delta": -0.1, "n": 4, "n_errors": 0},
                "facial": {"skipped": "no cues of this modality in the task's input"},
            },
        },
        "run": {"backend": "transformers", "model": "tiny", "source": "transcript", "seconds": 1.5},
    }


def test_report_has_metrics_plots_and_final_banner(tmp_path: Path) -> None:
    metrics = _metrics()
    (tmp_path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    report = write_report(tmp_path)
    text = report.read_text(encoding="utf-8")
    assert "held-out test split `test`" in text
    assert f"{metrics['metrics']['closed_set']['weighted_f1']:.4f}" in text
    assert f"{metrics['metrics']['ew']['l1']['f']:.4f}" in text
    assert "W3-L2" in text and "dia3_utt0" in text and "ValueError: no evidence" in text
    assert "| acoustic | 0.5000 | 0.3000 | 0.2000 | 4 |" in text and "skipped" in text
    for name in ("confusion_closed_set.png", "ew_wheels.png", "ablation.png"):
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"]({name})" in text


def test_report_without_plots(tmp_path: Path) -> None:
    metrics = _metrics()
    metrics["ablation"] = None
    text = write_report(tmp_path, metrics, plots=False).read_text(encoding="utf-8")
    assert "No plots (plots disabled)" in text and not list(tmp_path.glob("*.png"))


def test_report_names_the_label_set_macro_scores_average_over(tmp_path: Path) -> None:
    write_report(tmp_path, _metrics(), plots=False)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "average over the 4 classes of the task's label set (joy, anger, sadness, fear)" in text
    assert "classes with no gold sample here score 0 (fear)" in text


def test_wheel_chart_legend_names_the_dashed_mean_lines() -> None:
    from affectllm.report import _pyplot, wheel_bars_figure

    ew = _metrics()["metrics"]["ew"]
    fig = wheel_bars_figure(ew, "demo")
    try:
        legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert legend == [
            f"level 1 mean of the 5 wheels ({ew['l1']['f']:.2f})",
            f"level 2 mean of the 5 wheels ({ew['l2']['f']:.2f})",
            "level 1",
            "level 2",
        ]
        dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
        assert [line.get_label() for line in dashed] == legend[:2]
    finally:
        _pyplot().close(fig)
