"""Test-wide settings: never reach a model hub, and find the read-only shared data when it exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# A hub look-up with no network waits ~50 s on retries before failing; tests use local models only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AFFECTLLM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip cleanly in a user's checkout."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


# Assembled/rebuilt models are deterministic and take minutes to rebuild on a CPU: tests share the user's
# model cache (as they would share a hub cache) unless AFFECTLLM_MODEL_CACHE points elsewhere.
os.environ.setdefault(
    "AFFECTLLM_MODEL_CACHE",
    str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "affectllm" / "models"),
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Per-clip textualize caches of one test must not leak into the next.
    monkeypatch.setenv("AFFECTLLM_CACHE", str(tmp_path / "affectllm-cache"))


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Gemma-3-style causal LM with a locally trained tokenizer (tests/tiny_models.py)."""
    from tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA-class vision-language model with its processor (tests/tiny_models.py)."""
    from tiny_models import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))
