"""The ``affectllm`` command. Subcommands live in one small module each and import heavy libraries only
inside their ``run`` function, so ``affectllm --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from affectllm import __version__
from affectllm.errors import InputError, MissingExtraError

# name -> module; each module defines register(subparsers) which adds its parser and sets func=run.
COMMANDS: dict[str, str] = {
    "textualize": "affectllm.cli.textualize",
    "chat": "affectllm.cli.chat",
    "predict": "affectllm.cli.predict",
    "serve": "affectllm.cli.serve",
    "eval": "affectllm.cli.eval_group",
    "train": "affectllm.cli.train",
    "models": "affectllm.cli.models",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="affectllm",
        description="Explainable emotion reasoning with LLMs: textualize clips, chat, evaluate, fine-tune.",
    )
    parser.add_argument("--version", action="version", version=f"affectllm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (InputError, MissingExtraError, FileNotFoundError, ConnectionError) as exc:
        if args.debug or os.environ.get("AFFECTLLM_DEBUG"):
            raise
        print(f"affectllm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("affectllm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `affectllm ... | head` closed the pipe: not an error. Point stdout at devnull so the interpreter's
        # final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
