"""Options every command spells the same way, so a flag means one thing across ``affectllm``.

- ``-q/--quiet``: no progress bars or status lines on stderr. Results (stdout, output files), warnings and
  errors still appear. It is the one way to switch progress off; ``affectllm.cli.main`` also sets
  ``TQDM_DISABLE`` for it, which silences the progress bars of the libraries a command calls.
- List options take one syntax: comma-separated in one argument (``--modalities audio,face``).
"""

from __future__ import annotations

import argparse

QUIET_HELP = "no progress bars or status lines on stderr (results, warnings and errors still print)"


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)


def comma_list(text: str) -> list[str]:
    """``"audio, face,"`` → ``["audio", "face"]``: the argparse ``type`` of every list option."""
    return [item.strip() for item in text.split(",") if item.strip()]


def positive_int(text: str) -> int:
    """An argparse type for counts, so a bad value is reported under the flag's own name."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
