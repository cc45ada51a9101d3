"""``affectllm eval compare OUT1 OUT2 ...``: a leaderboard of `eval run` outputs, per task, best first.

Each OUT is an ``eval run`` output folder (or its metrics.json). Runs are grouped by task and split and ranked by
the task's primary metric in its own direction (higher or lower is better, from the metric registry).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from affectllm.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="leaderboard of several `eval run` outputs (primary metric per task)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", help="eval run output folders (or their metrics.json)")
    parser.add_argument("--json", action="store_true", help="print the leaderboard as JSON")
    parser.set_defaults(func=run)


def read_run(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise InputError(path, "no metrics.json (is this an `affectllm eval run` output folder?)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(file, f"not valid JSON ({exc.msg})", line=exc.lineno) from None
    except UnicodeDecodeError as exc:
        raise InputError(file, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise InputError(file, "JSON nested too deeply") from None
    if not isinstance(data, dict) or "primary" not in data or "task" not in data:
        raise InputError(file, "not an `eval run` metrics.json (no task/primary)")
    data["_path"] = str(path)
    return data


def leaderboard(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``{"task [split]": [entry, ...]}`` with entries ranked best first (runs without a value last)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for data in runs:
        primary = data["primary"]
        run = data.get("run", {})
        groups[f"{data['task']} [{data.get('split')}]"].append(
            {
                "run": data["_path"],
                "backend": run.get("backend"),
                "model": run.get("model"),
                "adapter": run.get("adapter"),
                "metric": f"{primary.get('metric')}:{primary.get('key')}",
                "value": primary.get("value"),
                "higher_is_better": primary.get("higher_is_better", True),
                "n": data.get("n_samples"),
                "errors": data.get("n_errors"),
                "final": data.get("final", False),
            }
        )
    for entries in groups.values():

        def key(entry: dict[str, Any]) -> tuple[int, float]:
            value = entry["value"]
            if not isinstance(value, (int, float)):
                return (1, 0.0)
            return (0, -value if entry["higher_is_better"] else value)

        entries.sort(key=key)
        for rank, entry in enumerate(entries, 1):
            entry["rank"] = rank
    return dict(groups)


def run(args: argparse.Namespace) -> int:
    board = leaderboard([read_run(p) for p in args.runs])
    if args.json:
        print(json.dumps(board, indent=2, ensure_ascii=False))
        return 0
    for group, entries in board.items():
        first = entries[0]
        arrow = "↑" if first["higher_is_better"] else "↓"
        print(f"\n{group} — {first['metric']} {arrow}")
        width = max(len(_name(e)) for e in entries)
        for entry in entries:
            value = entry["value"]
            shown = f"{value:.4f}" if isinstance(value, (int, float)) else "—"
            flags = " (FINAL test)" if entry["final"] else ""
            print(
                f"  {entry['rank']:>2}. {_name(entry):<{width}}  {shown}  n={entry['n']} errors={entry['errors']}"
                f"  {entry['run']}{flags}"
            )
    return 0


def _name(entry: dict[str, Any]) -> str:
    name = f"{entry['backend']}:{Path(str(entry['model'])).name}"
    if entry.get("adapter"):
        name += f"+{Path(str(entry['adapter'])).name}"
    return name
