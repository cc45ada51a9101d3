"""How an ``eval run``'s prediction records become a metric's ``(predictions, references, extra options)``.

Each metric in :data:`affectllm.metrics.METRICS` names its adapter here. A record carries the model's parsed
answer (``emotions``, ``rationale``, ``answer``), the evidence lines the prompt showed (``evidence``) and the
row's gold (``gold``: ``labels``, ``label``, ``rationale``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Inputs = tuple[Any, Any, dict[str, Any]]


def first_label(emotions: Sequence[str]) -> str:
    """The answer's first emotion: what a closed-set metric scores ("" for no answer, scored wrong)."""
    return emotions[0] if emotions else ""


def cited(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The rationale items the model cited (dicts with cue text, modality and cue id) that say something."""
    return [r for r in record.get("rationale") or [] if str(r.get("cue") or "").strip()]


def closed_inputs(records: list[dict[str, Any]], task: Any) -> Inputs:
    refs = [r["gold"]["label"] for r in records]
    preds = [first_label(r["emotions"]) for r in records]
    return preds, refs, {"labels": list(task.prompt.labels)} if task.prompt.labels else {}


def ew_inputs(records: list[dict[str, Any]], task: Any) -> Inputs:
    refs = {r["id"]: r["gold"]["labels"] for r in records}
    preds = {r["id"]: r["emotions"] for r in records}
    return preds, refs, {}


def hit_inputs(records: list[dict[str, Any]], task: Any) -> Inputs:
    refs = {r["id"]: r["gold"]["label"] or first_label(r["gold"]["labels"]) for r in records}
    preds = {r["id"]: r["emotions"] for r in records}
    return preds, refs, {}


def rationale_inputs(records: list[dict[str, Any]], task: Any) -> Inputs:
    with_ref = [r for r in records if r["gold"].get("rationale")]
    refs = {r["id"]: r["gold"]["rationale"] for r in with_ref}
    # The cited cues are the model's rationale; a model that cites nothing is judged on its free text.
    preds = {r["id"]: cited(r) or r.get("answer", "") for r in with_ref}
    return preds, refs, {}


def grounding_inputs(records: list[dict[str, Any]], task: Any) -> Inputs:
    preds = {r["id"]: cited(r) for r in records}
    refs = {r["id"]: r.get("evidence") or [] for r in records}
    return preds, refs, {}
