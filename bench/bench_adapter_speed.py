"""Does a new default adapter answer as fast as the one it replaces? The llama.cpp path (what chat runs on a
CPU), the same prompts, the embedded Gemma 3 270M, two LoRA GGUFs: the adapter committed at a baseline
revision and the one in the working tree. A larger LoRA rank adds work to every token.

Prints, per adapter, the decode rate (tokens/s after the first piece), the median time to the first piece and
the median whole-answer time, then the ratios new/baseline (target: decode rate ≥ 0.9× the baseline's).

    python bench/bench_adapter_speed.py --baseline 7292dcb --prompts 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_decode import bench_prompts, decode_rate, timed_stream  # noqa: E402

from affectllm.backends.base import GenerationConfig  # noqa: E402

ADAPTER = "affectllm/data/adapters/gemma3-270m-ov/adapter.gguf"


def adapter_at(revision: str, folder: Path) -> Path:
    """The shipped adapter.gguf as committed at ``revision`` (git show), written into ``folder``."""
    path = folder / f"adapter-{revision}.gguf"
    with path.open("wb") as fh:
        subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{ADAPTER}"], stdout=fh, check=True)
    return path


def measure(adapter: Path, prompts: list, max_tokens: int, threads: int) -> dict[str, float]:
    from affectllm.backends import get_backend

    backend = get_backend("llamacpp", adapter=str(adapter), n_threads=threads)
    config = GenerationConfig(max_new_tokens=max_tokens, temperature=0.0)
    llm = backend.llm  # tokens counted by the model's own tokenizer, the same for both adapters
    timed_stream(backend.stream(prompts[0], config))  # warm-up: page the model in
    runs, totals = [], []
    for messages in prompts:
        text, first, last = timed_stream(backend.stream(messages, config))
        runs.append((len(llm.tokenize(text.encode(), add_bos=False)), first, last))
        totals.append(last)
    backend.close()
    return {**decode_rate(runs), "answer_s": statistics.median(totals)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline", default="HEAD", help="git revision whose shipped adapter is the baseline"
    )
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    prompts = bench_prompts(args.prompts)
    with tempfile.TemporaryDirectory() as scratch:
        baseline = adapter_at(args.baseline, Path(scratch))
        figures = {
            f"baseline ({args.baseline})": measure(baseline, prompts, args.max_tokens, args.threads),
            "working tree": measure(ROOT / ADAPTER, prompts, args.max_tokens, args.threads),
        }
    for name, row in figures.items():
        print(f"{name:28s} decode {row['decode_tok_s']:6.1f} tok/s  first piece {row['ttft_s']:5.2f} s  "
              f"answer {row['answer_s']:5.2f} s  ({row['tokens']:.0f} tokens)")  # fmt: skip
    old, new = figures.values()
    ratios = {
        "decode_rate": new["decode_tok_s"] / old["decode_tok_s"],
        "first_piece": new["ttft_s"] / old["ttft_s"],
        "answer": new["answer_s"] / old["answer_s"],
    }
    print("new / baseline: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"figures": figures, "ratios": ratios}, indent=2), encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
