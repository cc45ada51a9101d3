"""Placeholder for `affectllm run` (being written; replace this whole file)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser("run", help="(not yet available)")
