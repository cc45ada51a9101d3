"""Model backends behind one interface, chosen by name and imported only when used.

``get_backend("llamacpp", model=..., ...)`` returns a ``Backend`` (see ``base.py``). Adding a backend means
adding a module and one line to ``BACKENDS``.
"""

from __future__ import annotations

from typing import Any

from affectllm.backends.base import Backend, GenerationConfig
from affectllm.registry import Registry

# name -> "module:Class", imported on first use so listing backends never loads torch or an SDK.
BACKENDS: Registry[type[Backend]] = Registry(
    "backend",
    {
        "transformers": "affectllm.backends.hf:TransformersBackend",
        "llamacpp": "affectllm.backends.llamacpp:LlamaCppBackend",
        "vllm": "affectllm.backends.vllm_backend:VLLMBackend",
        "openai": "affectllm.backends.openai_backend:OpenAIBackend",
        "mock": "affectllm.backends.mock:MockBackend",
    },
)


def get_backend(name: str, **options: Any) -> Backend:
    """A ``name`` backend built with ``options``; an unknown name raises
    :class:`~affectllm.registry.UnknownNameError` listing the known backends."""
    return BACKENDS.get(name)(**options)


__all__ = ["BACKENDS", "Backend", "GenerationConfig", "get_backend"]
