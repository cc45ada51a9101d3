"""Task YAMLs: every shipped task validates, user folders are found, bad files fail with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from affectllm.clips import clip_from_row
from affectllm.errors import InputError
from affectllm.resources import asset_dir
from affectllm.schema import LINGUISTIC
from affectllm.settings import ClipSettings
from affectllm.tasks import TASKS_PATH_ENV, list_tasks, load_task, parse_task, score_records

SHIPPED = sorted(p.stem for p in asset_dir("eval").glob("*.yaml"))

REQUIRED = {
    "ovmerd-ov-subtitle",
    "ovmerd-ov-cues",
    "emer-rationale",
    "meld-closed",
    "meld-closed-context",
    "meld-ov-hitrate",
    "emorynlp-closed",
    "emorynlp-closed-context",
    "mer2023-closed",
    "goemotions-ov",
    "emodb-speech",
    "ravdess-speech",
}


def test_required_tasks_ship() -> None:
    assert set(SHIPPED) >= REQUIRED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_task_validates(name: str) -> None:
    task = load_task(name)
    assert task.name == name and task.version >= 1 and task.metrics
    metric, key, higher = task.primary_metric()
    assert metric in {m.name for m in task.metrics} and key and higher is True
    if task.prompt.task == "closed":
        assert task.prompt.labels
    if task.name.endswith("-context"):
        assert task.clip.context
    if task.name.endswith("-speech"):
        assert task.prompt.modalities == ("acoustic",) and task.clip.source == "media"


BASE = {
    "task": "mine",
    "dataset": {"name": "meld", "split": "dev"},
    "prompt": {"task": "closed", "labels": "dataset"},
    "metrics": ["closed_set"],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"promt": {}}, "unknown key"),
        ({"prompt": {"task": "closed", "lables": "dataset"}}, "prompt: unknown key"),
        ({"metrics": ["f1_score"]}, "unknown metric"),
        ({"metrics": []}, "non-empty list"),
        ({"prompt": {"task": "closed"}}, "needs its label set"),
        ({"dataset": {"name": "meld", "split": "test"}}, "held-out test split"),
        ({"dataset": {"name": "meld", "split": "validation"}}, "not a split"),
        ({"dataset": {"name": "friends"}}, "unknown dataset"),
        ({"input": {"modalities": ["smell"]}}, "unknown modality"),
        ({"input": {"source": "video"}}, "input.source"),
        ({"generation": {"max_new_tokens": "many"}}, "integer"),
        ({"primary": "ew"}, "primary"),
        ({"version": "one"}, "version"),
    ],
)
def test_invalid_task_is_rejected(change: dict, message: str, tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**BASE, **change}), encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        load_task(path)
    assert info.value.path == str(path)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("task: x\nmetrics: [ew\n", encoding="utf-8")
    with pytest.raises(InputError, match="not valid YAML"):
        load_task(path)


def test_user_folders_add_and_override_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "my-meld.yaml").write_text(yaml.safe_dump({**BASE, "task": "my-meld"}), encoding="utf-8")
    override = {**BASE, "task": "meld-closed", "description": "mine"}
    (user / "override.yaml").write_text(yaml.safe_dump(override), encoding="utf-8")
    tasks = list_tasks(user)
    assert tasks["my-meld"].parent == user and tasks["meld-closed"].parent == user
    assert load_task("meld-closed", user).description == "mine"
    assert "my-meld" not in list_tasks()
    env = tmp_path / "env"
    env.mkdir()
    (env / "env-task.yaml").write_text(yaml.safe_dump({**BASE, "task": "env-task"}), encoding="utf-8")
    monkeypatch.setenv(TASKS_PATH_ENV, str(env))
    assert load_task("env-task").path == env / "env-task.yaml"
    with pytest.raises(InputError, match="unknown task"):
        load_task("no-such-task")
    with pytest.raises(InputError, match="does not exist"):
        list_tasks(tmp_path / "missing")


def test_transcript_rows_get_linguistic_cues() -> None:
    transcript_only = ClipSettings(source="transcript")
    clip = clip_from_row({"id": "x", "transcript": "I can't believe it!", "dataset": "meld"}, transcript_only)
    assert clip.transcript == "I can't believe it!"
    assert clip.cues and all(c.modality == LINGUISTIC for c in clip.cues)
    with pytest.raises(InputError, match="no transcript"):
        clip_from_row({"id": "y", "transcript": ""}, transcript_only)


def _record(i: str, gold: list[str], pred: list[str], label: str | None = None) -> dict:
    return {
        "id": i,
        "gold": {"labels": gold, "label": label, "rationale": None},
        "emotions": pred,
        "rationale": [],
        "answer": "",
        "evidence": [],
    }


def test_score_records_feeds_each_metric_its_shape() -> None:
    task = parse_task({**BASE, "metrics": ["closed_set", "hit_rate"]})
    records = [
        _record("a", ["joy"], ["joy"], "joy"),
        _record("b", ["anger"], ["Angry"], "anger"),  # word form folded onto the label set
        _record("c", ["sadness"], [], "sadness"),  # a failed sample: empty answer, counted wrong
    ]
    scores = score_records(records, task)
    assert scores["closed_set"]["accuracy"] == pytest.approx(2 / 3)
    assert scores["closed_set"]["labels"][:3] == ["neutral", "joy", "surprise"]
    assert 0 < scores["hit_rate"]["hit_rate"] <= 1
    ov = parse_task({"task": "ov", "dataset": {"name": "ovmerd"}, "metrics": ["ew"]})
    ew = score_records([_record("a", ["happy", "excited"], ["happy"]), _record("b", ["sad"], ["sad"])], ov)[
        "ew"
    ]
    assert ew["l1"]["f"] > 0.5 and set(ew["variants"]) >= {"M1", "W1-L1", "W5-L2"}


def test_score_records_keeps_the_other_metrics_when_an_extra_is_missing(monkeypatch) -> None:
    # The grounding metric embeds cues with MiniLM (affectllm[embed]); without it the EW scores must still land.
    import affectllm.embeddings
    from affectllm.errors import MissingExtraError

    def no_embedder(*_args, **_kwargs):
        raise MissingExtraError(
            "sentence_transformers", "embed", "Sentence embeddings (rationale metrics, grounding)"
        )

    monkeypatch.setattr(affectllm.embeddings, "get_embedder", no_embedder)
    ov = parse_task({"task": "ov", "dataset": {"name": "ovmerd"}, "metrics": ["ew", "grounding"]})
    record = {**_record("a", ["happy"], ["happy"]), "rationale": [{"id": "L1", "cue": "says hi"}]}
    record["evidence"] = ['L1 [whole clip] transcript: "hi"']
    scores = score_records([record], ov)
    assert scores["ew"]["l1"]["f"] == pytest.approx(1.0)
    assert "affectllm[embed]" in scores["grounding"]["error"]


def test_decoding_settings_come_from_the_prompt_section_and_the_earlier_key_still_reads() -> None:
    assert parse_task(BASE).prompt.decoding == "auto"
    closed = parse_task({**BASE, "prompt": {**BASE["prompt"], "closed_decoding": "likelihood"}})
    assert closed.prompt.decoding == "likelihood"
    ov = parse_task(
        {
            **BASE,
            "prompt": {
                "task": "ov",
                "decoding": "likelihood",
                "candidates": ["happy", "sad"],
                "max_emotions": 2,
                "min_ratio": 0.5,
            },
            "metrics": ["ew"],
        }
    )
    assert (ov.prompt.candidates, ov.prompt.max_emotions, ov.prompt.min_ratio) == (("happy", "sad"), 2, 0.5)
    fitted = parse_task(
        {**BASE, "prompt": {**BASE["prompt"], "calibration": "label_prior", "calibration_rows": 50}}
    )
    assert (fitted.prompt.calibration, fitted.prompt.calibration_rows) == ("label_prior", 50)
    assert closed.prompt.calibration == "content_free"
    # Only a closed set chosen by likelihood needs the fitted prior (eval run then checks the train split).
    prior = fitted.prompt.replace(task="closed", labels=("joy", "anger"), decoding="likelihood")
    assert prior.uses_label_prior
    assert not prior.replace(decoding="generate").uses_label_prior
    assert not prior.replace(task="ov", labels=()).uses_label_prior
    both = {**BASE["prompt"], "decoding": "generate", "closed_decoding": "likelihood"}
    with pytest.raises(InputError, match="closed_decoding is its earlier name"):
        parse_task({**BASE, "prompt": both})
    for bad, match in (
        ({"decoding": "beam"}, "decoding 'beam'"),
        ({"candidates": "happy"}, "prompt.candidates"),
        ({"max_emotions": 0}, "max_emotions"),
        ({"min_ratio": 2}, "min_ratio"),
        ({"calibration": "platt"}, "calibration 'platt'"),
        ({"calibration_rows": 0}, "calibration_rows"),
    ):
        with pytest.raises(InputError, match=match):
            parse_task({**BASE, "prompt": {**BASE["prompt"], **bad}})
