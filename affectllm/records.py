"""The one prediction record that ``chat --json``, ``predict`` and ``eval run`` write.

``{"id", "emotions", "rationale", "answer", "confidence", "format_ok", ...}`` — one flat JSON object per clip,
keyed by ``id``; ``eval run`` adds ``gold``, ``evidence`` and ``clip``, ``predict`` may add ``raw`` and
``warnings``; a clip that failed is ``{"id", "error", "where", "stage", "emotions": []}`` (``stage``:
``textualize`` or ``predict``). ``affectllm eval ov`` and every other label reader take these files as they
are (``emotions`` is a label column, ``id`` the name).

Files from affectllm < 0.2 keyed by ``name`` with ``labels`` still read as before; ``eval run`` files that
nested the answer under ``prediction`` are refused with a pointer to ``python -m affectllm.records upgrade``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from affectllm.schema import Clip, Prediction

ID_KEY = "id"


def answer_text(prediction: Prediction) -> str:
    """The reply as prose: the model's own free text when it wrote some (a chat reply, the think part),
    otherwise one sentence rendered from the structured answer, so ``answer`` is never empty when the model
    did answer."""
    if prediction.answer and prediction.answer.strip():
        return prediction.answer.strip()
    if not prediction.emotions:
        return prediction.raw.strip()
    words = list(prediction.emotions)
    named = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    text = f"The speaker shows {named}."
    cited = [f"{r.cue} [{r.cue_id}]" if r.cue_id else r.cue for r in prediction.rationale if r.cue]
    if cited:
        text += " Evidence: " + "; ".join(cited) + "."
    return text


def prediction_record(
    clip_id: str,
    prediction: Prediction,
    source: Clip | None = None,
    include_raw: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """The record of one answered clip (``extra`` keys such as ``gold`` or ``clip`` are appended); the
    ``source`` clip's extraction warnings come along."""
    record: dict[str, Any] = {
        ID_KEY: clip_id,
        "emotions": list(prediction.emotions),
        "rationale": [r.to_dict() for r in prediction.rationale],
        "answer": answer_text(prediction),
        "confidence": prediction.confidence,
        "format_ok": prediction.format_ok,
    }
    if prediction.errors:
        record["parse_errors"] = list(prediction.errors)
    if prediction.label_scores:
        record["label_scores"] = {k: round(float(v), 4) for k, v in prediction.label_scores.items()}
    if source is not None and source.warnings:
        record["warnings"] = list(source.warnings)
    if include_raw:
        record["raw"] = prediction.raw
    record.update(extra)
    return record


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record of an older file in the current form (``name`` → ``id``; a nested ``prediction`` flattened)."""
    out = dict(record)
    if ID_KEY not in out and "name" in out:
        out[ID_KEY] = out.pop("name")
    nested = out.pop("prediction", None)
    if isinstance(nested, dict):
        for key, value in nested.items():
            out.setdefault(key, value)
    if "emotions" not in out and isinstance(out.get("labels"), list):
        out["emotions"] = out.pop("labels")
    return {ID_KEY: out.pop(ID_KEY), **out}


def _upgrade_file(path: Path) -> int:
    import os

    from affectllm.batch import read_jsonl

    records = [upgrade_record(r) for r in read_jsonl(path)]
    tmp = path.with_name(path.name + ".upgrade.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return len(records)


if __name__ == "__main__":  # python -m affectllm.records upgrade FILE [FILE ...]
    if len(sys.argv) < 3 or sys.argv[1] != "upgrade":
        print("usage: python -m affectllm.records upgrade FILE [FILE ...]", file=sys.stderr)
        sys.exit(2)
    for name in sys.argv[2:]:
        print(f"{name}: {_upgrade_file(Path(name))} records upgraded")
