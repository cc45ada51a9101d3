"""The EW metric on hand-built cases with answers worked out by hand, and against a plain re-statement."""

from __future__ import annotations

import random

import numpy as np
import pytest

from affectllm.metrics import get_metric
from affectllm.metrics.ov import sample_ew_f1, score_ov
from affectllm.wheel import VARIANTS, WHEEL_VARIANTS_L1, load_emotion_wheels

# Wheel-1 level-1 units of the words used below (checked here so a table change fails loudly, not subtly).
W1L1 = {"happy": "happy", "joyful": "happy", "sad": "sad", "angry": "mad", "worried": "scared"}


def test_words_used_here_map_as_assumed():
    wheels = load_emotion_wheels()
    for word, unit in W1L1.items():
        assert wheels.map_label(word, "W1-L1") == unit
    assert wheels.map_label("joyful", "M1") == "joy" and wheels.map_label("worried", "M1") == "worried"
    assert wheels.map_label("happy", "M1") == "happiness" and wheels.map_label("sad", "M1") == "sad"
    assert wheels.map_label("angry", "M1") == "anger"
    assert not wheels.in_vocabulary("neutral") and not wheels.in_vocabulary("xyzzy")


def test_hand_built_case():
    gold = {"a": ["happy", "sad"], "b": ["angry"], "c": ["neutral"]}
    pred = {"a": ["joyful", "worried", "xyzzy"], "b": [], "c": ["happy"]}
    result = score_ov(references=gold, predictions=pred)
    # W1-L1: a: G={happy, sad}, P={happy, scared} -> p=r=1/2; b: P empty -> 0, 0; c: gold maps to nothing.
    assert result["variants"]["W1-L1"] == pytest.approx({"f": 0.25, "p": 0.25, "r": 0.25, "n": 2})
    # M1: a: G={happiness, sad}, P={joy, worried} -> nothing shared.
    assert result["variants"]["M1"] == {"f": 0.0, "p": 0.0, "r": 0.0, "n": 2}
    assert result["mean_pred_labels"] == pytest.approx(4 / 3)
    assert result["oov_rate"] == pytest.approx(1 / 4)  # xyzzy
    assert result["n_gold"] == 3 and result["n_pred"] == 3 and result["warnings"] == []
    assert result["m_avg"] == pytest.approx(np.mean([result["variants"][v]["f"] for v in VARIANTS]))
    for key in ("f", "p", "r"):
        assert result["l1"][key] == pytest.approx(
            np.mean([result["variants"][v][key] for v in WHEEL_VARIANTS_L1])
        )


def test_duplicates_and_synonyms_count_once():
    result = score_ov(
        references={"a": ["happy"]}, predictions={"a": ["happy", "joyful", "Happiness", "happy"]}
    )
    assert result["variants"]["W1-L1"] == {"f": 1.0, "p": 1.0, "r": 1.0, "n": 1}


def test_empty_prediction_and_empty_gold():
    result = score_ov(references={"a": ["happy"], "b": []}, predictions={"a": [], "b": ["sad"]})
    for variant in VARIANTS:
        assert result["variants"][variant] == {"f": 0.0, "p": 0.0, "r": 0.0, "n": 1}
    assert result["oov_rate"] == 0.0

    nothing = score_ov(references={"a": ["neutral"]}, predictions={"a": ["happy"]})
    assert all(nothing["variants"][v]["n"] == 0 for v in VARIANTS)
    assert nothing["l1"] == {"f": 0.0, "p": 0.0, "r": 0.0}
    assert any("no gold labels map" in w for w in nothing["warnings"])
    assert nothing["floor"] is None
    assert score_ov(references={"a": ["happy"]}, predictions={"a": []})["oov_rate"] is None


def test_missing_and_unknown_prediction_names():
    result = score_ov(references={"a": ["happy"], "b": ["sad"]}, predictions={"a": ["happy"], "zzz": ["sad"]})
    assert result["missing_predictions"] == ["b"] and result["unknown_predictions"] == ["zzz"]
    assert result["n_pred"] == 1
    assert any("no prediction" in w and "b" in w for w in result["warnings"])
    assert any("not in the gold set" in w and "zzz" in w for w in result["warnings"])
    # b is scored as an empty prediction: p = (1 + 0) / 2.
    assert result["variants"]["W1-L1"]["p"] == 0.5 and result["variants"]["W1-L1"]["n"] == 2


def test_strings_are_parsed_by_the_official_rule():
    as_lists = score_ov(references={"a": ["happy", "sad"]}, predictions={"a": ["joyful"]})
    as_strings = score_ov(references={"a": "['happy', 'sad']"}, predictions={"a": "[Joyful]"})
    assert as_lists["variants"] == as_strings["variants"]


def test_versions_differ_where_the_tables_do():
    gold, pred = {"a": ["fearful"]}, {"a": ["fear"]}
    assert score_ov(references=gold, predictions=pred, version="2025")["variants"]["W2-L1"]["f"] == 0.0
    assert score_ov(references=gold, predictions=pred, version="2026")["variants"]["W2-L1"]["f"] == 1.0
    with pytest.raises(ValueError):
        score_ov(references=gold, predictions=pred, version="1999")


def test_floor_picks_the_best_k():
    gold = {"a": ["happy"], "b": ["happy"], "c": ["happy", "sad"]}
    floor = score_ov(references=gold, predictions={})["floor"]
    # k=1 (always "happy"): P=1, R=(1+1+1/2)/3=5/6 at every wheel's level 1 -> F=10/11; k=2 gives F=0.8.
    assert floor["k"] == 1 and floor["labels"] == ["happy"]
    assert floor["l1"]["f"] == pytest.approx(10 / 11)
    assert score_ov(references=gold, predictions={}, floor=False)["floor"] is None


def test_sample_ew_f1():
    assert sample_ew_f1(references=["happy"], predictions=["joyful"]) == 1.0
    assert sample_ew_f1(references=["happy"], predictions=[]) == 0.0
    assert sample_ew_f1(references=["neutral"], predictions=["happy"]) is None
    # Level 2: happy -> (joyful, content, cheerful, acceptance, proud) and joyful -> (accepted, accepted,
    # cheerful, acceptance, proud) across the five wheels: 3 of 5 agree.
    assert sample_ew_f1(references=["happy"], predictions=["joyful"], levels=(2,)) == pytest.approx(0.6)
    assert sample_ew_f1(references=["happy"], predictions=["joyful"], levels=(1, 2)) == pytest.approx(0.8)
    # One of two gold units hit, one prediction: P=1, R=1/2 -> F=2/3 at wheel 1.
    assert sample_ew_f1(references="[happy, angry]", predictions="[joyful]") == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        sample_ew_f1(references=["happy"], predictions=["happy"], levels=(3,))


def _plain(gold, pred, version):
    """The official loop, written out with string sets."""
    wheels = load_emotion_wheels(version)
    out = {}
    for variant in VARIANTS:
        ps, rs = [], []
        for name, labels in gold.items():
            g = set(wheels.map_labels(labels, variant))
            p = set(wheels.map_labels(pred.get(name, []), variant))
            if not g:
                continue
            ps.append(len(g & p) / len(p) if p else 0)
            rs.append(len(g & p) / len(g))
        out[variant] = (float(np.mean(ps)), float(np.mean(rs)), len(ps))
    return out


@pytest.mark.parametrize("version", ["2025", "2026"])
def test_matches_plain_statement_on_random_data(version):
    rng = random.Random(7)
    vocab = load_emotion_wheels(version).vocabulary
    words = [*rng.sample(vocab, 150), "xyzzy", "neutral", "not an emotion"]
    gold = {f"s{i}": rng.sample(words, rng.randint(0, 4)) for i in range(300)}
    pred = {f"s{i}": [rng.choice(words) for _ in range(rng.randint(0, 6))] for i in range(300)}
    result = score_ov(references=gold, predictions=pred, version=version)
    for variant, (p, r, n) in _plain(gold, pred, version).items():
        assert result["variants"][variant]["p"] == p
        assert result["variants"][variant]["r"] == r
        assert result["variants"][variant]["n"] == n


def test_registered_metric():
    spec = get_metric("ew")
    assert spec.aggregation == "f_of_means" and spec.higher_is_better and spec.primary == "l1.f"
    by_name = spec.fn(predictions={"a": ["joyful"]}, references={"a": ["happy"]})
    aligned = spec.fn(predictions=[["joyful"]], references=[["happy"]])
    assert by_name["l1"] == aligned["l1"] == {"f": 1.0, "p": 1.0, "r": 1.0}
