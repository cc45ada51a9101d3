"""`affectllm eval run` end to end with a real (tiny, random-weight) local model, and `eval compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_datasets import SHARED_DIRS, write_meld

from affectllm.cli.main import main


@pytest.fixture
def tiny_lm(tiny_lm_dir: Path) -> Path:
    return tiny_lm_dir


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


MODEL = ["--backend", "transformers", "--max-tokens", "12", "--quiet", "--no-few-shot"]


def test_eval_run_meld_closed_resumes_and_reports(tiny_lm: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "meld"
    write_meld(data)
    write_meld(data, "train_sent_emo.csv")  # the task's label prior is fitted on the train split
    out = tmp_path / "out"
    args = [
        "eval",
        "run",
        "--task",
        "meld-closed-context",
        "--data-dir",
        str(data),
        "--output-dir",
        str(out),
        "--model",
        str(tiny_lm),
        *MODEL,
    ]
    assert main([*args, "--limit", "2"]) == 0
    first = _lines(out / "predictions.jsonl")
    assert [r["id"] for r in first] == ["dia0_utt1", "dia0_utt0"] or len(first) == 2
    # Rerun without the limit: the two finished samples are kept, only the rest is predicted.
    assert main(args) == 0
    records = _lines(out / "predictions.jsonl")
    assert len(records) == 4 and records[:2] == first
    assert all("raw" in r and r["evidence"] for r in records)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (
        metrics["task"] == "meld-closed-context" and metrics["split"] == "dev" and metrics["final"] is False
    )
    assert metrics["n_samples"] == 4 and metrics["run"]["backend"] == "transformers"
    weighted = metrics["metrics"]["closed_set"]["weighted_f1"]
    assert metrics["primary"] == {
        "metric": "closed_set",
        "key": "weighted_f1",
        "value": weighted,
        "higher_is_better": True,
    }
    report = (out / "report.md").read_text(encoding="utf-8")
    assert f"{weighted:.4f}" in report and (out / "confusion_closed_set.png").is_file()
    assert "weighted_f1 =" in capsys.readouterr().out
    # The same folder refuses a run with other settings instead of mixing two runs' outputs.
    assert main([*args, "--temperature", "0.7"]) == 2
    assert "different task/split/model/settings" in capsys.readouterr().err


def test_eval_run_decoding_flags_override_the_task(tiny_lm: Path, tmp_path: Path) -> None:
    data = tmp_path / "meld"
    write_meld(data)  # no train split: the flags below leave the task's label prior unused
    args = ["eval", "run", "--task", "meld-closed", "--data-dir", str(data), "--no-plots", "--limit", "2"]
    args += ["--model", str(tiny_lm), *MODEL]
    # The task chooses by likelihood; --decoding generate overrides it.
    assert main([*args, "-o", str(tmp_path / "gen"), "--decoding", "generate"]) == 0
    run = json.loads((tmp_path / "gen" / "run.json").read_text(encoding="utf-8"))
    assert run["identity"]["decoding"] == "generate"
    assert all(not r.get("label_scores") for r in _lines(tmp_path / "gen" / "predictions.jsonl"))
    # --calibration replaces the task's label prior (which would need the train split).
    assert main([*args, "-o", str(tmp_path / "cf"), "--calibration", "content_free"]) == 0
    run = json.loads((tmp_path / "cf" / "run.json").read_text(encoding="utf-8"))
    assert run["identity"]["decoding"] == "likelihood" and run["identity"]["calibration"] == "content_free"
    records = _lines(tmp_path / "cf" / "predictions.jsonl")
    labels = {"neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"}
    # Every label was scored and the answer is the best calibrated one.
    assert all(set(r["label_scores"]) == labels for r in records)
    assert all(r["emotions"] == [max(r["label_scores"], key=r["label_scores"].get)] for r in records)


def test_eval_run_fits_the_label_prior_on_the_train_split_and_reuses_it(
    tiny_lm: Path, tmp_path: Path
) -> None:
    data = tmp_path / "meld"
    write_meld(data)
    write_meld(data, "train_sent_emo.csv")
    out = tmp_path / "out"
    args = ["eval", "run", "--task", "meld-closed", "--data-dir", str(data), "-o", str(out), "--no-plots"]
    args += ["--model", str(tiny_lm), "--decoding", "likelihood", "--calibration", "label_prior", *MODEL]
    assert main([*args, "--limit", "2"]) == 0
    saved = json.loads((out / "label_prior.json").read_text(encoding="utf-8"))
    assert saved["fitted_on"]["split"] == "train" and saved["rows"] == 4
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["run"]["label_prior"]["offsets"] == saved["offsets"]
    assert (
        json.loads((out / "run.json").read_text(encoding="utf-8"))["identity"]["calibration"] == "label_prior"
    )
    records = _lines(out / "predictions.jsonl")
    # The answer is the best label after the offsets (label_scores are the scores with the offsets added).
    assert all(r["emotions"] == [max(r["label_scores"], key=r["label_scores"].get)] for r in records)
    # A resumed run reads the saved prior instead of fitting it again: a changed file is what it uses.
    saved["offsets"] = {lab: (50.0 if lab == "disgust" else 0.0) for lab in saved["offsets"]}
    (out / "label_prior.json").write_text(json.dumps(saved), encoding="utf-8")
    assert main(args) == 0
    assert [r["emotions"] for r in _lines(out / "predictions.jsonl")[2:]] == [["disgust"], ["disgust"]]


def test_a_label_prior_without_labelled_rows_is_a_clear_error(tiny_lm: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "meld"
    write_meld(data)  # a dev split only
    args = ["eval", "run", "--task", "meld-closed", "--data-dir", str(data), "-o", str(tmp_path / "o")]
    args += ["--model", str(tiny_lm), "--decoding", "likelihood", "--calibration", "label_prior", *MODEL]
    assert main(args) == 2
    err = capsys.readouterr().err
    # Found while the datasets are checked, before any model loads.
    assert "train" in err and "Loading weights" not in err
    from affectllm.backends import get_backend
    from affectllm.reasoner import EmotionReasoner
    from affectllm.settings import PromptSettings

    reasoner = EmotionReasoner(
        get_backend("transformers", model=str(tiny_lm)),
        PromptSettings(
            task="closed", labels=("joy", "anger"), decoding="likelihood", calibration="label_prior"
        ),
    )
    from affectllm.errors import InputError
    from affectllm.schema import Clip

    with pytest.raises(InputError, match="fit_label_prior"):
        reasoner.predict(Clip("c", [], transcript="Hi."))
    # A batch job stops at once instead of recording the same error for every clip.
    with pytest.raises(InputError, match="fit_label_prior"):
        reasoner.predict_batch([Clip("c", [], transcript="Hi.")] * 3, return_exceptions=True)


def test_eval_run_test_split_needs_final(tiny_lm: Path, tmp_path: Path, capsys) -> None:
    write_meld(tmp_path, "test_sent_emo.csv")
    write_meld(tmp_path, "train_sent_emo.csv")  # the task's label prior is fitted on the train split
    args = [
        "eval",
        "run",
        "--task",
        "meld-closed",
        "--data-dir",
        str(tmp_path),
        "--split",
        "test",
        "--output-dir",
        str(tmp_path / "out"),
        "--model",
        str(tiny_lm),
        *MODEL,
    ]
    assert main(args) == 2
    assert "--final" in capsys.readouterr().err
    assert main([*args, "--final"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["final"] is True and metrics["test_split"] is True
    assert "held-out test split" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_user_task_per_sample_error_and_ablation(tiny_lm: Path, tmp_path: Path) -> None:
    """A user task over a clip manifest with precomputed cues; one clip has no evidence source and fails alone."""
    data = tmp_path / "clips"
    data.mkdir()
    rows = [
        {"id": f"c{i}", "transcript": t, "labels": labels}
        for i, (t, labels) in enumerate(
            [("I won!", ["happy", "proud"]), ("Go away.", ["angry"]), ("Oh no.", ["sad", "worried"])]
        )
    ]
    (data / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    cues = [
        {
            "clip": f"c{i}",
            "transcript": rows[i]["transcript"],
            "cues": [
                {"modality": "acoustic", "name": "pitch", "band": "high", "value": 240.0, "unit": "Hz"},
                {
                    "modality": "facial",
                    "name": "AU12 lip corner puller",
                    "band": "C",
                    "start": 0.2,
                    "end": 1.0,
                },
            ],
        }
        for i in (0, 1)
    ]
    (tmp_path / "cues.jsonl").write_text("\n".join(json.dumps(c) for c in cues) + "\n", encoding="utf-8")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    task = {
        "task": "my-clips",
        "version": 1,
        "dataset": {"name": "manifest", "split": "dev"},
        "input": {"source": "media"},
        "prompt": {"task": "ov"},
        "metrics": ["ew"],
        "ablation": ["acoustic", "facial", "visual-scene"],
    }
    (tasks / "my-clips.yaml").write_text(yaml.safe_dump(task), encoding="utf-8")
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "run",
            "--task",
            "my-clips",
            "--tasks-dir",
            str(tasks),
            "--data-dir",
            str(data),
            "--cues",
            str(tmp_path / "cues.jsonl"),
            "--output-dir",
            str(out),
            "--ablate-modalities",
            "--model",
            str(tiny_lm),
            *MODEL,
        ]
    )
    assert code == 0
    records = {r["id"]: r for r in _lines(out / "predictions.jsonl")}
    assert "error" in records["c2"] and "no media" in records["c2"]["error"]
    assert "error" not in records["c0"] and records["c0"]["evidence"][0].startswith("A1")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n_errors"] == 1 and metrics["failed_ids"] == ["c2"]
    assert set(metrics["variants"]) >= {"M1", "W1-L1"} and "l1" in metrics  # same keys as `eval ov`
    ablation = metrics["ablation"]["modalities"]
    assert set(ablation["acoustic"]) >= {"full", "without", "delta"} and ablation["acoustic"]["n"] == 2
    assert "skipped" in ablation["visual-scene"]
    assert len(_lines(out / "ablation" / "without-facial.jsonl")) == 2
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Modality ablation" in report and "c2" in report and (out / "ew_wheels.png").is_file()


def _fake_run(folder: Path, model: str, value: float | None, higher: bool = True) -> Path:
    folder.mkdir(parents=True)
    metrics = {
        "task": "t",
        "split": "dev",
        "n_samples": 10,
        "n_errors": 0,
        "primary": {"metric": "m", "key": "k", "value": value, "higher_is_better": higher},
        "run": {"backend": "transformers", "model": model},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return folder


def test_eval_compare_ranks_by_direction(tmp_path: Path, capsys) -> None:
    a = _fake_run(tmp_path / "a", "model-a", 0.4)
    b = _fake_run(tmp_path / "b", "model-b", 0.6)
    c = _fake_run(tmp_path / "c", "model-c", None)
    assert main(["eval", "compare", str(a), str(b), str(c), "--json"]) == 0
    board = json.loads(capsys.readouterr().out)["t [dev]"]
    assert [e["model"] for e in board] == ["model-b", "model-a", "model-c"]
    low_a = _fake_run(tmp_path / "la", "model-a", 0.4, higher=False)
    low_b = _fake_run(tmp_path / "lb", "model-b", 0.6, higher=False)
    assert main(["eval", "compare", str(low_a), str(low_b)]) == 0
    text = capsys.readouterr().out
    assert text.index("model-a") < text.index("model-b") and "↓" in text
    assert main(["eval", "compare", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first use rebuilds the embedded model (minutes on a loaded CPU)
def test_eval_run_embedded_default_on_meld_dev(shared_data: Path, tmp_path: Path) -> None:
    """The embedded default model (Gemma 3 270M, no --model) on a handful of real MELD dev utterances."""
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "run",
            "--task",
            "meld-closed",
            "--data-dir",
            str(shared_data / "meld"),
            "--output-dir",
            str(out),
            "--limit",
            "4",
            "--quiet",
        ]
    )
    assert code == 0
    records = _lines(out / "predictions.jsonl")
    assert len(records) == 4 and all("error" not in r for r in records)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n_samples"] == 4 and 0.0 <= metrics["primary"]["value"] <= 1.0
    # The base 270M model may not follow the contract, but whatever it answers is parsed onto the label set.
    labels = {"neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"}
    assert all(r["raw"] and set(r["emotions"]) <= labels for r in records)


def test_every_shipped_task_runs_end_to_end(shared_data: Path, tiny_lm: Path, tmp_path: Path) -> None:
    """Each task in eval/ on 2 dev samples of its dataset with the tiny model: predictions for every sample
    (speech tasks through the real audio textualizer), scored metrics and the task's primary number."""
    import shutil

    from affectllm.tasks import list_tasks, load_task

    crema = tmp_path / "crema" / "AudioWAV"
    crema.mkdir(parents=True)
    shutil.copy(shared_data / "audio" / "emodb" / "13a04Wc.wav", crema / "1001_DFA_ANG_XX.wav")
    for name in sorted(list_tasks()):
        task = load_task(name)
        data = shared_data / SHARED_DIRS[task.dataset] if task.dataset != "cremad" else crema.parent
        out = tmp_path / name
        args = ["eval", "run", "--task", name, "--data-dir", str(data), "-o", str(out), "--limit", "2"]
        assert main([*args, "--model", str(tiny_lm), "--no-plots", *MODEL]) == 0, name
        records = _lines(out / "predictions.jsonl")
        assert len(records) == min(2, len(records)) and records, name
        assert all("error" not in r for r in records), (name, [r.get("error") for r in records])
        if task.clip.source == "media":
            assert all(r["evidence"] for r in records), name  # the acoustic cues were shown
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["split"] == "dev" and metrics["final"] is False, name
        assert set(metrics["metrics"]) == {m.name for m in task.metrics}, name
        # Hit rate is undefined for "neutral" gold (outside the wheels), which the first dev rows may all be.
        undefined_ok = task.metrics[0].name in ("rationale", "hit_rate")
        assert metrics["primary"]["value"] is not None or undefined_ok, name
