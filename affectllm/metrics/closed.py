"""Closed-set emotion metrics (accuracy, weighted/macro F1, UAR, confusion matrix) and the MER-UniBench
hit rate of open-vocabulary predictions against one-hot gold labels.

Everything is plain numpy over integer class ids; scikit-learn is only used by the tests, to check the numbers.

Conventions (the same as scikit-learn with ``labels=`` set to the label order, see ``closed_set_scores``):

- The label order is ``labels`` when given, else the sorted set of gold labels. Gold labels must be in it.
- A prediction outside the label order is simply wrong: it lowers the gold class's recall and no class's
  precision, and the confusion matrix shows it in a trailing ``(other)`` column.
- Macro F1 and UAR average over every class of the label order, as scikit-learn's ``f1_score`` /
  ``recall_score`` with ``labels=`` and ``average="macro"`` do: a class of the given set with no gold sample
  scores 0 (scikit-learn's ``zero_division=0``), so a 5-sample run cannot look better by missing classes.
  Without ``labels`` the order is the gold classes, each present. The result says which set was used
  (``label_set``: ``"given"`` or ``"gold"``). Weighted F1 weights each class's F1 by its gold support.
  Per-class precision with no predictions of the class is 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from affectllm.labels import align_names
from affectllm.normalize import clean_label, score_label

OTHER = "(other)"

# The SCORE policy (affectllm.normalize): spelling and inflections of the same word only, never a synonym —
# "joy" is not "happy" here, although the parser (the PARSE policy) snaps it there.
normalize_label = clean_label
canonical_label = score_label


def closed_set_scores(
    *,
    references: Sequence[str],
    predictions: Sequence[str | None],
    labels: Sequence[str] | None = None,
    fold_word_forms: bool = True,
) -> dict[str, Any]:
    """Accuracy, weighted F1, macro F1, UAR, per-class P/R/F1 and the confusion matrix.

    ``references`` (gold) and ``predictions`` are aligned single labels (``None`` in ``pred``: no prediction, scored wrong); labels
    are normalised (case, whitespace, surrounding punctuation) and, with ``fold_word_forms``, folded between word forms (``"anger"`` → ``"angry"`` when only
    ``"angry"`` is a class; see ``affectllm.normalize.WORD_FORM_GROUPS``, the SCORE policy). Raises ``ValueError`` on length mismatch, empty input,
    or a gold label outside ``labels``. Pass the task's label set as ``labels`` to average macro F1 and UAR over
    it (``label_set`` in the result is then ``"given"``).

    The confusion matrix has one row per class of ``label_order`` (gold) and one column per class, plus a last
    ``(other)`` column when some prediction is outside the label order.
    """
    gold, pred = references, predictions
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} labels but pred has {len(pred)}")
    if not gold:
        raise ValueError("no samples to score")
    if labels is not None:
        label_order = list(dict.fromkeys(normalize_label(x) for x in labels))
        if not label_order or any(not x for x in label_order):
            raise ValueError("empty label in the label list")
    else:
        label_order = sorted({normalize_label(x) for x in gold})
    gold_norm = [canonical_label(x, label_order, fold_word_forms) for x in gold]
    # None (or an empty label) is "no prediction": wrong, counted in the "(other)" column.
    pred_norm = [
        None if x is None else canonical_label(x, label_order, fold_word_forms) or None for x in pred
    ]
    unknown_gold = sorted(set(gold_norm) - set(label_order))
    if unknown_gold:
        raise ValueError(f"gold labels outside the label list: {', '.join(unknown_gold)}")

    index = {label: i for i, label in enumerate(label_order)}
    k = len(label_order)
    g = np.fromiter((index[x] for x in gold_norm), dtype=np.intp, count=len(gold_norm))
    # Out-of-set predictions get the extra id k (the "(other)" column).
    p = np.fromiter((index.get(x, k) for x in pred_norm), dtype=np.intp, count=len(pred_norm))
    matrix = np.bincount(g * (k + 1) + p, minlength=k * (k + 1)).reshape(k, k + 1)

    true_pos = np.diag(matrix[:, :k]).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)  # gold count per class
    predicted = matrix[:, :k].sum(axis=0).astype(np.float64)  # prediction count per class
    precision = np.divide(true_pos, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0  # classes of the order with gold samples

    n = len(gold_norm)
    other_count = int(matrix[:, k].sum())
    show = matrix if other_count else matrix[:, :k]
    return {
        "accuracy": float(true_pos.sum() / n),
        "weighted_f1": float((f1 * support).sum() / support.sum()),
        # Over the whole label order (scikit-learn's labels= semantics); with no labels given, every class of
        # the order has gold samples by construction.
        "macro_f1": float(f1.mean()),
        "uar": float(recall.mean()),
        "n": n,
        "labels": label_order,
        "label_set": "given" if labels is not None else "gold",
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(label_order)
        },
        "confusion_matrix": {
            "rows": label_order,
            "columns": label_order + ([OTHER] if other_count else []),
            "matrix": show.tolist(),
        },
        "out_of_set_predictions": other_count,
        "out_of_set_labels": sorted({x for x in pred_norm if x is not None and x not in index}),
        "empty_predictions": sum(1 for x in pred_norm if x is None),
        "classes_without_gold": [label for i, label in enumerate(label_order) if not present[i]],
    }


# --------------------------------------------------------------------------------------------------------
# MER-UniBench hit rate
# --------------------------------------------------------------------------------------------------------

WHEELS = ("W1", "W2", "W3", "W4", "W5")


def hit_rate(
    *,
    references: Mapping[str, str | Sequence[str]],
    predictions: Mapping[str, str | Sequence[str]],
    version: str = "2025",
) -> dict[str, Any]:
    """The MER-UniBench hit rate of open-vocabulary predictions against one-hot gold labels.

    Follows the official ``calculate_openset_onehot_hitrate`` / ``hitrate_metric_calculation``: for each of the
    5 wheels, gold and predicted labels are parsed by the official list rule and mapped through M3 at level 1
    (``W{i}-L1``); a sample whose gold maps to nothing is skipped for that wheel; its score is
    ``|gold ∩ pred|`` over the mapped level-1 words (1 or 0 for one-hot gold, "the gold's level-1 word is among
    the prediction's"). The hit rate of a wheel is the mean over its scored samples; the reported ``hit_rate``
    is the mean over the 5 wheels.

    The official code also returns a second score, kept here as ``m_score``: per sample
    ``|gold ∩ pred| / |pred ∩ candidates|``, where the candidates are the mapped level-1 words of every gold
    label in the data set (0 when the prediction names none of them) — a precision among the closed label set.

    A gold name with no prediction scores as an empty prediction and is listed in ``missing_predictions``;
    predictions for names not in the gold are ignored and counted in ``extra_predictions``.
    """
    gold_onehot, pred = references, predictions
    from affectllm.labels import parse_label_list
    from affectllm.wheel import load_emotion_wheels

    wheels = load_emotion_wheels(version)
    names = list(gold_onehot)
    gold_lists = [parse_label_list(_as_label_value(gold_onehot[name])) for name in names]
    missing, unknown = align_names(names, pred)  # the one name policy (affectllm.labels)
    pred_lists = [parse_label_list(_as_label_value(pred.get(name))) for name in names]
    # The official code maps the distinct raw gold strings as candidates; for one-hot, lower-case gold (all
    # MER-UniBench sets) that is the same as the parsed labels used here.
    candidate_labels = sorted({label for labels in gold_lists for label in labels})

    per_wheel: dict[str, dict[str, Any]] = {}
    for wheel in WHEELS:
        variant = f"{wheel}-L1"
        candidates = wheels.map_ids(candidate_labels, variant)
        hits: list[int] = []
        m_scores: list[float] = []
        for gold_labels, pred_labels in zip(gold_lists, pred_lists, strict=True):
            gold_ids = wheels.map_ids(gold_labels, variant)
            if not gold_ids:
                continue
            pred_ids = wheels.map_ids(pred_labels, variant)
            hit = len(gold_ids & pred_ids)
            hits.append(hit)
            in_set = len(pred_ids & candidates)
            m_scores.append(hit / in_set if in_set else 0.0)
        per_wheel[wheel] = {
            "hit_rate": float(np.mean(hits)) if hits else None,
            "m_score": float(np.mean(m_scores)) if m_scores else None,
            "n": len(hits),
        }

    scored = [v for v in per_wheel.values() if v["n"]]
    return {
        "hit_rate": float(np.mean([v["hit_rate"] for v in scored])) if scored else None,
        "m_score": float(np.mean([v["m_score"] for v in scored])) if scored else None,
        "wheels": per_wheel,
        "n_gold": len(names),
        "missing_predictions": missing,
        "extra_predictions": len(unknown),
        "version": str(version),
    }


def _as_label_value(value: Any) -> Any:
    # A tuple is a label list too; everything else goes to parse_label_list as is.
    return list(value) if isinstance(value, tuple) else value
