"""Model backends behind one interface, chosen by name and imported only when used.

``get_backend("llamacpp", model=..., ...)`` returns a ``Backend`` (see ``base.py``). Adding a backend means
adding a module and one line to ``BACKENDS``.
"""

from __future__ import annotations

import inspect
from typing import Any

from affectllm.backends.base import Backend, GenerationConfig
from affectllm.errors import InputError
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
    :class:`~affectllm.registry.UnknownNameError` listing the known backends, an option the backend does not
    take raises InputError naming the backend, the option and the ones it has (a misspelt ``n_ctx`` must not
    be dropped silently)."""
    cls = BACKENDS.get(name)
    params = inspect.signature(cls).parameters
    # A backend that forwards the rest to its engine (vllm's engine options) checks them there.
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise InputError(
                None,
                f"backend {name!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options: {', '.join(params)}",
            )
    return cls(**options)


__all__ = ["BACKENDS", "Backend", "GenerationConfig", "get_backend"]
