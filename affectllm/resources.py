"""Locate assets that ship inside the wheel but live at the repository's top level in a checkout.

``prompts/`` and ``eval/`` are top-level folders so users can read and edit them; the wheel build copies them
to ``affectllm/_assets/``. An editable install has no copy, so fall back to the checkout.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def asset_dir(name: str) -> Path:
    """The directory of a shipped asset folder (``"prompts"`` or ``"eval"``)."""
    for candidate in (PACKAGE_DIR / "_assets" / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"asset folder {name!r} not found inside the package or the checkout")


def data_path(*parts: str) -> Path:
    """A file under ``affectllm/data`` (package data converted from upstream resources; see data_cards/)."""
    return PACKAGE_DIR.joinpath("data", *parts)


def user_cache_dir() -> Path:
    """Where affectllm caches assembled models and per-clip results (``$AFFECTLLM_CACHE`` overrides)."""
    import os

    root = os.environ.get("AFFECTLLM_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "affectllm"
