"""How the ``affectllm`` command shows the library's diagnostics.

Library modules only call ``logging.getLogger(__name__)`` (every one sits under the ``"affectllm"`` logger)
and never configure logging, so a notebook or another program decides what it sees. The command configures
the ``"affectllm"`` logger once per run: status lines at INFO, ``-v/--verbose`` adds DEBUG, ``-q/--quiet``
keeps only warnings and errors. Lines read ``affectllm: message`` and ``affectllm: warning: message``, the
form the commands printed before logging existed.
"""

from __future__ import annotations

import argparse
import logging
import sys

LOGGER_NAME = "affectllm"


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, not at configuration: pytest's capture,
    a notebook or a caller that redirects stderr between two ``main()`` calls still receives the lines."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _CommandFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if record.levelno >= logging.WARNING:
            return f"affectllm: {record.levelname.lower()}: {message}"
        return f"affectllm: {message}"


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """``-v/--verbose`` and ``-q/--quiet`` before the command name (``affectllm -q predict ...``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="also show debug messages on stderr")
    # Its own dest: a command's -q default would otherwise overwrite this one when the subparser runs.
    group.add_argument(
        "-q",
        "--quiet",
        dest="global_quiet",
        action="store_true",
        help="only warnings and errors on stderr, for every command (same as the command's own -q)",
    )


def log_level(args: argparse.Namespace) -> int:
    if getattr(args, "quiet", False) or getattr(args, "global_quiet", False):
        return logging.WARNING
    if getattr(args, "verbose", False):
        return logging.DEBUG
    return logging.INFO


def configure_logging(level: int) -> None:
    """Point the ``"affectllm"`` logger at stderr at ``level``; a second call (tests, a notebook calling
    ``main`` twice) replaces the first handler instead of adding a second one that doubles every line."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if isinstance(handler, _CurrentStderrHandler):
            logger.removeHandler(handler)
    handler = _CurrentStderrHandler()
    handler.setFormatter(_CommandFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
