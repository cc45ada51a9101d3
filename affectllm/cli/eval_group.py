"""``affectllm eval``: score predictions (ov, closed, rationale) and run benchmark tasks (run, compare)."""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS: dict[str, str] = {
    "ov": "affectllm.cli.eval_ov",
    "closed": "affectllm.cli.eval_closed",
    "rationale": "affectllm.cli.eval_rationale",
    "run": "affectllm.cli.eval_run",
    "compare": "affectllm.cli.eval_compare",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate predictions and run benchmark tasks")
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).register(sub)
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
