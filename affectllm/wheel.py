"""The OV-MER / AffectGPT emotion wheels, compiled once into integer-id maps.

Three mapping stages take a free-form emotion word to a comparable unit (the official code's case1/2/3):

* **M1** — word form -> base word: the alphabetically first ``name`` of the format table rows listing the word
  among its forms (every base word is also its own form).
* **M2** — base word -> wheel word: the alphabetically first wheel word that the synonym table (8 merged
  runs) maps the M1 base word to.
* **Wk-L1 / Wk-L2** (k = 1..5) — the candidates are every wheel word reachable through *any* base word of the
  label; the alphabetically first candidate present in wheel k is mapped to its level-1 ancestor (L1), or to
  a level-2 word (L2: a level-3 word to its parent, a level-2 word to itself, a level-1 word to its
  alphabetically first level-2 child).

A word that stands in several places of one wheel takes the place visited last when the official code walks
the wheel as nested dictionaries (level-1 groups in first-seen order, level-2 groups in first-seen order within
each, level-3 words in row order) — "last row wins" only in that sense. A label that maps to nothing in a
variant is dropped from that variant.

Everything is compiled into one integer table: ``table[row, variant]`` is the id (an index into ``words``) of
the unit that vocabulary label ``row`` maps to in ``variant``, or -1. Scoring then needs no string work beyond
one dictionary look-up per distinct label.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from affectllm.resources import data_path

VARIANTS: tuple[str, ...] = (
    "M1",
    "M2",
    "W1-L1",
    "W1-L2",
    "W2-L1",
    "W2-L2",
    "W3-L1",
    "W3-L2",
    "W4-L1",
    "W4-L2",
    "W5-L1",
    "W5-L2",
)
WHEEL_VARIANTS_L1: tuple[str, ...] = tuple(v for v in VARIANTS if v.endswith("-L1"))
WHEEL_VARIANTS_L2: tuple[str, ...] = tuple(v for v in VARIANTS if v.endswith("-L2"))
VERSIONS: tuple[str, ...] = ("2025", "2026")
DEFAULT_VERSION = "2025"  # the tables behind every published OV-MER / AffectGPT number
_WHEEL_NAMES = ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5")


def normalize_version(version: str | int) -> str:
    """``"2025"``/``2025`` -> ``"2025"``; ``ValueError`` naming the valid versions otherwise."""
    text = str(version).strip().lower().removeprefix("v")
    if text not in VERSIONS:
        raise ValueError(f"unknown emotion-wheel version {version!r}; choose one of {', '.join(VERSIONS)}")
    return text


def variant_index(variant: str) -> int:
    try:
        return VARIANTS.index(variant)
    except ValueError:
        raise ValueError(f"unknown variant {variant!r}; variants are {', '.join(VARIANTS)}") from None


@dataclass(frozen=True, eq=False)
class EmotionWheels:
    """The compiled maps of one table version. Build with :func:`load_emotion_wheels` (cached)."""

    version: str
    words: tuple[str, ...]  # id -> the word a label maps to (base word, wheel word or wheel category)
    row_labels: tuple[str, ...]  # row of ``table`` -> vocabulary label (sorted)
    label_rows: dict[str, int]  # vocabulary label -> row of ``table``
    table: np.ndarray  # int32 [len(label_rows) + 1, len(VARIANTS)]; the extra last row is all -1
    wheels: dict[str, list[tuple[str, str, str]]] = field(repr=False)
    # The same maps with ids numbered within each variant (0 .. len(variant_words[v]) - 1), so a variant with
    # at most 64 units fits a sample's set in one 64-bit mask.
    local_table: np.ndarray = field(repr=False)
    variant_words: tuple[tuple[str, ...], ...] = field(repr=False)

    @property
    def unknown_row(self) -> int:
        """The row every out-of-vocabulary label uses (maps to nothing in every variant)."""
        return len(self.label_rows)

    @property
    def vocabulary(self) -> list[str]:
        """Every label the tables know (word forms, base words and their synonyms), sorted."""
        return list(self.row_labels)

    def in_vocabulary(self, label: str) -> bool:
        """Whether ``label`` (after lower-casing and stripping) maps to anything at all."""
        return label.strip().lower() in self.label_rows

    def rows(self, labels: Iterable[str], normalized: bool = False) -> np.ndarray:
        """Table rows of ``labels``; unknown labels get ``unknown_row``.

        Labels are lower-cased and stripped first unless ``normalized`` says the caller already did.
        """
        get, unknown = self.label_rows.get, self.unknown_row
        if normalized:
            return np.array([get(label, unknown) for label in labels], dtype=np.intp)
        return np.array([get(label.strip().lower(), unknown) for label in labels], dtype=np.intp)

    def map_label(self, label: str, variant: str) -> str | None:
        """The unit ``label`` maps to in ``variant``, or ``None`` when it maps to nothing."""
        row = self.label_rows.get(label.strip().lower())
        if row is None:
            return None
        ident = int(self.table[row, variant_index(variant)])
        return self.words[ident] if ident >= 0 else None

    def map_labels(self, labels: Iterable[str], variant: str) -> list[str]:
        """``labels`` mapped through ``variant`` in order (duplicates kept); labels that map to nothing dropped."""
        column = self.table[self.rows(labels), variant_index(variant)]
        return [self.words[i] for i in column.tolist() if i >= 0]

    def map_ids(self, labels: Iterable[str], variant: str) -> frozenset[int]:
        """The set of ids (indices into ``words``) that ``labels`` map to in ``variant``."""
        column = self.table[self.rows(labels), variant_index(variant)]
        return frozenset(i for i in column.tolist() if i >= 0)


def _read_json(name: str) -> dict:
    path = data_path("ew", name)
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def _wheel_tree(rows: list[list[str]]) -> dict[str, dict[str, list[str]]]:
    """level1 -> level2 -> [level3 ...], built in the order the official reader builds it."""
    tree: dict[str, dict[str, list[str]]] = {}
    for level1, level2, level3 in rows:
        tree.setdefault(level1, {}).setdefault(level2, []).append(level3)
    return tree


def wheel_maps(rows: list[list[str]]) -> tuple[dict[str, str], dict[str, str]]:
    """(level-1 map, level-2 map) of one wheel: wheel word -> the category it counts as.

    Assignment order follows the official code so a word listed twice ends where the official code puts it.
    """
    tree = _wheel_tree(rows)
    level1_map: dict[str, str] = {}
    level2_map: dict[str, str] = {}
    for level1, children in tree.items():
        level1_map[level1] = level1
        level2_map[level1] = sorted(children)[0]
        for level2, leaves in children.items():
            level1_map[level2] = level1
            level2_map[level2] = level2
            for level3 in leaves:
                level1_map[level3] = level1
                level2_map[level3] = level2
    return level1_map, level2_map


def _compile(version: str) -> EmotionWheels:
    formats = _read_json(f"format_{version}.json")["rows"]
    synonyms: dict[str, list[str]] = _read_json("synonyms.json")["synonyms"]
    wheel_rows: dict[str, list[list[str]]] = _read_json("wheels.json")["wheels"]

    # Form -> base words. Every base word is also a form of itself.
    form_to_bases: dict[str, set[str]] = {}
    for name, forms in formats:
        for form in forms:
            form_to_bases.setdefault(form, set()).add(name)
        form_to_bases.setdefault(name, set()).add(name)

    # Per wheel and level: the map and its keys; the candidate search walks sorted candidates.
    variant_maps: list[dict[str, str]] = []
    for wheel in _WHEEL_NAMES:
        level1_map, level2_map = wheel_maps(wheel_rows[wheel])
        variant_maps += [level1_map, level2_map]

    words: dict[str, int] = {}

    def word_id(word: str | None) -> int:
        if word is None:
            return -1
        return words.setdefault(word, len(words))

    labels = sorted(form_to_bases)
    table = np.full((len(labels) + 1, len(VARIANTS)), -1, dtype=np.int32)
    empty: list[str] = []
    for row, label in enumerate(labels):
        bases = form_to_bases[label]
        base = min(bases)
        table[row, 0] = word_id(base)
        # A base word the synonym table lacks would crash the official code; here it maps to nothing.
        # (The shipped tables have none: tests/test_wheel.py checks it.)
        table[row, 1] = word_id(min(synonyms[base]) if base in synonyms else None)
        candidates = sorted({w for b in bases for w in synonyms.get(b, empty)})
        for k, mapping in enumerate(variant_maps, start=2):
            target = next((mapping[c] for c in candidates if c in mapping), None)
            table[row, k] = word_id(target)
    word_list = tuple(words)
    local_table = np.full_like(table, -1)
    variant_words = []
    for v in range(len(VARIANTS)):
        used, local_ids = np.unique(table[:, v][table[:, v] >= 0], return_inverse=True)
        local_table[:, v][table[:, v] >= 0] = local_ids
        variant_words.append(tuple(word_list[i] for i in used))
    return EmotionWheels(
        version=version,
        words=word_list,
        row_labels=tuple(labels),
        label_rows={label: row for row, label in enumerate(labels)},
        table=table,
        wheels={name: [tuple(r) for r in wheel_rows[name]] for name in _WHEEL_NAMES},
        local_table=local_table,
        variant_words=tuple(variant_words),
    )


@cache
def _load(version: str) -> EmotionWheels:
    return _compile(version)


def load_emotion_wheels(version: str | int = DEFAULT_VERSION) -> EmotionWheels:
    """The compiled maps of table version ``"2025"`` (published numbers) or ``"2026"``; built once per process."""
    return _load(normalize_version(version))
