"""docs/cli.md is generated from the argparse parsers (tools/gen_cli_docs.py) and must not drift from them."""

from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from affectllm.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "python tools/gen_cli_docs.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "tools" / "gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return _generator()


def test_cli_md_matches_the_parsers(gen: ModuleType) -> None:
    assert gen.DOC.exists(), f"docs/cli.md is missing: run {REGENERATE}"
    current = gen.DOC.read_text(encoding="utf-8")
    written_with = re.search(r"with Python (\d+\.\d+)", current)
    if written_with and written_with.group(1) != gen.python_version():
        # argparse's help layout changes between Python versions; the page is compared under the one that wrote it.
        pytest.skip(
            f"docs/cli.md was generated with Python {written_with.group(1)}, this is {gen.python_version()}"
        )
    expected = gen.render()
    if current != expected:
        diff = "".join(
            list(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    expected.splitlines(keepends=True),
                    "docs/cli.md",
                    "generated now",
                )
            )[:60]
        )
        pytest.fail(f"docs/cli.md is out of date with the parsers; regenerate it with `{REGENERATE}`\n{diff}")


def test_every_command_and_subcommand_has_a_section(gen: ModuleType) -> None:
    text = gen.render()
    headings = re.findall(r"^## `(.+)`$", text, flags=re.MULTILINE)
    assert headings[0] == "affectllm"
    commands = [h.split()[1] for h in headings[1:] if len(h.split()) == 2]
    assert commands == list(COMMANDS)  # every command, in the order `affectllm --help` lists them
    for sub in ("eval ov", "eval run", "train sft", "train grpo", "models setup"):
        assert f"affectllm {sub}" in headings
    # Each section holds that parser's own usage line.
    for heading in headings:
        assert f"usage: {heading} " in text or f"usage: {heading}\n" in text


def test_the_page_does_not_depend_on_the_terminal_width(gen: ModuleType, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    page = gen.render()
    monkeypatch.setenv("COLUMNS", "250")
    assert gen.render() == page
    monkeypatch.delenv("COLUMNS")
    assert gen.render() == page
