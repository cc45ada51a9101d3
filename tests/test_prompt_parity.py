"""Training and evaluation show the model the same prompt for the same sample.

A recipe source that names an evaluation task (``eval_task``) builds its SFT and GRPO prompts with that task's
clip and prompt settings; ``affectllm eval run`` (``load_reasoner(task=...)`` + ``tasks.build_clip``) builds its
prompts from the same ``clip_from_row`` and ``PromptSettings``. These tests hold the two equal message for
message: for a user's own task and manifest end to end, for every shipped task YAML, and (with the shared
data) for every source of the shipped recipes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from affectllm.backends.mock import MockBackend
from affectllm.clips import clip_from_row
from affectllm.prompting import build_messages
from affectllm.reasoner import EmotionReasoner, load_reasoner
from affectllm.tasks import build_clip, list_tasks, load_task
from affectllm.training.config import DataArgs, DataSource, load_recipe
from affectllm.training.data import build_grpo_rows, build_sft_rows, load_source_rows, source_settings

REPO = Path(__file__).resolve().parents[1]

ROW = {
    "id": "u7",
    "transcript": "You did WHAT with my car?",
    "speaker": "Monica",
    "context": [
        {"speaker": "Chandler", "text": "So, about your car."},
        {"speaker": "Joey", "text": "It's fine!"},
    ],
    "labels": ["angry", "surprised"],
    "label": "anger",
    "cues": [
        {"modality": "acoustic", "name": "pitch", "band": "high", "value": 260.0, "unit": "Hz"},
        {"modality": "facial", "name": "AU4 brow lowerer", "band": "C", "start": 0.3, "end": 1.2},
    ],
}


def _reasoner(task) -> EmotionReasoner:
    """The reasoner ``eval run`` builds for a task, on a scripted backend (no model needed)."""
    from affectllm.tasks import generation_config

    backend = MockBackend(replies=['<answer>{"emotions": ["anger"], "rationale": []}</answer>'])
    return EmotionReasoner(backend, task.prompt, generation_config(task), task.parser_labels)


@pytest.mark.parametrize("name", sorted(list_tasks()))
def test_prompt_parity_every_shipped_task(name: str) -> None:
    task = load_task(name)
    source = DataSource(task.dataset, split="train", eval_task=name)
    labels = list(task.prompt.labels or ["anger", "joy", "neutral"])
    prompt_task, clip_settings, prompt_settings = source_settings(DataArgs(), source, labels)
    row = {**ROW, "label": labels[0]}
    # What the training builders do for this row ...
    train_messages = build_messages(clip_from_row(row, clip_settings), prompt_settings)
    # ... and what eval run asks for it.
    eval_messages = _reasoner(task).messages(build_clip(row, task))
    assert prompt_task == task.prompt.task
    assert train_messages == eval_messages
    if task.clip.context and "linguistic" in (task.prompt.modalities or ["linguistic"]):
        assert "Chandler: So, about your car." in eval_messages[-1]["content"]
        assert "(speaker: Monica)" in eval_messages[-1]["content"]


def _own_task(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    rows = [
        ROW,
        {**ROW, "id": "u8", "transcript": "Fine, whatever.", "label": "anger", "labels": ["annoyed"]},
    ]
    for split in ("train", "dev"):
        (folder / f"{split}.jsonl").write_text(
            "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8"
        )
    task = tmp_path / "mine-closed.yaml"
    task.write_text(
        "task: mine-closed\nversion: 1\ndataset: {name: manifest, split: dev}\n"
        "input: {source: transcript, modalities: [linguistic, acoustic], context: true}\n"
        "prompt: {task: closed, labels: [anger, joy, neutral]}\n"
        "metrics: [closed_set]\n",
        encoding="utf-8",
    )
    return task


def _own_data(tmp_path: Path, task_path: Path, **options: Any) -> DataArgs:
    """A recipe's data section with one source: the manifest of ``_own_task``, built for that task."""
    return DataArgs(
        sources=[DataSource("manifest", data_dir="mine", split="train", eval_task=str(task_path))],
        root=str(tmp_path),
        require_wheel_gold=False,
        **options,
    )


def test_prompt_parity_sft_and_grpo_rows_equal_eval_run_messages(tmp_path: Path) -> None:
    task_path = _own_task(tmp_path)
    task = load_task(str(task_path))
    data = _own_data(tmp_path, task_path)
    sft = {r["id"]: r for r in build_sft_rows(data)}
    grpo = {r["id"]: r for r in build_grpo_rows(data)}
    reasoner = _reasoner(task)
    for row in load_source_rows(data.sources[0], tmp_path):
        expected = reasoner.messages(build_clip(row, task))
        assert sft[row["id"]]["prompt"] == expected
        assert grpo[row["id"]]["prompt"] == expected
        # The grounding reward sees exactly the evidence lines the prompt shows.
        evidence = grpo[row["id"]]["evidence"]
        assert evidence and all(line in expected[-1]["content"] for line in evidence)
    assert "Chandler: So, about your car." in sft["u7"]["prompt"][-1]["content"]


def test_prompt_parity_load_reasoner_by_task_name(tmp_path: Path) -> None:
    """``load_reasoner(task=...)`` — the library call — wires the same settings as ``eval run``."""
    task_path = _own_task(tmp_path)
    replies = tmp_path / "replies.jsonl"
    replies.write_text(
        json.dumps('<answer>{"emotions": ["anger"], "rationale": [{"id": "L1", "cue": "x"}]}</answer>') + "\n"
    )
    reasoner = load_reasoner("mock", model=str(replies), task=str(task_path))
    task = load_task(str(task_path))
    clip = build_clip(ROW, task)
    assert reasoner.messages(clip) == _reasoner(task).messages(clip)
    prediction = reasoner.predict(clip)
    assert prediction.emotions == ["anger"] and prediction.rationale[0].cue_id == "L1"


@pytest.mark.parametrize(
    "recipe", sorted(str(p.relative_to(REPO)) for p in (REPO / "train/recipes").rglob("*.yaml"))
)
def test_prompt_parity_shipped_recipes_on_shared_data(recipe: str, shared_data: Path) -> None:
    method = Path(recipe).parent.name
    loaded = load_recipe(REPO / recipe, method, {"data.root": str(shared_data)}, check_trainer_args=False)
    data = loaded.data
    for source in data.sources:
        source.limit = 3
    data.sources = [s for s in data.sources if s.eval_task]
    if not data.sources:
        pytest.skip("no source names an eval task")
    rows = build_sft_rows(data) if method == "sft" else build_grpo_rows(data)
    assert rows
    by_source = {}
    for source in data.sources:
        for row in load_source_rows(source, data.resolved_root()):
            by_source[(source.dataset, str(row["id"]))] = (row, source)
    for built in rows:
        if built["task"] == "chat":
            continue  # follow-up rows: their parity with the chat REPL is the test below
        row, source = by_source[(built["dataset"], built["id"])]
        task = load_task(source.eval_task)
        assert built["prompt"] == _reasoner(task).messages(build_clip(row, task)), (recipe, built["id"])


def test_prompt_parity_follow_up_rows_equal_chat_session_messages(tmp_path: Path) -> None:
    """The follow-up training rows are the messages the chat REPL sends after the first answer."""
    task_path = _own_task(tmp_path)
    task = load_task(str(task_path))
    data = _own_data(tmp_path, task_path, follow_ups=1.0)
    rows = build_sft_rows(data)
    first = {r["id"]: r for r in rows if "#" not in r["id"]}
    follow = [r for r in rows if r["id"].endswith("#follow-up")]
    assert follow
    for row in follow:
        base_id = row["id"].split("#")[0]
        question = row["prompt"][-1]["content"]
        reasoner = _reasoner(task)
        reasoner.backend.replies = [first[base_id]["completion"][0]["content"], "ok"]
        source_row = next(r for r in load_source_rows(data.sources[0], tmp_path) if r["id"] == base_id)
        session = reasoner.chat(build_clip(source_row, task))
        session.ask(None)
        session.ask(question)
        assert session.history[:-1] == row["prompt"]
        reply = row["completion"][0]["content"]
        assert "[L1]" in reply and reply.splitlines()[-1].startswith("Emotions: ")
