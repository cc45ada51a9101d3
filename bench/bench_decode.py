"""Decode speed of each available backend on the same model and the same prompts, in one process.

CPU (always): the default chat path (``affectllm.models.default_backend()`` through ``ChatSession``-style
streaming) against raw llama-cpp-python on the same Gemma 3 270M GGUF — target: default ≥ 0.9× llama.cpp —
plus the transformers backend on the rebuilt HF model for reference.
GPU (when CUDA and vLLM are present, or ``--gpu``): the vLLM backend against the transformers backend's batched
``generate`` on 64 prompts — target: vLLM ≥ 10× transformers.

Decode rate excludes prompt processing: (tokens − 1) / (time of last piece − time of first piece), with tokens
counted by re-tokenizing each reply with one tokenizer, so every engine is measured the same way.

    python bench/bench_decode.py                 # CPU comparison (a couple of minutes on 2 cores)
    python bench/bench_decode.py --gpu           # on a CUDA machine with vLLM installed
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectllm.backends.base import GenerationConfig


def bench_prompts(n: int, few_shot: bool = False) -> list[list[dict]]:
    """``n`` real task prompts: the shipped example clips through the same builder chat/predict use."""
    from affectllm.prompting import build_messages, load_examples

    clips = [ex.clip for ex in load_examples()]
    questions = [
        None,
        "How does the speaker feel, and what in the voice shows it?",
        "Which facial movements matter most here?",
        "Is the speaker's emotion mixed? Explain with the evidence.",
    ]
    out = []
    for i in range(n):
        clip = clips[i % len(clips)]
        out.append(
            build_messages(clip, task="ov", few_shot=few_shot, question=questions[(i // len(clips)) % 4])
        )
    return out


def timed_stream(pieces: Iterator[str]) -> tuple[str, float | None, float]:
    """(text, time of first piece, time of last piece) — both relative to the call."""
    start = time.perf_counter()
    first = None
    last = start
    chunks = []
    for piece in pieces:
        now = time.perf_counter()
        if first is None and piece:
            first = now - start
        last = now - start
        chunks.append(piece)
    return "".join(chunks), first, last


def decode_rate(runs: list[tuple[int, float | None, float]]) -> dict[str, float]:
    """Pooled decode tokens/s over runs of (tokens, first-piece time, last-piece time)."""
    tokens = sum(max(0, n - 1) for n, first, _ in runs if first is not None)
    seconds = sum(last - first for n, first, last in runs if first is not None and n > 1)
    ttft = [first for _, first, _ in runs if first is not None]
    return {
        "decode_tok_s": tokens / seconds if seconds > 0 else float("nan"),
        "tokens": float(sum(n for n, _, _ in runs)),
        "ttft_s": statistics.median(ttft) if ttft else float("nan"),
    }


def report(name: str, runs: list[tuple[int, float | None, float]]) -> dict[str, float]:
    result = decode_rate(runs)
    print(
        f"  {name:<34} {result['decode_tok_s']:8.1f} tok/s decode   "
        f"(TTFT median {result['ttft_s'] * 1000:6.0f} ms, {int(result['tokens'])} tokens)",
        flush=True,
    )
    return result


def cpu_bench(args: argparse.Namespace) -> dict[str, object]:
    from affectllm import models
    from affectllm.backends import get_backend
    from affectllm.reasoner import load_reasoner

    config = GenerationConfig(max_new_tokens=args.max_tokens, temperature=0.0, stop=[])
    threads = args.threads or os.cpu_count() or 1
    # The default chat path exactly as `affectllm chat` loads it (default backend, model, adapter).
    reasoner = load_reasoner(generation=config, n_threads=threads)
    default = reasoner.backend
    prompts = bench_prompts(args.prompts, few_shot=args.few_shot)
    gguf = models.ensure_gemma_gguf()
    results: dict[str, object] = {
        "gguf": str(gguf),
        "prompts": len(prompts),
        "max_new_tokens": args.max_tokens,
        "threads": threads,
        "default_backend": default.name,
    }
    print(
        f"CPU decode benchmark: {len(prompts)} prompts x {args.max_tokens} new tokens, {threads} threads, "
        f"default path = {default.name}"
    )
    engines: dict[str, Callable[[list[dict]], Iterator[str]]] = {
        f"default path ({default.name})": lambda m: default.stream(m, config)
    }
    raw = None
    if importlib.util.find_spec("llama_cpp") is None:
        print(
            "  llama-cpp-python is not installed: no llama.cpp baseline (pip install 'affectllm[llamacpp]')"
        )
        count_tokens = _hf_token_counter(models)
    else:
        from llama_cpp import Llama

        raw = Llama(model_path=str(gguf), n_ctx=4096, n_threads=threads, verbose=False, seed=0)
        to_text = getattr(default, "prompt_text", None)

        def count_tokens(text: str) -> int:
            return len(raw.tokenize(text.encode("utf-8"), add_bos=False, special=True))

        def raw_stream(messages: list[dict]) -> Iterator[str]:
            # The very prompt string the default path sends, through llama.cpp's own loop, nothing between.
            prompt = to_text(messages) if to_text else messages_to_text(messages)
            for chunk in raw.create_completion(prompt, max_tokens=args.max_tokens, temperature=0.0,
                                               top_k=1, stream=True, seed=0):  # fmt: skip
                yield chunk["choices"][0]["text"]

        engines["llama-cpp-python (raw baseline)"] = raw_stream

    # Interleave the engines prompt by prompt (alternating who goes first) so that load from other
    # processes on a shared machine falls on both alike.
    names = list(engines)
    for name in names:
        for _ in engines[name](prompts[0]):  # warm-up: model pages, KV cache allocation
            pass
    runs: dict[str, list[tuple[int, float | None, float]]] = {n: [] for n in names}
    for i, messages in enumerate(prompts):
        for name in names if i % 2 == 0 else names[::-1]:
            text, first, last = timed_stream(engines[name](messages))
            runs[name].append((count_tokens(text), first, last))
    for name in names:
        results[name] = report(name, runs[name])
    # The default backend's memory goes back now; the raw llama.cpp instance stays open because it is the
    # token counter for the transformers run below.
    default.close()

    if default.name != "transformers" and not args.skip_transformers:
        hf = get_backend("transformers", model=str(models.ensure_gemma_hf()), adapter="none")
        try:
            stream = lambda m: hf.stream(m, config)  # noqa: E731
            for _ in stream(prompts[0]):
                pass
            hf_runs = []
            for messages in prompts:
                text, first, last = timed_stream(stream(messages))
                hf_runs.append((count_tokens(text), first, last))
            results["transformers (rebuilt HF model)"] = report("transformers (rebuilt HF model)", hf_runs)
        finally:
            hf.close()

    if raw is not None:
        raw.close()
    base_key = "llama-cpp-python (raw baseline)"
    if base_key in results:
        base = results[base_key]["decode_tok_s"]  # type: ignore[index]
        ratio = results[names[0]]["decode_tok_s"] / base  # type: ignore[index]
        results["ratio_default_vs_llamacpp"] = ratio
        verdict = "meets" if ratio >= 0.9 else "MISSES"
        print(f"  ratio default / llama.cpp = {ratio:.2f}x  ({verdict} the >= 0.9x target)")
        hf_key = "transformers (rebuilt HF model)"
        if hf_key in results:
            r = results[hf_key]["decode_tok_s"] / base  # type: ignore[index]
            results["ratio_transformers_vs_llamacpp"] = r
            print(f"  ratio transformers / llama.cpp = {r:.2f}x")
    return results


def messages_to_text(messages: list[dict]) -> str:
    from affectllm.prompting import build_prompt_text

    return build_prompt_text(messages)


def _hf_token_counter(models) -> Callable[[str], int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(models.ensure_gemma_hf()))
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def gpu_bench(args: argparse.Namespace) -> dict[str, object]:
    """vLLM vs transformers ``generate`` on one batch of 64 prompts (throughput: generated tokens / wall time)."""
    import torch

    from affectllm import models
    from affectllm.backends import get_backend

    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs CUDA")
    model = args.model or str(models.ensure_gemma_hf())
    prompts = bench_prompts(args.batch)
    config = GenerationConfig(max_new_tokens=args.max_tokens, temperature=0.0, stop=[])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)

    def count(texts: list[str]) -> int:
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)

    results: dict[str, object] = {"model": model, "batch": len(prompts), "max_new_tokens": args.max_tokens}
    print(
        f"GPU batch benchmark ({torch.cuda.get_device_name(0)}): {len(prompts)} prompts x {args.max_tokens} tokens"
    )
    for name in ("transformers", "vllm"):
        backend = get_backend(name, model=model)
        try:
            backend.generate(prompts[:2], config)  # warm-up (CUDA graphs, kernels)
            torch.cuda.synchronize()
            start = time.perf_counter()
            texts = backend.generate(prompts, config)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        finally:
            backend.close()
        tokens = count(texts)
        results[name] = {"tok_s": tokens / seconds, "tokens": tokens, "seconds": seconds}
        print(f"  {name:<14} {tokens / seconds:9.1f} tok/s  ({tokens} tokens in {seconds:.2f} s)", flush=True)
    ratio = results["vllm"]["tok_s"] / results["transformers"]["tok_s"]  # type: ignore[index]
    results["ratio_vllm_vs_transformers"] = ratio
    print(
        f"  ratio vLLM / transformers = {ratio:.1f}x  ({'meets' if ratio >= 10 else 'MISSES'} the >= 10x target)"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4, help="CPU: prompts per engine")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, help="CPU threads for llama.cpp (default: all cores)")
    parser.add_argument(
        "--skip-transformers", action="store_true", help="CPU: skip the transformers reference"
    )
    parser.add_argument(
        "--few-shot", action="store_true", help="use the full few-shot chat prompt (~2k tokens; slow prefill)"
    )
    parser.add_argument("--gpu", action="store_true", help="run the GPU comparison (vLLM vs transformers)")
    parser.add_argument("--batch", type=int, default=64, help="GPU: prompts in the batch")
    parser.add_argument("--model", help="GPU: model directory (default: the rebuilt Gemma 3 270M)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    gpu_ready = importlib.util.find_spec("vllm") is not None and _cuda()
    results = gpu_bench(args) if args.gpu or gpu_ready else cpu_bench(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


if __name__ == "__main__":
    main()
