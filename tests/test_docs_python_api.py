"""docs/python-api.md only shows code that parses and names that ``import affectllm`` exports.

Running the walk-through needs the default model and ../shared/data (minutes on a CPU); its outputs were
pasted from such a run. This test catches the cheap drift: a renamed export or a broken example."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import affectllm

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_every_example_parses() -> None:
    blocks = _blocks()
    assert len(blocks) >= 6  # textualize, clip_from_row, reasoner, predict, run_task, score_ov
    for block in blocks:
        ast.parse(block)


def test_every_affectllm_name_used_is_exported_and_resolves() -> None:
    used = sorted({name for block in _blocks() for name in re.findall(r"\ba\.([A-Za-z_]\w*)", block)})
    assert {"textualize", "clip_from_row", "load_reasoner", "predict", "run_task", "score_ov"} <= set(used)
    for name in used:
        assert name in affectllm.__all__, f"docs/python-api.md uses a.{name}, which affectllm does not export"
        assert getattr(affectllm, name) is not None
    # The table at the top names the same exports.
    table = set(re.findall(r"^\| `a\.([A-Za-z_]\w*)", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE))
    assert table and table <= set(affectllm.__all__)
