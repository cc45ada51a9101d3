"""``affectllm.textualize(...)`` works whether or not the ``affectllm.textualize`` package was imported first
(importing a subpackage replaces the parent's attribute of the same name with the module)."""

from __future__ import annotations

import subprocess
import sys

import pytest

ROW = '{"id": "birthday", "transcript": "You remembered my birthday!"}'


@pytest.mark.parametrize("first", ["", "import affectllm.textualize.pipeline", "import affectllm.tasks"])
def test_textualize_is_callable_in_any_import_order(first: str) -> None:
    code = (
        f"{first}\nimport json\nimport affectllm as a\n"
        f"clip = a.textualize(json.loads({ROW!r}))\n"
        "print([line.text for line in clip.evidence()])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == """['L1 [whole clip] transcript: "You remembered my birthday!"']"""
