"""Model backends behind one interface, chosen by name and imported only when used.

``get_backend("llamacpp", model=..., ...)`` returns a ``Backend`` (see ``base.py``). Adding a backend means
adding a module and one line to ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from typing import Any

from affectllm.backends.base import Backend, GenerationConfig

# name -> "module:Class"
BACKENDS: dict[str, str] = {
    "transformers": "affectllm.backends.hf:TransformersBackend",
    "llamacpp": "affectllm.backends.llamacpp:LlamaCppBackend",
    "vllm": "affectllm.backends.vllm_backend:VLLMBackend",
    "openai": "affectllm.backends.openai_backend:OpenAIBackend",
    "mock": "affectllm.backends.mock:MockBackend",
}


def get_backend(name: str, **options: Any) -> Backend:
    if name not in BACKENDS:
        raise KeyError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module_name, cls_name = BACKENDS[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**options)


__all__ = ["BACKENDS", "Backend", "GenerationConfig", "get_backend"]
