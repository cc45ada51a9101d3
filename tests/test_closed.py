"""Closed-set metrics against scikit-learn, the MER-UniBench hit rate against an independent transcription of
the official algorithm, and the ``affectllm eval closed`` command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from affectllm.cli.main import main
from affectllm.metrics import get_metric
from affectllm.metrics.closed import canonical_label, closed_set_scores, hit_rate, normalize_label

sklearn_metrics = pytest.importorskip("sklearn.metrics")

CLASSES = ["angry", "happy", "neutral", "sad", "surprise", "worried"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_on_random_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Skewed classes, and some predictions outside the class set (an LLM's free answer).
    gold = list(rng.choice(CLASSES, 300, p=[0.35, 0.25, 0.2, 0.1, 0.05, 0.05]))
    pred = list(rng.choice([*CLASSES, "confused", "bored"], 300))
    result = closed_set_scores(references=gold, predictions=pred)
    labels = sorted(set(gold))
    assert result["labels"] == labels
    assert result["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(gold, pred))
    kw = {"labels": labels, "zero_division": 0}
    assert result["weighted_f1"] == pytest.approx(
        sklearn_metrics.f1_score(gold, pred, average="weighted", **kw)
    )
    assert result["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(gold, pred, average="macro", **kw))
    assert result["uar"] == pytest.approx(sklearn_metrics.recall_score(gold, pred, average="macro", **kw))
    matrix = np.array(result["confusion_matrix"]["matrix"])
    assert result["confusion_matrix"]["columns"][-1] == "(other)"
    np.testing.assert_array_equal(matrix[:, :-1], sklearn_metrics.confusion_matrix(gold, pred, labels=labels))
    assert matrix[:, -1].sum() == sum(p not in labels for p in pred) == result["out_of_set_predictions"]
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(gold, pred, **kw)
    for i, label in enumerate(labels):
        row = result["per_class"][label]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i])
        )


def test_uar_equals_balanced_accuracy_when_predictions_stay_in_the_set() -> None:
    rng = np.random.default_rng(7)
    gold = list(rng.choice(CLASSES, 200))
    pred = list(rng.choice(CLASSES, 200))
    result = closed_set_scores(references=gold, predictions=pred)
    assert result["uar"] == pytest.approx(sklearn_metrics.balanced_accuracy_score(gold, pred))
    assert result["confusion_matrix"]["columns"] == sorted(CLASSES)  # no "(other)" column needed


def test_known_answer_and_label_order() -> None:
    gold = ["sad", "happy", "happy", "angry"]
    pred = ["sad", "happy", "angry", "angry"]
    result = closed_set_scores(references=gold, predictions=pred, labels=["happy", "sad", "angry", "neutral"])
    assert result["accuracy"] == 0.75
    # happy: P 1, R 0.5, F 2/3; sad: 1/1/1; angry: P 0.5, R 1, F 2/3; neutral has no gold sample and scores 0,
    # as in scikit-learn with labels= (the average is over the given set).
    assert result["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3 + 0) / 4)
    assert result["uar"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert result["label_set"] == "given"
    assert result["weighted_f1"] == pytest.approx((2 * 2 / 3 + 1 + 2 / 3) / 4)
    assert result["confusion_matrix"]["rows"] == ["happy", "sad", "angry", "neutral"]
    assert result["confusion_matrix"]["matrix"] == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert result["classes_without_gold"] == ["neutral"]


def test_normalisation_and_word_form_folding() -> None:
    assert normalize_label("  Happy.  ") == "happy"
    assert normalize_label('"Very   Sad"') == "very sad"
    order = ["angry", "happy", "sad"]
    assert canonical_label("Anger", order) == "angry"
    assert canonical_label("happiness", order) == "happy"
    assert canonical_label("joy", order) == "joy"  # a different word is never folded
    assert canonical_label("anger", order, fold_word_forms=False) == "anger"
    result = closed_set_scores(references=["angry", "happy"], predictions=["ANGER", "Happiness"])
    assert result["accuracy"] == 1.0
    # A word form that is itself a class stays as it is.
    assert canonical_label("anger", ["anger", "angry"]) == "anger"


def test_missing_predictions_and_bad_input() -> None:
    result = closed_set_scores(references=["happy", "sad"], predictions=["happy", None])
    assert result["accuracy"] == 0.5
    assert result["empty_predictions"] == 1
    with pytest.raises(ValueError, match="gold has 2 labels but pred has 1"):
        closed_set_scores(references=["a", "b"], predictions=["a"])
    with pytest.raises(ValueError, match="outside the label list: sad"):
        closed_set_scores(references=["happy", "sad"], predictions=["happy", "sad"], labels=["happy"])
    with pytest.raises(ValueError, match="no samples"):
        closed_set_scores(references=[], predictions=[])


MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_macro_f1_and_uar_average_over_the_task_label_set_as_sklearn_labels_does(seed: int) -> None:
    """A 5-sample MELD run covers a few of the 7 classes; the averages still run over all 7."""
    rng = np.random.default_rng(seed)
    gold = list(rng.choice(MELD_LABELS[:3], 5))
    pred = list(rng.choice([*MELD_LABELS, "confused"], 5))
    result = get_metric("closed_set").fn(predictions=pred, references=gold, labels=MELD_LABELS)
    kw = {"labels": MELD_LABELS, "average": "macro", "zero_division": 0}
    assert result["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(gold, pred, **kw))
    assert result["uar"] == pytest.approx(sklearn_metrics.recall_score(gold, pred, **kw))
    assert result["label_set"] == "given" and result["labels"] == MELD_LABELS
    # Without the set, the gold classes are the set (and the result says so).
    alone = closed_set_scores(references=gold, predictions=pred)
    assert alone["label_set"] == "gold" and alone["labels"] == sorted(set(gold))


def test_the_issue_example_five_meld_samples() -> None:
    gold = ["neutral", "neutral", "joy", "surprise", "neutral"]
    pred = ["neutral", "joy", "neutral", "neutral", "anger"]
    result = closed_set_scores(references=gold, predictions=pred, labels=MELD_LABELS)
    kw = {"labels": MELD_LABELS, "average": "macro", "zero_division": 0}
    assert result["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(gold, pred, **kw))
    assert (
        result["uar"]
        == pytest.approx(sklearn_metrics.recall_score(gold, pred, **kw))
        == pytest.approx(1 / 3 / 7)
    )


def test_registry_entries() -> None:
    gold, pred = ["a", "b", "b"], ["a", "b", "a"]
    for name in ("accuracy", "weighted_f1", "macro_f1", "uar", "closed_set"):
        spec = get_metric(name)
        assert spec.higher_is_better
        out = spec.fn(predictions=pred, references=gold)
        assert spec.primary in out
    assert get_metric("uar").fn(predictions=pred, references=gold)["uar"] == pytest.approx(0.75)
    assert get_metric("hit_rate").primary == "hit_rate"


# --------------------------------------------------------------------------------------------- hit rate


def test_hit_rate_known_answer() -> None:
    gold = {"a": "happy", "b": "angry", "c": "not-an-emotion-word"}
    pred = {"a": ["joyful", "smiling"], "b": "[sad]", "x": ["happy"]}
    result = hit_rate(references=gold, predictions=pred)
    # "c" maps to nothing and is skipped on every wheel; "a" is a hit, "b" is not.
    for wheel in result["wheels"].values():
        assert wheel["n"] == 2
        assert wheel["hit_rate"] == 0.5
    assert result["hit_rate"] == 0.5
    assert result["missing_predictions"] == ["c"]
    assert result["extra_predictions"] == 1


def test_hit_rate_is_one_for_the_gold_itself_and_zero_for_no_prediction() -> None:
    gold = {"a": "happy", "b": "sad", "c": "angry", "d": "surprise"}
    assert hit_rate(references=gold, predictions={k: [v] for k, v in gold.items()})["hit_rate"] == 1.0
    assert hit_rate(references=gold, predictions={k: [] for k in gold})["hit_rate"] == 0.0


def _official_hit_rate(emotion_wheel: Path, name2gt: dict, name2pred: dict) -> float:
    """An independent, straightforward transcription of the official MER-UniBench hit rate (level 1, 5
    wheels), reading the raw spreadsheets, to check the compiled-table implementation against."""
    pd = pytest.importorskip("pandas")

    def to_list(value):
        if isinstance(value, list):
            return value
        if value == "" or (isinstance(value, float) and np.isnan(value)):
            return []
        if value[0] == "[":
            value = value[1:]
        if value[-1] == "]":
            value = value[:-1]
        return [x.strip() for x in re.split("['\",]", value) if x.strip() not in ("", ",")]

    formats: dict[str, list[str]] = {}
    table = pd.read_csv(emotion_wheel / "format_2025.csv").fillna("")
    for raw, fmt in zip(table["name"], table["format"], strict=True):
        for item in to_list(fmt):
            formats.setdefault(item, []).append(raw)
        formats.setdefault(raw, []).append(raw)
    synonyms: dict[str, set[str]] = {}
    sheet = pd.read_excel(emotion_wheel / "synonym.xlsx")
    for run in range(1, 9):
        for _, row in sheet.iterrows():
            word = row[f"word_run{run}"].strip().lower()
            synonyms.setdefault(word, set()).add(word)
            for syn in to_list(row[f"synonym_run{run}"]):
                synonyms.setdefault(syn.strip().lower(), set()).add(word)

    scores = []
    for wheel in range(1, 6):
        to_level1: dict[str, str] = {}
        level1 = level2 = level3 = ""
        for _, row in pd.read_excel(emotion_wheel / f"wheel{wheel}.xlsx").iterrows():
            level1 = row["level1"] if not pd.isna(row["level1"]) else level1
            level2 = row["level2"] if not pd.isna(row["level2"]) else level2
            level3 = row["level3"] if not pd.isna(row["level3"]) else level3
            l1, l2, l3 = (x.lower().strip() for x in (level1, level2, level3))
            to_level1[l1] = to_level1[l2] = to_level1[l3] = l1

        def map_one(label: str, to_level1=to_level1) -> str:
            if label not in formats:
                return ""
            reachable = [w for base in formats[label] for w in synonyms.get(base, ())]
            for word in sorted(reachable):
                if word in to_level1:
                    return to_level1[word]
            return ""

        hits = []
        for name, gt in name2gt.items():
            gold = {map_one(x.lower().strip()) for x in to_list(gt)} - {""}
            if not gold:
                continue
            pred = {map_one(x.lower().strip()) for x in to_list(name2pred[name])} - {""}
            hits.append(len(gold & pred))
        scores.append(np.mean(hits))
    return float(np.mean(scores))


def test_hit_rate_matches_the_official_algorithm_on_real_predictions(shared_data: Path) -> None:
    """OV-MERD samples are MER2023 train clips: their one-hot MER2023 label is the gold, and the released
    zero-shot baselines' open-vocabulary answers are the predictions."""
    pd = pytest.importorskip("pandas")
    onehot_all = dict(pd.read_csv(shared_data / "mer2023" / "train.csv")[["name", "emotion"]].values)
    preds_dir = shared_data / "ovmerd" / "predictions"
    for pred_file in sorted(preds_dir.glob("*__subtitle.csv"))[:2]:
        table = pd.read_csv(pred_file, keep_default_na=False)
        name2pred = dict(zip(table["name"], table["labels"], strict=True))
        name2gt = {n: onehot_all[n] for n in name2pred if n in onehot_all}
        assert len(name2gt) > 100
        ours = hit_rate(references=name2gt, predictions=name2pred)
        assert 0.0 < ours["hit_rate"] < 1.0
        assert ours["hit_rate"] == pytest.approx(
            _official_hit_rate(shared_data / "emotion_wheel", name2gt, name2pred)
        )
        # "neutral" is in no wheel: those samples are skipped, as the official code does.
        n_neutral = sum(v == "neutral" for v in name2gt.values())
        assert ours["wheels"]["W1"]["n"] <= len(name2gt) - n_neutral


# --------------------------------------------------------------------------------------------------- CLI


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_closed_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold = _write(tmp_path / "gold.csv", "name,label\na,happy\nb,sad\nc,angry\nd,angry\n")
    pred = _write(
        tmp_path / "pred.jsonl",
        '{"name": "a", "labels": ["Happiness"]}\n{"name": "b", "labels": ["sad", "worried"]}\n'
        '{"name": "c", "labels": "confused"}\n',
    )
    out = tmp_path / "out" / "scores.json"
    assert main(["eval", "closed", "--pred", str(pred), "--gold", str(gold), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "accuracy" in captured.out and "confusion matrix" in captured.out and "(other)" in captured.out
    assert "1 gold names have no prediction" in captured.err
    assert "gold.csv:5: 'd' has no prediction" in captured.err
    result = json.loads(out.read_text())
    assert result["accuracy"] == 0.5  # a, b right (b by its first label); c wrong; d missing
    assert result["multi_label_predictions"] == 1
    assert result["missing_predictions"] == ["d"]
    assert result["confusion_matrix"]["rows"] == ["angry", "happy", "sad"]


def test_cli_closed_labels_option_and_hit_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold = _write(tmp_path / "gold.csv", "name,emotion\na,happy\nb,sad\n")
    pred = _write(tmp_path / "pred.csv", 'name,labels\na,"[joyful, excited]"\nb,[calm]\n')
    assert main(["eval", "closed", "--pred", str(pred), "--gold", str(gold), "--hit-rate", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["hit_rate"] == 0.5
    assert (
        main(["eval", "closed", "--pred", str(pred), "--gold", str(gold), "--labels", "Sad, happy,neutral"])
        == 0
    )
    table = capsys.readouterr().out
    assert table.index("  sad") < table.index("  happy") < table.index("  neutral")


def test_cli_closed_unknown_prediction_name_is_ignored_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The one name policy (affectllm.labels.align_names), as in eval ov: ignored, reported with file and line.
    gold = _write(tmp_path / "gold.csv", "name,label\na,happy\nb,sad\n")
    pred = _write(tmp_path / "pred.csv", "name,label\na,happy\nzz,sad\n")
    assert main(["eval", "closed", "--pred", str(pred), "--gold", str(gold), "--json"]) == 0
    captured = capsys.readouterr()
    assert "pred.csv:3: prediction for 'zz', which is not in" in captured.err and "ignored" in captured.err
    result = json.loads(captured.out)
    assert result["accuracy"] == 0.5 and result["missing_predictions"] == ["b"]


@pytest.mark.parametrize(
    ("gold_text", "pred_text", "message"),
    [
        ("name,label\na,happy\na,sad\n", "name,label\na,happy\n", "gold.csv:3: duplicate name 'a'"),
        ('name,label\na,"[happy, sad]"\n', "name,label\na,happy\n", "gold.csv:2: expected one gold label"),
        ("id2,label\na,happy\n", "name,label\na,happy\n", "gold.csv:1: no name column"),
        ("name,label\na,happy\n", "name,score\na,1\n", "pred.csv:1: no value column"),
    ],
)
def test_cli_closed_bad_input_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gold_text: str, pred_text: str, message: str
) -> None:
    gold = _write(tmp_path / "gold.csv", gold_text)
    pred = _write(tmp_path / "pred.csv", pred_text)
    assert main(["eval", "closed", "--pred", str(pred), "--gold", str(gold)]) == 2
    assert message in capsys.readouterr().err


def test_cli_closed_bad_jsonl_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold = _write(tmp_path / "gold.csv", "name,label\na,happy\n")
    pred = _write(tmp_path / "pred.jsonl", '{"name": "a", "label": "happy"}\n{"name": "b", \n')
    assert main(["eval", "closed", "--pred", str(pred), "--gold", str(gold)]) == 2
    assert "pred.jsonl:2: not valid JSON" in capsys.readouterr().err
