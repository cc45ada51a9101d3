"""Open-vocabulary emotion scores with the OV-MER / AffectGPT emotion-wheel (EW) metric, exactly as the official
code computes them, but as set operations over integer ids.

Per variant (``affectllm.wheel.VARIANTS``) and sample, gold and predicted labels are mapped to ids and made
sets; samples whose gold set is empty are skipped; precision = |G ∩ P| / |P| and recall = |G ∩ P| / |G|, both 0
when P is empty. Dataset P and R are the means over the scored samples and F = 2PR / (P + R) (0 when P + R = 0,
where the official code divides by zero). ``l1`` / ``l2`` are the means of F, P and R over the five wheels at
that level (``l1.f`` is the number AffectGPT papers report); ``m_avg`` is the mean F of all 12 variants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain
from typing import Any

import numpy as np

from affectllm.labels import align_names, parse_label_list
from affectllm.wheel import (
    DEFAULT_VERSION,
    VARIANTS,
    WHEEL_VARIANTS_L1,
    WHEEL_VARIANTS_L2,
    EmotionWheels,
    load_emotion_wheels,
    variant_index,
)

# The constant-prediction floor tries the k most frequent gold labels for k = 1..FLOOR_MAX_K.
FLOOR_MAX_K = 10
_EXAMPLES = 5  # names quoted in a warning before "..."

LabelLists = Mapping[str, "Sequence[str] | str | None"]


_DROP = -2  # memo marker: the label is empty after stripping, so it is no label at all


class _RowMemo(dict):
    """Raw label string -> table row, filled on first sight: repeated labels cost one dictionary hit."""

    def __init__(self, wheels: EmotionWheels) -> None:
        super().__init__()
        self._get = wheels.label_rows.get
        self._unknown = wheels.unknown_row

    def __missing__(self, label: Any) -> int:
        if not isinstance(label, str):
            raise ValueError(f"label lists must hold strings; found {label!r}")
        normalized = label.strip().lower()
        row = self._get(normalized, self._unknown) if normalized else _DROP
        self[label] = row
        return row


def _label_rows(values: Sequence[Any], memo: _RowMemo) -> tuple[np.ndarray, np.ndarray]:
    """(table row, sample index) of every label of every sample; strings parsed by the official rule."""
    if set(map(type, values)) - {list}:
        values = [value if type(value) is list else parse_label_list(value) for value in values]
    flat = list(chain.from_iterable(values))
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    try:
        rows = np.fromiter(map(memo.__getitem__, flat), dtype=np.intp, count=len(flat))
    except TypeError:  # an unhashable item, e.g. a nested list
        bad = next(x for x in flat if not isinstance(x, str))
        raise ValueError(f"label lists must hold strings; found {bad!r}") from None
    samples = np.repeat(np.arange(len(values), dtype=np.int64), lengths)
    keep = rows != _DROP
    if not keep.all():
        rows, samples = rows[keep], samples[keep]
    return rows, samples


def _popcount(masks: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(masks).astype(np.int64)
    as_bytes = masks.astype(np.uint64).view(np.uint8).reshape(-1, 8)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=1, dtype=np.int64)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
_MASK_BITS = 64


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _prf(common: np.ndarray, pred_sizes: np.ndarray, gold_sizes: np.ndarray) -> dict[str, float]:
    """Dataset P, R, F and n from per-sample |G ∩ P|, |P|, |G| (samples with empty G skipped)."""
    scored = gold_sizes > 0
    common, pred_sizes, gold_sizes = common[scored], pred_sizes[scored], gold_sizes[scored]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_sizes > 0, common / pred_sizes, 0.0)
    recall = common / gold_sizes
    if precision.size == 0:
        return {"f": 0.0, "p": 0.0, "r": 0.0, "n": 0}
    # np.mean over the samples in order: the same summation as the official np.mean over its lists.
    p, r = float(np.mean(precision)), float(np.mean(recall))
    return {"f": _f(p, r), "p": p, "r": r, "n": int(precision.size)}


def _summarise(variants: dict[str, dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"m_avg": float(np.mean([variants[v]["f"] for v in VARIANTS]))}
    for key, names in (("l1", WHEEL_VARIANTS_L1), ("l2", WHEEL_VARIANTS_L2)):
        out[key] = {m: float(np.mean([variants[v][m] for v in names])) for m in ("f", "p", "r")}
    return out


@dataclass(frozen=True)
class _Layout:
    """How each variant's per-sample sets are stored, fixed per table version.

    A variant with at most 64 units (all ten wheel variants) is a bit field of a uint64 mask per sample.
    Fields are packed into as few 64-bit words as fit (a wheel's level-1 and level-2 fields share one word), and
    ``words[w][row]`` holds every field's bits of label ``row``: one gather and one segmented OR per word build
    all samples' sets. M1 and M2 (hundreds of units) keep sorted unique keys ``sample * width + unit``.
    """

    fields: dict[int, tuple[int, int, int]]  # variant -> (word, bit offset, width)
    key_variants: tuple[int, ...]
    words: tuple[np.ndarray, ...]  # uint64 [rows + 1] each
    key_columns: dict[int, np.ndarray]  # variant -> int64 [rows + 1] local ids (-1: maps to nothing)
    widths: tuple[int, ...]


@cache
def _layout(version: str) -> _Layout:
    wheels = load_emotion_wheels(version)
    widths = tuple(len(words) for words in wheels.variant_words)
    fields: dict[int, tuple[int, int, int]] = {}
    used: list[int] = []  # bits taken in each word
    for v, width in enumerate(widths):
        if width > _MASK_BITS:
            continue
        word = next((w for w, taken in enumerate(used) if taken + width <= _MASK_BITS), None)
        if word is None:
            word = len(used)
            used.append(0)
        fields[v] = (word, used[word], width)
        used[word] += width
    words = [np.zeros(wheels.table.shape[0], dtype=np.uint64) for _ in used]
    for v, (word, offset, _) in fields.items():
        local = wheels.local_table[:, v].astype(np.int64)
        shift = np.maximum(local, 0).astype(np.uint64) + np.uint64(offset)
        words[word] |= np.where(local >= 0, np.left_shift(np.uint64(1), shift), np.uint64(0))
    key_variants = tuple(v for v in range(len(VARIANTS)) if v not in fields)
    return _Layout(
        fields=fields,
        key_variants=key_variants,
        words=tuple(words),
        key_columns={v: wheels.local_table[:, v].astype(np.int64) for v in key_variants},
        widths=widths,
    )


class _Sets:
    """Every sample's mapped label set in every variant, as integer structures (see ``_Layout``)."""

    def __init__(self, values: Sequence[Any], wheels: EmotionWheels, memo: _RowMemo) -> None:
        layout = _layout(wheels.version)
        self.n = len(values)
        self.widths = layout.widths
        self.rows, self.samples = _label_rows(values, memo)
        lengths = np.bincount(self.samples, minlength=self.n)
        nonempty = lengths > 0
        starts = (np.cumsum(lengths) - lengths)[nonempty]
        self.sizes: dict[int, np.ndarray] = {}

        word_masks = []
        for bits in layout.words:
            masks = np.zeros(self.n, dtype=np.uint64)
            if self.rows.size:
                # Samples' labels are contiguous, so a segmented OR over them is each sample's union.
                masks[nonempty] = np.bitwise_or.reduceat(bits[self.rows], starts)
            word_masks.append(masks)
        self.masks: dict[int, np.ndarray] = {}
        for v, (word, offset, width) in layout.fields.items():
            field = (np.uint64(1) << np.uint64(width)) - np.uint64(1) if width < 64 else ~np.uint64(0)
            self.masks[v] = (word_masks[word] >> np.uint64(offset)) & field
            self.sizes[v] = _popcount(self.masks[v])

        self.keys: dict[int, np.ndarray] = {}
        for v in layout.key_variants:
            ids = layout.key_columns[v][self.rows]
            keep = ids >= 0
            keys = np.sort(self.samples[keep] * self.widths[v] + ids[keep])
            if keys.size:
                keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
            self.keys[v] = keys
            self.sizes[v] = np.bincount(keys // self.widths[v], minlength=self.n)

    def common(self, other: _Sets, v: int) -> np.ndarray:
        """Per-sample |self ∩ other| in variant ``v``."""
        if v in self.masks:
            return _popcount(self.masks[v] & other.masks[v])
        mine, theirs = self.keys[v], other.keys[v]
        at = np.searchsorted(mine, theirs)
        hit = at < mine.size
        hit[hit] = mine[at[hit]] == theirs[hit]
        return np.bincount(theirs[hit] // self.widths[v], minlength=self.n)

    def common_with_constant(self, v: int, constant: set[int]) -> np.ndarray:
        """Per-sample |self ∩ constant| where ``constant`` holds local ids of variant ``v``."""
        if v in self.masks:
            mask = np.uint64(sum(1 << i for i in constant))
            return _popcount(self.masks[v] & mask)
        keys = self.keys[v]
        hit = np.isin(keys % self.widths[v], np.fromiter(constant, dtype=np.int64, count=len(constant)))
        return np.bincount(keys[hit] // self.widths[v], minlength=self.n)


def _score_sets(gold: _Sets, pred: _Sets) -> dict[str, dict[str, float]]:
    return {
        variant: _prf(gold.common(pred, v), pred.sizes[v], gold.sizes[v])
        for v, variant in enumerate(VARIANTS)
    }


def _floor(gold: _Sets, wheels: EmotionWheels) -> dict[str, Any] | None:
    """The best score any constant prediction of the k most frequent gold labels reaches (k = 1..FLOOR_MAX_K).

    Labels are ranked by how many samples list them (ties alphabetically), out-of-vocabulary ones skipped, and
    k is the one with the highest ``l1.f``. Because k is picked on the same gold set, this is a generous floor:
    a model that does not beat it is doing no better than hedging with the commonest answers.
    """
    known = gold.rows != wheels.unknown_row
    pairs = np.sort(gold.samples[known] * (wheels.unknown_row + 1) + gold.rows[known])
    pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))] if pairs.size else pairs
    counts = np.bincount(pairs % (wheels.unknown_row + 1), minlength=wheels.unknown_row)
    if not counts.any():
        return None
    # Rows are in alphabetical order of their labels, so a stable sort on -count breaks ties alphabetically.
    ranked = [int(r) for r in np.argsort(-counts, kind="stable")[:FLOOR_MAX_K] if counts[r] > 0]
    best: dict[str, Any] | None = None
    constant: list[set[int]] = [set() for _ in VARIANTS]
    for k, row in enumerate(ranked, start=1):
        for v in range(len(VARIANTS)):
            ident = int(wheels.local_table[row, v])
            if ident >= 0:
                constant[v].add(ident)
        variants = {
            variant: _prf(
                gold.common_with_constant(v, constant[v]), np.full(gold.n, len(constant[v])), gold.sizes[v]
            )
            for v, variant in enumerate(VARIANTS)
        }
        summary = _summarise(variants)
        if best is None or summary["l1"]["f"] > best["l1"]["f"]:
            best = {"k": k, "labels": [wheels.row_labels[r] for r in ranked[:k]], **summary}
    return best


def score_ov(
    *,
    references: LabelLists,
    predictions: LabelLists,
    version: str | int = DEFAULT_VERSION,
    floor: bool = True,
) -> dict[str, Any]:
    """Score open-vocabulary predictions against gold label lists with the emotion-wheel metric.

    ``references`` (gold) and ``predictions`` map sample names to label lists (lists of strings, or strings parsed by the official
    rule). Every gold name is scored; a gold name without a prediction counts as an empty prediction and a
    prediction for a name not in ``gold`` is ignored — both are reported in ``warnings`` and listed in
    ``missing_predictions`` / ``unknown_predictions``.

    Returns ``{"version", "variants": {V: {"f","p","r","n"}}, "m_avg", "l1": {"f","p","r"}, "l2": {...},
    "n_gold", "n_pred", "mean_pred_labels", "oov_rate", "floor", "missing_predictions", "unknown_predictions",
    "warnings"}``; scores are fractions in [0, 1]. ``floor`` (None when ``floor=False`` or no gold label is
    in the vocabulary) holds ``{"k", "labels", "m_avg", "l1", "l2"}`` of the best constant prediction.
    """
    gold, pred = references, predictions
    wheels = load_emotion_wheels(version)
    names = list(gold)
    if gold.keys() == pred.keys():  # the usual case, checked as one set comparison
        missing, unknown = [], []
        pred_values = list(map(pred.__getitem__, names))
    else:
        missing, unknown = align_names(gold, pred)  # the one name policy (affectllm.labels)
        pred_values = [pred.get(name, []) for name in names]
    memo = _RowMemo(wheels)
    gold_sets = _Sets(list(gold.values()), wheels, memo)
    pred_sets = _Sets(pred_values, wheels, memo)
    variants = _score_sets(gold_sets, pred_sets)
    result: dict[str, Any] = {"version": wheels.version, "variants": variants, **_summarise(variants)}

    n_pred_labels = int(pred_sets.rows.size)
    oov = int(np.count_nonzero(pred_sets.rows == wheels.unknown_row))
    warnings: list[str] = []
    if missing:
        warnings.append(
            f"{len(missing)} gold name(s) have no prediction, scored as empty: {_examples(missing)}"
        )
    if unknown:
        warnings.append(
            f"{len(unknown)} prediction(s) for names not in the gold set, ignored: {_examples(unknown)}"
        )
    empty_gold = [v for v in VARIANTS if variants[v]["n"] == 0]
    if empty_gold:
        warnings.append(f"no gold labels map to anything in {', '.join(empty_gold)}; those scores are 0")
    result.update(
        n_gold=len(names),
        n_pred=len(pred) - len(unknown),
        mean_pred_labels=n_pred_labels / len(names) if names else 0.0,
        oov_rate=oov / n_pred_labels if n_pred_labels else None,
        floor=_floor(gold_sets, wheels) if floor else None,
        missing_predictions=missing,
        unknown_predictions=unknown,
        warnings=warnings,
    )
    return result


def _examples(names: list[str]) -> str:
    shown = ", ".join(names[:_EXAMPLES])
    return shown + (", ..." if len(names) > _EXAMPLES else "")


def sample_ew_f1(
    *,
    references: Sequence[str] | str,
    predictions: Sequence[str] | str,
    levels: Sequence[int] = (1,),
    version: str | int = DEFAULT_VERSION,
) -> float | None:
    """One sample's EW F1, averaged over the five wheels at each level in ``levels`` (the GRPO reward).

    Per wheel and level: F = 2PR / (P + R) of the mapped sets (0 when they share nothing); a wheel/level where
    the gold maps to nothing is left out of the mean. ``None`` when the gold maps to nothing anywhere.
    """
    gold, pred = references, predictions
    wheels = load_emotion_wheels(version)
    names = {1: WHEEL_VARIANTS_L1, 2: WHEEL_VARIANTS_L2}
    try:
        columns = [variant_index(v) for level in levels for v in names[int(level)]]
    except KeyError:
        raise ValueError(f"levels must be drawn from (1, 2); got {tuple(levels)}") from None
    gold_ids = wheels.table[wheels.rows(parse_label_list(gold), normalized=True)][:, columns]
    pred_ids = wheels.table[wheels.rows(parse_label_list(pred), normalized=True)][:, columns]
    scores = []
    for j in range(len(columns)):
        g = set(gold_ids[:, j].tolist()) - {-1}
        if not g:
            continue
        p = set(pred_ids[:, j].tolist()) - {-1}
        common = len(g & p)
        scores.append(2 * common / (len(g) + len(p)) if common else 0.0)  # = 2PR/(P+R)
    return sum(scores) / len(scores) if scores else None


def ew_metric(
    *, predictions: Any, references: Any, version: str | int = DEFAULT_VERSION, floor: bool = True
) -> dict[str, Any]:
    """The registry's ``ew``: :func:`score_ov` where ``predictions``/``references`` may also be aligned
    sequences of label lists (a test set without names)."""
    if not isinstance(references, Mapping):
        references = {str(i): labels for i, labels in enumerate(references)}
        predictions = {str(i): labels for i, labels in enumerate(predictions)}
    return score_ov(predictions=predictions, references=references, version=version, floor=floor)
