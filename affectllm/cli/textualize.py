"""Placeholder for `affectllm textualize` (being written; replace this whole file)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser("textualize", help="(not yet available)")
