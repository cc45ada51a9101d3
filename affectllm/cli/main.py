"""The ``affectllm`` command. Subcommands live in one small module each and import heavy libraries only
inside their ``run`` function, so ``affectllm --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from affectllm import __version__
from affectllm.cli._logging import add_logging_options, configure_logging, log_level
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
    "ui": "affectllm.cli.ui",
}
# Commands that hand the arguments after `--` to another program unchanged (args.extra). They are split off
# before parsing, so an option typed after a positional argument is still affectllm's own.
PASSTHROUGH_COMMANDS = ("serve",)


class Parser(argparse.ArgumentParser):
    """No prefix matching of long options, in every subcommand (subparsers inherit the class): an unknown
    flag such as ``--tasks`` must be an error or its own option, never silently read as ``--tasks-dir``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="affectllm",
        description="Explainable emotion reasoning with LLMs: textualize clips, chat, evaluate, fine-tune.",
    )
    parser.add_argument("--version", action="version", version=f"affectllm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    add_logging_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).register(sub)
    return parser


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``[..., "serve", ..., "--", X, ...]`` → (the arguments before ``--``, the ones after) for the commands in
    ``PASSTHROUGH_COMMANDS``; other commands keep ``--`` (it ends their options, as usual)."""
    argv = list(argv)
    command = next((a for a in argv if a in COMMANDS), None)
    if command not in PASSTHROUGH_COMMANDS or "--" not in argv:
        return argv, []
    cut = argv.index("--")
    if cut < argv.index(command):
        return argv, []
    return argv[:cut], argv[cut + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv, passthrough = split_passthrough(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if passthrough:
        args.extra = passthrough
    if args.global_quiet:
        args.quiet = True  # `affectllm -q CMD` and `affectllm CMD -q` are one switch
    configure_logging(log_level(args))
    if getattr(args, "quiet", False):
        # -q/--quiet means "no progress or status output on stderr" in every command; this also silences the
        # progress bars of libraries a command calls (tqdm reads the variable).
        os.environ["TQDM_DISABLE"] = "1"
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that went away (`| head`) is seen here, not at exit
        return code
    except BrokenPipeError:
        # `affectllm ... | head` closed the pipe: not an error. (Caught before ConnectionError, its base class.)
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (InputError, MissingExtraError, FileNotFoundError, ConnectionError) as exc:
        if args.debug or os.environ.get("AFFECTLLM_DEBUG"):
            raise
        print(f"affectllm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("affectllm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
