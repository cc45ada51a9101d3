"""Textualizers: turn a clip's non-verbal evidence into time-stamped :class:`~affectllm.schema.Cue` lists.

This module stays light (the CLI imports it): extractors and their heavy dependencies load on first use.

- ``TEXTUALIZERS`` — the :class:`~affectllm.registry.Registry` of extractors by modality name, as lazy
  ``"module:function"`` entries; :func:`get_textualizer` resolves one. The pipeline runs them through its
  ``EXTRACTION_STEPS`` registry.
- ``textualize_clip`` / ``textualize_batch`` (pipeline), ``face_cues_from_csv`` (face), ``scene_cues``
  (scene) and ``render_cues`` (render) are re-exported lazily.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from affectllm.registry import Registry
from affectllm.textualize.render import assign_ids, cue_line, render_cues

# modality -> "module:function". audio: (AudioData, asr=..., asr_model=...) -> (cues, transcript);
# face: (csv path, ...) -> cues; scene: (captions=..., media=..., captioner=...) -> cues;
# transcript: (text, source=...) -> cues.
TEXTUALIZERS: Registry[Callable[..., Any]] = Registry(
    "textualizer",
    {
        "audio": "affectllm.textualize.audio:audio_cues",
        "face": "affectllm.textualize.face:face_cues_from_csv",
        "scene": "affectllm.textualize.scene:scene_cues",
        "transcript": "affectllm.textualize.pipeline:transcript_cues",
    },
)

_LAZY: dict[str, str] = {
    "textualize_clip": "affectllm.textualize.pipeline",
    "textualize_batch": "affectllm.textualize.pipeline",
    "find_sidecars": "affectllm.textualize.pipeline",
    "transcript_cues": "affectllm.textualize.pipeline",
    "face_cues_from_csv": "affectllm.textualize.face",
    "read_au_csv": "affectllm.textualize.face",
    "scene_cues": "affectllm.textualize.scene",
    "read_captions": "affectllm.textualize.scene",
}

__all__ = ["TEXTUALIZERS", "assign_ids", "cue_line", "get_textualizer", "render_cues", *_LAZY]


def get_textualizer(name: str) -> Callable[..., Any]:
    """The extractor function registered under ``name`` (imports its module on first use); an unknown name
    raises :class:`~affectllm.registry.UnknownNameError` (a ``ValueError``) listing the known ones."""
    return TEXTUALIZERS.get(name)


class _CallablePackage(types.ModuleType):
    """``affectllm.textualize(path_or_row, ...)`` is the library API's textualize function, but importing this
    package (any ``affectllm.textualize.*`` import does) makes Python set the attribute ``affectllm.textualize`` to
    this module, replacing the lazily exported function. Calling the package calls ``textualize_clip``, so
    ``a.textualize(...)`` works whichever of the two the attribute holds."""

    def __call__(self, path_or_row: str | Path | Any, **options: Any) -> Any:
        from affectllm.textualize.pipeline import textualize_clip

        return textualize_clip(path_or_row, **options)


sys.modules[__name__].__class__ = _CallablePackage


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
