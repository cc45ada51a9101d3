"""Placeholder for `affectllm compare` (being written; replace this whole file)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser("compare", help="(not yet available)")
