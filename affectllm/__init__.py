"""affectllm: LLM-based, explainable emotion reasoning over textualized multimodal evidence.

The library API (imported lazily, so ``import affectllm`` and ``affectllm --help`` stay fast)::

    import affectllm as a
    clip = a.textualize("clip.mp4")                     # Clip with time-stamped cues
    reasoner = a.load_reasoner()                        # the embedded default model and adapter
    prediction = reasoner.predict(clip)                 # Prediction(emotions, rationale, answer, ...)
    a.predict("manifest.jsonl", "pred.jsonl", reasoner) # resumable batch prediction
    a.run_task(a.load_task("meld-closed-context"), "data/meld", "runs/meld", reasoner)
    a.score_ov(predictions=pred, references=gold)       # emotion-wheel metrics, as the official code
    a.render_timeline(clip, prediction, path="t.png")   # the cue timeline, cited cues highlighted

See docs/python-api.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> (module, attribute): resolved on first access.
_EXPORTS: dict[str, tuple[str, str]] = {
    "Clip": ("affectllm.schema", "Clip"),
    "Cue": ("affectllm.schema", "Cue"),
    "Evidence": ("affectllm.schema", "Evidence"),
    "Media": ("affectllm.schema", "Media"),
    "Prediction": ("affectllm.schema", "Prediction"),
    "ClipSettings": ("affectllm.settings", "ClipSettings"),
    "PromptSettings": ("affectllm.settings", "PromptSettings"),
    "clip_from_row": ("affectllm.clips", "clip_from_row"),
    "clip_from_path": ("affectllm.clips", "clip_from_path"),
    "textualize": ("affectllm.textualize", "textualize_clip"),
    "build_messages": ("affectllm.prompting", "build_messages"),
    "parse_answer": ("affectllm.parsing", "parse_answer"),
    "EmotionReasoner": ("affectllm.reasoner", "EmotionReasoner"),
    "load_reasoner": ("affectllm.reasoner", "load_reasoner"),
    "predict": ("affectllm.batch_predict", "predict"),
    "load_task": ("affectllm.tasks", "load_task"),
    "run_task": ("affectllm.tasks", "run_task"),
    "score_ov": ("affectllm.metrics.ov", "score_ov"),
    "render_timeline": ("affectllm.timeline", "render_timeline"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'affectllm' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
