"""Training-row builders: the inference prompt builder and answer contract, holdouts, eval-split refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from affectllm.clips import clip_from_row
from affectllm.errors import InputError
from affectllm.parsing import parse_answer
from affectllm.prompting import build_messages
from affectllm.schema import Clip, Cue
from affectllm.training.config import DataArgs, DataSource
from affectllm.training.data import (
    BuildReport,
    build_grpo_rows,
    build_sft_rows,
    cap_per_label,
    derived_rationale,
    is_eval_split,
)

ROWS = [
    {"id": "c1", "transcript": "I got the job!", "labels": ["happy", "excited"]},
    {"id": "c2", "transcript": "Leave me alone.", "labels": ["angry"], "label": "angry"},
    {
        "id": "c3",
        "transcript": "He is gone forever.",
        "labels": ["sad"],
        "label": "sad",
        "context": [{"speaker": "Ann", "text": "What happened?"}],
        "rationale": "His voice trembles and he speaks slowly. He says he lost someone.",
    },
    {
        "id": "c4",
        "transcript": "Fine.",
        "labels": ["neutral"],
        "label": "neutral",
        "cues": [
            {"modality": "acoustic", "name": "pitch", "value": 110.0, "unit": "Hz", "band": "low"},
            {"modality": "facial", "name": "AU4 brow lowerer", "band": "B", "start": 0.2, "end": 1.0},
        ],
    },
]


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    for split in ("train", "dev"):
        (folder / f"{split}.jsonl").write_text(
            "\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8"
        )
    return tmp_path


def data_args(root: Path, require_wheel_gold: bool = False, **source) -> DataArgs:
    return DataArgs(
        sources=[DataSource("manifest", data_dir="mine", **source)],
        root=str(root),
        seed=0,
        require_wheel_gold=require_wheel_gold,
    )


def test_sft_rows_use_the_inference_prompt_and_answer_contract(manifest):
    rows = build_sft_rows(data_args(manifest, task="ov"))
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {"c1", "c2", "c3", "c4"}
    row = by_id["c3"]
    expected = build_messages(clip_from_row(ROWS[2]), task="ov")
    assert row["prompt"] == expected  # the very messages inference sends
    assert "Ann: What happened?" in expected[-1]["content"]
    answer = row["completion"][0]["content"]
    pred = parse_answer(answer)
    assert pred.format_ok and pred.emotions == ["sad"]
    # The human rationale is split into cue statements; rows without one cite their own evidence.
    assert row["rationale_source"] == "human" and len(pred.rationale) >= 2
    assert by_id["c1"]["rationale_source"] == "derived"
    assert parse_answer(by_id["c1"]["completion"][0]["content"]).emotions == ["happy", "excited"]
    cited = parse_answer(by_id["c4"]["completion"][0]["content"]).rationale
    assert {item.cue_id for item in cited} >= {"A1", "F1"}  # ids of evidence the clip really has


def test_closed_task_answers_with_the_label(manifest):
    rows = build_sft_rows(data_args(manifest, task="closed"))
    # Closed rows need a single label: c1 has none and is dropped, not guessed.
    assert {r["id"] for r in rows} == {"c2", "c3", "c4"}
    row = next(r for r in rows if r["id"] == "c2")
    system = row["prompt"][0]["content"]
    assert "angry" in system and "neutral" in system  # the label set, read from the rows
    assert parse_answer(row["completion"][0]["content"]).emotions == ["angry"]


def test_grpo_rows_carry_reward_columns(manifest):
    report = BuildReport()
    rows = build_grpo_rows(data_args(manifest, require_wheel_gold=True, task="ov"), report=report)
    by_id = {r["id"]: r for r in rows}
    # "neutral" maps to no emotion-wheel word: ew_f1 could not score c4, so GRPO drops it (and SFT too:
    # open-vocabulary scoring gives "neutral" nothing, so training on it teaches an answer that only loses).
    assert "c4" not in by_id and report.dropped_unusable == {"manifest:train": 1}
    sft = build_sft_rows(data_args(manifest, require_wheel_gold=True, task="ov"))
    assert "c4" not in {r["id"] for r in sft}
    row = by_id["c1"]
    assert row["labels"] == ["happy", "excited"] and row["label"] == "" and row["label_set"] == []
    assert row["evidence"] == ['L1 [whole clip] transcript: "I got the job!"']
    closed = build_grpo_rows(data_args(manifest, require_wheel_gold=True, task="closed"))
    c4 = next(r for r in closed if r["id"] == "c4")
    assert c4["label"] == "neutral" and "neutral" in c4["label_set"]
    assert c4["evidence"][:2] == ["A1 [whole clip] pitch: low (110 Hz)", "F1 [0.2-1.0s] AU4 brow lowerer: B"]


def test_eval_splits_are_refused_and_holdout_ids_removed(manifest):
    with pytest.raises(InputError, match="evaluation split"):
        build_sft_rows(DataArgs(sources=[DataSource("manifest", "mine", split="dev")], root=str(manifest)))
    args = data_args(manifest, task="ov")
    args.holdout = [DataSource("manifest", "mine", split="dev")]
    report = BuildReport()
    assert build_sft_rows(args, report=report) == []
    assert report.dropped_holdout == {"manifest:train": 4}
    assert is_eval_split("meld", "test") and is_eval_split("ovmerd", "all") and is_eval_split("meld", "dev")
    assert is_eval_split("emodb", "all") and is_eval_split("ravdess", "dev")
    assert not is_eval_split("emodb", "train") and not is_eval_split("meld", "train")


_MER_FAMILY = {"mer2023", "ovmerd", "emer"}  # one pool of sample names: OV-MERD/EMER are MER2023 train clips
_SPEECH = {"emodb", "ravdess", "cremad"}


def _contamination_keys(dataset: str, rows: list[dict]) -> set[tuple]:
    """What must never be shared between training and evaluation: a MER sample name, a speech corpus's
    speaker, or (for corpora with official splits, whose ids restart per split) the split itself."""
    if dataset in _MER_FAMILY:
        return {("mer", str(r["id"])) for r in rows}
    if dataset in _SPEECH:
        return {(dataset, "speaker", str(r["speaker"])) for r in rows}
    return {(dataset, str(r["split"]), str(r["id"])) for r in rows}


def test_no_recipe_trains_on_what_a_task_evaluates(shared_data):
    from test_datasets import SHARED_DIRS

    """Every shipped recipe's training rows (after its holdout) against every shipped task's rows, on the
    shared data: no MER sample, no speaker of a speech corpus, no split may be on both sides."""
    from affectllm.tasks import list_tasks, load_task, task_rows
    from affectllm.training.config import load_recipe
    from affectllm.training.data import holdout_ids, load_source_rows

    repo = Path(__file__).resolve().parents[1]
    evaluated: dict[tuple, str] = {}
    for name in list_tasks():
        task = load_task(name)
        if task.dataset not in SHARED_DIRS:
            continue
        rows = task_rows(task, shared_data / SHARED_DIRS[task.dataset])
        for key in _contamination_keys(task.dataset, rows):
            evaluated.setdefault(key, name)
    assert len(evaluated) > 1000
    recipes = sorted((repo / "train" / "recipes").glob("*/*/*.yaml"))
    assert recipes
    for path in recipes:
        recipe = load_recipe(path, path.parent.name)
        excluded = holdout_ids(recipe.data.holdout, shared_data)
        for source in recipe.data.sources:
            if source.dataset not in SHARED_DIRS:
                continue
            source.data_dir = SHARED_DIRS[source.dataset]
            rows = [r for r in load_source_rows(source, shared_data) if str(r["id"]) not in excluded]
            leaked = _contamination_keys(source.dataset, rows) & set(evaluated)
            assert not leaked, (
                f"{path}: {source.dataset} trains on {sorted(leaked)[:3]} (task {evaluated[min(leaked)]})"
            )


def test_prompt_length_filter_with_a_tokenizer(manifest, tiny_lm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    args = data_args(manifest, task="ov")
    args.max_prompt_tokens = 100000
    assert len(build_sft_rows(args, tokenizer)) == 4
    args.max_prompt_tokens = 10
    report = BuildReport()
    assert build_grpo_rows(args, tokenizer, report=report) == []
    assert report.dropped_long == {"manifest:train": 4}
    # SFT also drops rows whose prompt + answer would be cut by the trainer's max_length.
    args.max_prompt_tokens = None
    assert build_sft_rows(args, tokenizer, max_length=20) == []


def test_limit_and_seeded_order(manifest):
    first = build_sft_rows(data_args(manifest, task="ov", limit=2))
    again = build_sft_rows(data_args(manifest, task="ov", limit=2))
    assert len(first) == 2 and [r["id"] for r in first] == [r["id"] for r in again]


def test_cap_per_label_keeps_a_label_prior_from_becoming_the_answer():
    rows = [{"id": str(i), "label": "neutral"} for i in range(5)] + [
        {"id": "j", "label": "joy"},
        {"id": "m", "labels": ["admiration", "joy"]},
        {"id": "n", "labels": ["admiration"]},
        {"id": "x", "labels": []},
    ]
    kept = [row["id"] for row in cap_per_label(rows, 2)]
    # Two "neutral" rows, then "joy" fills its cap with the multi-label row, so a second joy-bearing row is
    # refused; rows without a gold label are never kept.
    assert kept == ["0", "1", "j", "m", "n"]
    assert [row["id"] for row in cap_per_label(rows, 1)] == ["0", "j", "n"]


def test_derived_rationale_and_evidence_cite_real_ids():
    clip = Clip(
        "x",
        [
            Cue("facial", "AU12 lip corner puller", band="C", start=0.4, end=1.8),
            Cue("acoustic", "loudness", band="high"),
        ],
        transcript="We won!",
    )
    items = derived_rationale(clip)
    assert items[0].modality == "linguistic" and "We won!" in items[0].cue and items[0].cue_id == "L1"
    assert {i.cue_id for i in items[1:]} == {"A1", "F1"}
    assert [e.text for e in clip.evidence()][-1] == 'L1 [whole clip] transcript: "We won!"'
    assert clip_from_row({"id": "y", "transcript": " hi "}).transcript == "hi"
    # A prompt that hides the words (an acoustic-only task) gets a rationale that cites only what it shows.
    assert {i.modality for i in derived_rationale(clip, modalities=("acoustic",))} == {"acoustic"}


def test_shared_data_meld_context_and_ovmerd_holdout(shared_data):
    args = DataArgs(
        sources=[
            DataSource("meld", split="train", task="closed", limit=5, context_turns=2),
            DataSource("mer2023", data_dir="mer2023", split="train", task="ov", limit=20),
        ],
        holdout=[DataSource("ovmerd", split="all")],
        root=str(shared_data),
    )
    report = BuildReport()
    rows = build_grpo_rows(args, report=report)
    # Every OV-MERD dev clip is a MER2023 train sample; all of them that fall in the train fold are removed.
    assert report.dropped_holdout["mer2023:train"] > 100
    import csv

    with (shared_data / "ovmerd" / "gold_dev.csv").open(encoding="utf-8") as fh:
        ovmerd = {r["name"] for r in csv.DictReader(fh)}
    assert not ovmerd & {r["id"] for r in rows}
    meld = [r for r in rows if r["dataset"] == "meld"]
    assert len(meld) == 5 and all(r["label_set"][0] == "neutral" for r in meld)
    assert any("Dialogue so far" in r["prompt"][-1]["content"] for r in meld) or all(
        r["id"].endswith("_utt0") for r in meld
    )
