"""Emotion-label normalisation: one cleaning rule and two named policies for mapping a word onto a label set.

Why two policies? They answer different questions.

- :data:`PARSE` (:func:`snap_label`) — *what did the model mean?* The parser reads a generative model's free
  answer to a closed-set question ("joy", "Scared!", "happiness") and must turn it into one of the task's
  labels for the answer to be usable at all: chat shows it, ``eval run`` records it. So it snaps by exact
  word, then by a shared stem (anger/angry), then by a small, unambiguous near-synonym group
  (:data:`SYNONYM_GROUPS`: "joy" → "happy", "scared" → "fear"). Every snap that is not exact leaves a note in
  ``Prediction.errors``, and a task can turn snapping off (``parser: {labels: false}``), so what the parser did
  is visible in the record the scorer then reads.
- :data:`SCORE` (:func:`score_label`) — *is this label the gold label?* Closed-set scoring compares two label
  files as written (``eval closed``, the closed metrics). It forgives only spelling — case, whitespace,
  surrounding punctuation — and inflections of the *same* word (:data:`WORD_FORM_GROUPS`: anger/angry,
  happiness/happy), never a different emotion: a file that says "joy" where the classes are "happy" is scored
  wrong, because mapping synonyms at scoring time would change published accuracy numbers and hide a model
  that ignores the label set.

:func:`clean_label` is the spelling rule both policies start from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_SPACES = re.compile(r"\s+")
# Quotes, brackets and sentence punctuation that models and spreadsheets leave around a label.
_EDGE_PUNCT = "\"'`[](){}<>.,;:!?*"

#: Word-form variants folded onto each other by the SCORE policy. Only inflections of the *same* word (noun ↔
#: adjective ↔ participle), never different emotions: "joy" is not folded onto "happy", nor "fear" onto
#: "worried". A label is only rewritten when it is not in the label order and exactly one of its forms is.
WORD_FORM_GROUPS: tuple[frozenset[str], ...] = tuple(
    frozenset(group)
    for group in (
        {"anger", "angry", "angered"},
        {"happy", "happiness"},
        {"sad", "sadness"},
        {"surprise", "surprised"},
        {"fear", "fearful", "feared"},
        {"disgust", "disgusted"},
        {"neutral", "neutrality"},
        {"worried", "worry", "worries"},
        {"frustrated", "frustration"},
        {"excited", "excitement"},
        {"contempt", "contemptuous"},
        {"calm", "calmness"},
        {"anxious", "anxiety"},
        {"joy", "joyful"},
    )
)
_FORMS: dict[str, frozenset[str]] = {word: group for group in WORD_FORM_GROUPS for word in group}

#: Near-synonyms used by the PARSE policy only when a predicted word names no label of a closed set directly
#: or by stem, so that "joy" lands on "happy" and "scared" on "fear"; groups are small and unambiguous.
SYNONYM_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"happy", "happiness", "joy", "joyful", "glad", "cheerful", "delighted", "pleased", "content"}),
    frozenset({"angry", "anger", "mad", "furious", "irritated", "enraged", "rage"}),
    frozenset(
        {"sad", "sadness", "unhappy", "sorrow", "sorrowful", "depressed", "grief", "grieving", "upset"}
    ),
    frozenset({"fear", "fearful", "afraid", "scared", "frightened", "terrified"}),
    frozenset({"worried", "worry", "anxious", "anxiety", "nervous", "concerned", "uneasy"}),
    frozenset({"surprise", "surprised", "shocked", "astonished", "amazed", "startled"}),
    frozenset({"disgust", "disgusted", "revulsion", "repulsed", "grossed out"}),
    frozenset({"neutral", "calm", "indifferent", "no emotion", "none"}),
)


def clean_label(label: str) -> str:
    """Case- and whitespace-insensitive form of a label: ``"  Happy. "`` → ``"happy"``."""
    return _SPACES.sub(" ", str(label).strip().strip(_EDGE_PUNCT).strip()).lower()


def score_label(label: str, label_order: Sequence[str], fold_word_forms: bool = True) -> str:
    """The SCORE policy: ``label`` cleaned, and folded onto the one word form in ``label_order`` when it is
    not itself there (``fold_word_forms=False``: cleaning only). Never maps to a different word."""
    norm = clean_label(label)
    if norm in label_order or not fold_word_forms:
        return norm
    matches = [form for form in _FORMS.get(norm, ()) if form in label_order]
    return matches[0] if len(matches) == 1 else norm


def _prefix_len(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _stem_match(w: str, f: str) -> int:
    """Length of the shared stem of two words when they are forms of one word (anger/angry, worry/worried,
    sad/sadness), else 0. "-less" forms negate the stem and never match."""
    if w == f:
        return len(w) + 1
    if w.endswith("less") != f.endswith("less"):
        return 0
    p = _prefix_len(w, f)
    if p >= 3 and p == min(len(w), len(f)):
        return p
    if p >= 4 or (p == 3 and max(len(w), len(f)) <= 5):
        return p
    return 0


def snap_label(word: str, labels: Sequence[str]) -> str | None:
    """The PARSE policy: the closed-set label a predicted word names — exact (case-insensitive), then a shared
    stem (anger/angry, happiness/happy, surprised/surprise, worry/worried), then a near-synonym group
    (:data:`SYNONYM_GROUPS`); None when it names none."""
    w = word.casefold().strip()
    if not w:
        return None
    best, best_len = None, 0
    for lab in labels:
        score = _stem_match(w, lab.casefold().strip())
        if score > best_len:
            best, best_len = lab, score
    if best is not None:
        return best
    for group in SYNONYM_GROUPS:
        if not any(_stem_match(w, member) for member in group):
            continue
        for lab in labels:
            if any(_stem_match(lab.casefold().strip(), member) for member in group):
                return lab
    return None


PARSE = "parse"
SCORE = "score"
#: The named policies: parse a model's answer onto a label set, or compare labels for scoring.
POLICIES: dict[str, Callable[..., str | None]] = {PARSE: snap_label, SCORE: score_label}

__all__ = [
    "PARSE",
    "POLICIES",
    "SCORE",
    "SYNONYM_GROUPS",
    "WORD_FORM_GROUPS",
    "clean_label",
    "score_label",
    "snap_label",
]
