"""GRPO rewards on literal model answers: no model, the real parser and metric code."""

from __future__ import annotations

import math

import pytest

from affectllm.errors import InputError
from affectllm.metrics.ov import sample_ew_f1
from affectllm.rewards import (
    REWARDS,
    RewardSpec,
    build_rewards,
    completion_text,
    get_reward,
    parse_reward_specs,
    reward_columns,
    score_completions,
)

GOOD = (
    '<answer>{"emotions": ["happy", "relieved"], "rationale": [{"id": "A1", "cue": "pitch is high", '
    '"modality": "acoustic"}]}</answer>'
)
NO_RATIONALE = '<answer>{"emotions": ["happy"], "rationale": []}</answer>'
PROSE = "Emotions: happy, relieved"
NOTHING = "I cannot tell."
MANY = '<answer>{"emotions": ["happy", "sad", "angry", "worried", "surprised", "calm"], "rationale": []}</answer>'


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_completion_text_accepts_plain_and_chat_forms():
    assert completion_text(GOOD) == GOOD
    assert completion_text(chat(GOOD)) == GOOD
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert completion_text(parts) == "ab"


def test_format_reward_grades_the_contract():
    fn = REWARDS["format"]
    assert fn([GOOD, NO_RATIONALE, PROSE, NOTHING]) == [1.0, 0.5, 0.25, 0.0]
    # Without a required rationale, an answer with emotions alone is complete.
    assert fn([NO_RATIONALE], require_rationale=False) == [1.0]
    # Conversational completions are read the same way.
    assert fn([chat(GOOD)]) == [1.0]


def test_ew_f1_reward_uses_the_wheel_metric():
    fn = REWARDS["ew_f1"]
    scores = fn(
        [GOOD, '<answer>{"emotions": ["sad"], "rationale": []}</answer>', NOTHING],
        labels=[["happy"], ["happy"], ["happy"]],
    )
    # happy and relieved share a level-1 wheel word, so listing both costs nothing against gold "happy".
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == 0.0
    assert scores[2] == 0.0
    happy_sad = '<answer>{"emotions": ["happy", "sad"], "rationale": []}</answer>'
    # {happy, sad} vs {happy}: P = 1/2, R = 1 on every wheel, so F = 2/3; and it equals the metric's own value.
    assert fn([happy_sad], labels=[["happy"]])[0] == pytest.approx(2 / 3)
    assert fn([happy_sad], labels=[["happy"]]) == [
        sample_ew_f1(references=["happy"], predictions=["happy", "sad"])
    ]
    # Gold that maps to no wheel word (neutral) makes the reward abstain; so does a missing gold.
    assert fn([GOOD, GOOD], labels=[["neutral"], []]) == [None, None]
    # A gold cell in the OV-MERD string form is parsed by the official rule.
    assert fn([GOOD], labels=["['happy', 'relieved']"])[0] == pytest.approx(1.0)


def test_ew_f1_levels_option_changes_the_granularity():
    one = REWARDS["ew_f1"]([GOOD], labels=[["joyful"]], levels=[1])[0]
    both = REWARDS["ew_f1"]([GOOD], labels=[["joyful"]], levels=[1, 2])[0]
    assert one is not None and both is not None
    assert 0.0 <= both <= one <= 1.0


def test_ew_hit_reward_is_the_hit_rate_of_one_label_and_ew_f1_can_leave_it_those_rows():
    from affectllm.metrics.closed import hit_rate

    hit = REWARDS["ew_hit"]
    happy_sad = '<answer>{"emotions": ["happy", "sad"], "rationale": []}</answer>'
    sad = '<answer>{"emotions": ["sad"], "rationale": []}</answer>'
    # One gold label is partial: a second emotion costs nothing, missing the label costs everything.
    assert hit([happy_sad, sad, NOTHING], labels=[["happy"]] * 3) == [1.0, 0.0, 0.0]
    assert hit([happy_sad], labels=[["joyful"]]) == [
        hit_rate(references={"x": ["joyful"]}, predictions={"x": ["happy", "sad"]})["hit_rate"]
    ]
    # max_gold leaves multi-label rows to ew_f1; min_gold leaves single-label rows to ew_hit.
    assert hit([happy_sad], labels=[["happy", "sad"]], max_gold=1) == [None]
    assert REWARDS["ew_f1"]([happy_sad], labels=[["happy"]], min_gold=2) == [None]
    assert REWARDS["ew_f1"]([happy_sad], labels=[["happy", "sad"]], min_gold=2) == [pytest.approx(1.0)]
    assert hit([GOOD], labels=[["neutral"]]) == [None]  # no wheel word: abstains


def test_accuracy_reward_closed_sets_and_abstention():
    fn = REWARDS["accuracy"]
    labels = ["neutral", "joy", "anger"]
    joyful = '<answer>{"emotions": ["joyful"], "rationale": []}</answer>'
    angry = '<answer>{"emotions": ["anger"], "rationale": []}</answer>'
    out = fn([joyful, angry, joyful], label=["joy", "joy", ""], label_set=[labels, labels, []])
    # "joyful" maps onto the label "joy" exactly as evaluation maps it.
    assert out == [1.0, 0.0, None]


def test_label_count_reward_penalises_listing_many():
    fn = REWARDS["label_count"]
    assert fn([GOOD, MANY, NOTHING], target=3) == [0.0, -0.75, -1.0]
    assert fn([MANY], target=2, per_extra=0.5) == [-1.0]  # floored at -1
    with pytest.raises(ValueError):
        fn([GOOD], target=0)


def test_length_reward():
    fn = REWARDS["length"]
    short, long = "x" * 40, "x" * 4 * 150  # 10 and 150 approximate tokens
    assert fn([short, long], max_tokens=100) == [0.0, pytest.approx(-0.5)]
    assert fn(["x" * 4000], max_tokens=100) == [-1.0]


def test_grounding_reward_supported_hallucinated_and_empty():
    fn = REWARDS["grounding"]
    evidence = [
        "A1 [whole clip] pitch: high (245 Hz)",
        "F1 [0.4-1.8s] AU12 lip corner puller: strong",
        'transcript: "I got the job!"',
    ]
    cites_real = (
        '<answer>{"emotions": ["happy"], "rationale": [{"id": "F1", "cue": "lip corner puller strong"}, '
        '{"cue": "says I got the job"}]}</answer>'
    )
    cites_missing = (
        '<answer>{"emotions": ["happy"], "rationale": [{"id": "F9", "cue": "tears in the eyes"}]}</answer>'
    )
    half = (
        '<answer>{"emotions": ["happy"], "rationale": [{"id": "A1", "cue": "high pitch"}, '
        '{"id": "S4", "cue": "a birthday cake"}]}</answer>'
    )
    out = fn([cites_real, cites_missing, half, NO_RATIONALE, GOOD], evidence=[evidence] * 4 + [[]])
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(-1.0)
    assert out[2] == pytest.approx(0.0)  # one supported, one hallucinated at cost 1
    assert out[3] == 0.0  # cites nothing: the `empty` value
    assert out[4] is None  # no evidence: abstains
    cheap = fn([half], evidence=[evidence], hallucination_cost=0.0)
    assert cheap == [pytest.approx(0.5)]


def test_registry_binds_options_and_names_for_trl_logging():
    fn = get_reward("label_count", target=1)
    assert fn.__name__ == "label_count"
    assert fn([GOOD]) == [-0.25]
    with pytest.raises(KeyError):
        get_reward("nope")
    with pytest.raises(TypeError):
        get_reward("label_count", tagret=2)


def test_parse_reward_specs_forms_and_errors():
    specs = parse_reward_specs({"format": 0.5, "ew_f1": {"weight": 2, "levels": [1, 2]}, "length": None})
    assert [(s.name, s.weight) for s in specs] == [("format", 0.5), ("ew_f1", 2.0), ("length", 1.0)]
    assert specs[1].options == {"levels": [1, 2]}
    listed = parse_reward_specs([{"name": "accuracy", "weight": 1}], source="r.yaml")
    assert listed == [RewardSpec("accuracy", 1.0, {})]
    with pytest.raises(InputError, match=r"r\.yaml.*unknown reward"):
        parse_reward_specs({"ew": 1}, source="r.yaml")
    with pytest.raises(InputError, match="no option"):
        parse_reward_specs({"ew_f1": {"level": [1]}})
    with pytest.raises(InputError, match="not a number"):
        parse_reward_specs({"format": {"weight": "heavy"}})
    with pytest.raises(InputError, match="empty"):
        parse_reward_specs({})


def test_build_rewards_and_score_completions_weighted_total():
    specs = parse_reward_specs({"format": 0.5, "ew_f1": 1.0, "accuracy": 1.0})
    funcs, weights = build_rewards(specs)
    assert [f.__name__ for f in funcs] == ["format", "ew_f1", "accuracy"]
    assert weights == [0.5, 1.0, 1.0]
    assert reward_columns(specs) == {"labels", "label", "label_set"}
    scores = score_completions(
        [GOOD, NOTHING], specs, labels=[["happy", "relieved"], ["happy"]], label=["", ""], label_set=[[], []]
    )
    assert scores["accuracy"] == [None, None]
    # accuracy abstains, so the total is 0.5 * format + ew_f1.
    assert scores["total"][0] == pytest.approx(0.5 * 1.0 + 1.0)
    assert scores["total"][1] == pytest.approx(0.0)
    assert all(math.isfinite(t) for t in scores["total"])


def test_reward_column_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        REWARDS["ew_f1"]([GOOD, GOOD], labels=[["happy"]])
