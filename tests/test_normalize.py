"""The two named label policies: PARSE snaps a model's word onto the label set (synonyms included), SCORE
forgives only spelling and inflections of the same word."""

from __future__ import annotations

from affectllm.metrics.closed import closed_set_scores
from affectllm.normalize import PARSE, POLICIES, SCORE, clean_label, score_label, snap_label
from affectllm.parsing import parse_answer

MELD = ["neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"]
SIX = ["happy", "sad", "angry", "neutral", "worried", "surprise"]


def test_joy_snaps_to_happy_when_parsing_but_not_when_scoring() -> None:
    assert snap_label("joy", SIX) == "happy"
    assert score_label("joy", SIX) == "joy"  # a different word: scored as outside the classes
    assert POLICIES[PARSE] is snap_label and POLICIES[SCORE] is score_label


def test_both_policies_share_the_spelling_rule() -> None:
    assert clean_label('  "Happy." ') == "happy"
    assert score_label(' "Happiness" ', SIX) == "happy"  # an inflection of one class
    assert snap_label("Happiness", SIX) == "happy"


def test_parser_and_scorer_apply_their_policies_end_to_end() -> None:
    parsed = parse_answer('<answer>{"emotions": ["joy"]}</answer>', labels=SIX)
    assert parsed.emotions == ["happy"]
    scores = closed_set_scores(predictions=["joy"], references=["happy"], labels=SIX)
    assert scores["accuracy"] == 0.0
    # ...and a MELD class named "joy" is matched exactly by both.
    assert snap_label("joy", MELD) == "joy" and score_label("Joy", MELD) == "joy"
