"""The answer parser: the contract, and recovery from the ways small models break it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affectllm.parsing import match_label, parse_answer
from affectllm.prompting import format_answer
from affectllm.schema import Clip, Cue, Prediction

LABELS = ["neutral", "happy", "sad", "angry", "worried", "surprise"]


@pytest.fixture
def clip() -> Clip:
    return Clip(
        "c1",
        [
            Cue("acoustic", "pitch", 245.0, "Hz", "high", 0.4, 1.8),
            Cue("facial", "AU4 brow lowerer", 2.0, None, "C", 0.1, 2.5),
            Cue("facial", "AU24 lip pressor", 1.1, None, "B", 1.0, 2.0),
            Cue("linguistic", "phrase", "Nobody ever calls me back!", None, None, 2.3, 3.9),
        ],
    )


def test_contract_is_format_ok(clip: Clip) -> None:
    text = (
        '<think>Loud and frowning.</think>\n<answer>{"emotions": ["angry", "frustrated"], "rationale": '
        '[{"id": "F1", "cue": "lowered brows", "modality": "facial", "time": "0.1-2.5s"}, {"id": "L1", "cue": '
        '"complaint"}], "confidence": 0.9}</answer>'
    )
    p = parse_answer(text, clip=clip)
    assert p.format_ok and p.errors == []
    assert p.emotions == ["angry", "frustrated"]
    assert [(r.cue_id, r.modality, r.time) for r in p.rationale] == [
        ("F1", "facial", "0.1-2.5s"),
        ("L1", "linguistic", "2.3-3.9s"),  # filled in from the clip's cue
    ]
    assert p.confidence == 0.9 and p.answer == "Loud and frowning." and p.raw == text


def test_stop_string_cut_answer_is_still_ok(clip: Clip) -> None:
    full = format_answer(["sad"], [{"id": "A1", "cue": "low"}], clip=clip)
    p = parse_answer(full[: -len("</answer>")], clip=clip)
    assert p.format_ok and p.emotions == ["sad"]


def test_token_limit_cut_is_repaired_not_ok(clip: Clip) -> None:
    p = parse_answer(
        '<answer>{"emotions": ["sad", "lonely"], "rationale": [{"id": "F2", "cue": "pressed li', clip=clip
    )
    assert p.emotions == ["sad", "lonely"] and not p.format_ok
    assert p.rationale[0].cue_id == "F2" and p.rationale[0].cue == "pressed li"
    assert "answer block not closed" in p.errors


@pytest.mark.parametrize(
    "text, emotions",
    [
        # trailing commas, single quotes, Python literals, unquoted keys
        (
            "<answer>{'emotions': ['Happy', 'relieved',], 'rationale': [], 'confidence': None,}</answer>",
            ["happy", "relieved"],
        ),
        ('<answer>{emotions: ["calm"], rationale: []}</answer>', ["calm"]),
        # markdown fences, with and without tags
        ('```json\n{"emotions": ["nervous"], "rationale": []}\n```', ["nervous"]),
        ('<answer>\n```json\n{"emotions": ["nervous"]}\n```\n</answer>', ["nervous"]),
        # plain "Emotions:" lines and lists
        ("Emotions: nervous, anxious and hopeful", ["nervous", "anxious", "hopeful"]),
        ("The speaker seems tense.\nEmotion labels: Angry; annoyed.", ["angry", "annoyed"]),
        ("Emotions:\n1. Nervous\n2) hopeful - smiling at the end\n\nMore text.", ["nervous", "hopeful"]),
        ("**Emotions**:\n- sad\n- tired\n", ["sad", "tired"]),
        ("<answer>calm, neutral</answer>", ["calm", "neutral"]),
        ('<answer>["happy", "excited"]</answer>', ["happy", "excited"]),
        # degenerate repetition
        ('<answer>{"emotions": ["happy happy happy", "happy", "HAPPY", "joy"]}</answer>', ["happy", "joy"]),
        # emotions as a string or as objects
        ('<answer>{"emotions": "sad, lonely"}</answer>', ["sad", "lonely"]),
        ('<answer>{"emotions": [{"emotion": "fear", "score": 0.4}]}</answer>', ["fear"]),
    ],
)
def test_malformed_answers_are_recovered(text: str, emotions: list[str]) -> None:
    p = parse_answer(text)
    assert p.emotions == emotions, p.errors
    assert not p.format_ok


def test_first_answer_block_wins_over_invented_turns() -> None:
    text = (
        '<answer>{"emotions": ["happy"], "rationale": []}</answer><end_of_turn>\n<start_of_turn>user\n'
        'Evidence...<answer>{"emotions": ["sad"]}</answer>'
    )
    p = parse_answer(text)
    assert p.emotions == ["happy"] and p.format_ok
    assert "sad" not in p.answer


def test_unknown_and_prose_citations(clip: Clip) -> None:
    p = parse_answer(
        '<answer>{"emotions": ["angry"], "rationale": [{"id": "F9", "cue": "x"}]}</answer>', clip=clip
    )
    assert p.rationale[0].cue_id is None and "cited unknown cue id 'F9'" in p.errors
    prose = "She frowns [F1] and presses her lips (F2); her pitch is high, see A1.\nEmotions: angry"
    p = parse_answer(prose, clip=clip)
    assert [r.cue_id for r in p.rationale] == ["F1", "F2", "A1"]
    assert p.rationale[0].modality == "facial" and p.emotions == ["angry"]
    assert p.answer.startswith("She frowns")


def test_closed_set_labels() -> None:
    assert parse_answer('<answer>{"emotions": ["anger"]}</answer>', labels=LABELS).emotions == ["angry"]
    p = parse_answer('<answer>{"emotions": ["Joy"]}</answer>', labels=LABELS)
    assert p.emotions == ["happy"] and p.format_ok
    # A label named in free text.
    p = parse_answer("I would say the speaker is mostly worried about it.", labels=LABELS)
    assert p.emotions == ["worried"] and "label recovered from free text" in p.errors
    # Several labels: the first is kept.
    p = parse_answer('<answer>{"emotions": ["sad", "angry"]}</answer>', labels=LABELS)
    assert p.emotions == ["sad"] and not p.format_ok
    p = parse_answer('<answer>{"emotions": ["bored"]}</answer>', labels=LABELS)
    assert p.emotions == [] and "'bored' is not in the label set" in p.errors


def test_match_label_stems_and_negations() -> None:
    assert match_label("Surprised", LABELS) == "surprise"
    assert match_label("worry", LABELS) == "worried"
    assert match_label("sadness", LABELS) == "sad"
    assert match_label("scared", ["neutral", "fear"]) == "fear"
    assert match_label("fearless", ["neutral", "fear"]) is None
    assert match_label("anguish", LABELS) is None
    assert match_label("", LABELS) is None


def test_confidence_forms() -> None:
    assert parse_answer('<answer>{"emotions": ["x"], "confidence": "85%"}</answer>').confidence == 0.85
    assert parse_answer('<answer>{"emotions": ["x"], "confidence": 70}</answer>').confidence == 0.7
    p = parse_answer('<answer>{"emotions": ["x"], "confidence": -3}</answer>')
    assert p.confidence is None and any("out of range" in e for e in p.errors)


def test_nothing_recoverable() -> None:
    for text in ("", "   ", "I cannot tell.", "happy happy happy happy", None, b"\xff\xfe", 12):
        p = parse_answer(text)
        assert isinstance(p, Prediction) and not p.format_ok
        assert "no emotions found" in p.errors or p.emotions


def test_bare_schema_constrained_object_is_ok() -> None:
    p = parse_answer('{"emotions": ["calm"], "rationale": [{"id": "A1", "cue": "steady"}]}')
    assert p.format_ok and p.errors == [] and p.rationale[0].cue_id == "A1"


def test_very_long_output_is_bounded() -> None:
    p = parse_answer("<answer>{" + '"emotions": ["a"], ' * 50_000 + "}")
    assert isinstance(p, Prediction)
    assert any("truncated" in e for e in p.errors)


# ---------------------------------------------------------------------------------------- property tests

_fragments = st.sampled_from(
    [
        "<answer>",
        "</answer>",
        "<think>",
        "</think>",
        "{",
        "}",
        "[",
        "]",
        '"emotions"',
        "'emotions'",
        ":",
        ",",
        '"',
        "'",
        "F1",
        "[A2]",
        "Emotions:",
        "\n",
        "1. ",
        "- ",
        "```json",
        "```",
        "happy",
        "anger",
        "confidence",
        "0.5",
        "%",
        "\\",
        "null",
        "True",
        "<end_of_turn>",
        "rationale",
        '"id"',
    ]
)
_model_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(_fragments, st.text(max_size=8)), max_size=60).map("".join),
)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_model_text, with_clip=st.booleans(), with_labels=st.booleans())
def test_parser_never_raises(text: str, with_clip: bool, with_labels: bool) -> None:
    clip = Clip("p", [Cue("facial", "AU12", 1.0), Cue("acoustic", "pitch", 2.0)]) if with_clip else None
    p = parse_answer(text, clip=clip, labels=LABELS if with_labels else None)
    assert isinstance(p, Prediction)
    assert p.raw == text
    assert all(isinstance(e, str) and e for e in p.emotions)
    assert len(p.emotions) <= (1 if with_labels else 12)
    if with_labels:
        assert set(p.emotions) <= set(LABELS)
    if with_clip:
        assert all(r.cue_id in (None, "F1", "A1") for r in p.rationale)
    assert p.confidence is None or 0.0 <= p.confidence <= 1.0
    assert not any(e.startswith("parser error") for e in p.errors), p.errors
    p.to_dict()  # serializable


@settings(max_examples=150, deadline=None, database=None)
@given(
    emotions=st.lists(
        st.from_regex(r"[a-z]{3,10}( [a-z]{3,8})?", fullmatch=True).filter(
            lambda e: len(set(e.split())) == len(e.split())
        ),
        min_size=1,
        max_size=5,
        unique=True,
    ),
    cue_text=st.text(max_size=40),
    confidence=st.one_of(st.none(), st.floats(0, 1)),
)
def test_format_answer_parse_round_trip(emotions: list[str], cue_text: str, confidence: float | None) -> None:
    clip = Clip("p", [Cue("facial", "AU12", 1.0, start=0.0, end=1.0)])
    text = format_answer(emotions, [{"id": "F1", "cue": cue_text}], confidence=confidence, clip=clip)
    p = parse_answer(text, clip=clip)
    assert p.format_ok, p.errors
    assert p.emotions == emotions
    assert p.rationale[0].cue_id == "F1" and p.rationale[0].time == "0.0-1.0s"
    if confidence is not None:
        assert p.confidence == pytest.approx(round(confidence, 3), abs=1e-3)
