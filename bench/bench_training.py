"""Does training help? The same base model zero-shot, few-shot, after SFT and after SFT+GRPO — on dev data only.

For each setting it reports MELD-dev weighted F1 (closed set, dialogue context) and emotion-wheel F at levels 1
and 2 on the OV-MERD dev gold, with the English MER2023 subtitle as the only input, plus the mean number of
emotions listed per open-vocabulary answer (so a GRPO gain bought by listing many emotions is visible) and the
share of answers that followed the contract. Deltas are against the zero-shot base run on the same subset
(scored in the same process, or earlier into the same ``--output`` file).

    python bench/bench_training.py --data-root ../shared/data \
        --sft-adapter runs/gemma3-270m-sft --grpo-adapter runs/gemma3-270m-grpo --output bench_training.json
    # the same comparison on llama.cpp (the chat default), with each adapter's adapter.gguf:
    python bench/bench_training.py --backend llamacpp --sft-adapter runs/gemma3-270m-sft \
        --grpo-adapter runs/gemma3-270m-grpo --output bench_training.json
    # smoke run on the tiny test model (seconds):
    python bench/bench_training.py --model DIR --sft-adapter A --grpo-adapter B --limit 4 --max-new-tokens 16

Prompts come from affectllm.prompting.build_messages (the builder the training rows use), answers are read by
affectllm.parsing.parse_answer and scored by affectllm.metrics (the evaluation code). Test splits are never read.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _subset(rows: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    if limit is None or limit >= len(rows):
        return rows
    return random.Random(seed).sample(rows, limit)


def load_dev_sets(root: Path, limit: int | None, seed: int, context_turns: int) -> dict[str, list[dict]]:
    from affectllm.datasets import load_dataset_rows

    meld = load_dataset_rows("meld", root / "meld", "dev", context_turns=context_turns)
    ovmerd = [r for r in load_dataset_rows("ovmerd", root / "ovmerd", "dev") if r.get("transcript")]
    return {"meld": _subset(meld, limit, seed), "ovmerd": _subset(ovmerd, limit, seed)}


def run_setting(
    backend: Any,
    sets: dict[str, list[dict]],
    few_shot: bool,
    max_new_tokens: int,
    batch_size: int,
) -> dict[str, Any]:
    from affectllm.backends import GenerationConfig
    from affectllm.datasets.friends import MELD_LABELS
    from affectllm.metrics.closed import closed_set_scores
    from affectllm.metrics.ov import score_ov
    from affectllm.parsing import parse_answer
    from affectllm.prompting import STOP_SEQUENCES, build_messages
    from affectllm.schema import Clip

    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, stop=list(STOP_SEQUENCES))
    labels = list(MELD_LABELS)

    def generate(conversations: list[list[dict]]) -> list[str]:
        out: list[str] = []
        for i in range(0, len(conversations), batch_size):
            out.extend(backend.generate(conversations[i : i + batch_size], config))
        return out

    start = time.perf_counter()
    meld_msgs = [
        build_messages(
            Clip(r["id"], [], transcript=r["transcript"]),
            task="closed",
            labels=labels,
            context=r.get("context") or None,
            few_shot=few_shot,
            speaker=r.get("speaker"),
        )
        for r in sets["meld"]
    ]
    meld_preds = [parse_answer(text, labels=labels) for text in generate(meld_msgs)]
    closed = closed_set_scores(
        references=[r["label"] for r in sets["meld"]],
        predictions=[p.emotions[0] if p.emotions else None for p in meld_preds],
        labels=labels,
    )

    ov_msgs = [
        build_messages(Clip(r["id"], [], transcript=r["transcript"]), task="ov", few_shot=few_shot)
        for r in sets["ovmerd"]
    ]
    ov_preds = [parse_answer(text) for text in generate(ov_msgs)]
    gold = {r["id"]: list(r["labels"]) for r in sets["ovmerd"]}
    pred = {r["id"]: list(p.emotions) for r, p in zip(sets["ovmerd"], ov_preds, strict=True)}
    ov = score_ov(references=gold, predictions=pred)
    answers = meld_preds + ov_preds
    floor = ov.get("floor") or {}
    return {
        "meld_weighted_f1": closed["weighted_f1"],
        "meld_accuracy": closed["accuracy"],
        "ew_l1_f": ov["l1"]["f"],
        "ew_l2_f": ov["l2"]["f"],
        "mean_labels_per_answer": sum(len(p.emotions) for p in ov_preds) / max(1, len(ov_preds)),
        # A policy that collapsed onto one answer shows here, and against the best constant answer below.
        "meld_top_answer_share": top_answer_share(meld_preds),
        "ov_top_answer_share": top_answer_share(ov_preds),
        "ew_constant_floor_l1_f": floor.get("l1", {}).get("f"),
        "ew_constant_floor_labels": floor.get("labels"),
        "format_ok": sum(p.format_ok for p in answers) / max(1, len(answers)),
        "n_meld": len(meld_preds),
        "n_ovmerd": len(ov_preds),
        "seconds": round(time.perf_counter() - start, 1),
    }


def top_answer_share(predictions: list[Any]) -> float:
    """The share of answers naming the most common emotion set (1.0: the same answer to every sample)."""
    counts = Counter(tuple(sorted(p.emotions)) for p in predictions)
    return max(counts.values()) / len(predictions) if predictions else 0.0


SETTING_ORDER = ("zero-shot base", "few-shot base", "SFT", "SFT+GRPO")


def settings(args: argparse.Namespace) -> list[tuple[str, str | None, bool]]:
    out = [("zero-shot base", None, False), ("few-shot base", None, True)]
    if args.sft_adapter:
        out.append(("SFT", args.sft_adapter, False))
    if args.grpo_adapter:
        out.append(("SFT+GRPO", args.grpo_adapter, False))
    for spec in args.adapter:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise SystemExit(f"--adapter takes NAME=PATH, not {spec!r}")
        out.append((name, path, False))
    return out


_IDENTITY = ("backend", "limit", "seed", "max_new_tokens", "context_turns")


def _payload(args: argparse.Namespace, model: str, results: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, **{key: getattr(args, key) for key in _IDENTITY}, "results": results}


def _earlier_results(args: argparse.Namespace, model: str) -> dict[str, dict[str, Any]]:
    """Settings already scored in ``--output`` by an earlier run on the same data and backend: a long
    comparison can run setting by setting (``--settings``) while adapters are still training."""
    if not args.output or not Path(args.output).is_file():
        return {}
    earlier = json.loads(Path(args.output).read_text(encoding="utf-8"))
    identity = {k: v for k, v in _payload(args, model, {}).items() if k != "results"}
    same = all(earlier.get(key) == value for key, value in identity.items())
    return dict(earlier.get("results", {})) if same else {}


def gguf_of(folder: Path) -> Path:
    """The folder's ``adapter.gguf``, refused when missing or older than the PEFT weights beside it: a run copied
    or resumed into a folder keeps the conversion of the weights it started from, and scoring that would
    silently report the old adapter."""
    gguf, weights = folder / "adapter.gguf", folder / "adapter_model.safetensors"
    convert = "convert it with llama.cpp's convert_lora_to_gguf.py (see tools/ship_default_adapter.py)"
    if not gguf.is_file():
        raise SystemExit(f"{folder}: no adapter.gguf for llama.cpp; {convert}")
    if weights.is_file() and gguf.stat().st_mtime < weights.stat().st_mtime:
        raise SystemExit(
            f"{gguf}: older than {weights.name}, so it is another adapter's conversion; {convert}"
        )
    return gguf


def backend_options(
    backend: str, model: str, adapter: str | None, batch_size: int, threads: int | None = None
) -> dict[str, Any]:
    """Options for ``get_backend``. llama.cpp reads the GGUF conversion (``adapter.gguf``) kept in an
    adapter folder; ``"none"`` keeps either backend from attaching the shipped default adapter to base runs."""
    if backend == "llamacpp":
        if adapter is not None and Path(adapter).is_dir():
            adapter = str(gguf_of(Path(adapter)))
        options = {"model": None if model == "embedded" else model, "adapter": adapter or "none"}
        return {**options, "n_threads": threads} if threads else options
    from affectllm.training.common import resolve_model_path

    return {"model": resolve_model_path(model), "adapter": adapter or "none", "batch_size": batch_size}


def markdown(results: dict[str, dict[str, Any]]) -> str:
    base = results.get("zero-shot base")
    cols = [
        ("meld_weighted_f1", "MELD-dev wF1"),
        ("ew_l1_f", "OV-MERD-dev EW L1 F"),
        ("ew_l2_f", "EW L2 F"),
        ("mean_labels_per_answer", "labels/answer"),
        ("ov_top_answer_share", "top OV answer share"),
        ("meld_top_answer_share", "top MELD answer share"),
        ("format_ok", "format ok"),
    ]
    lines = ["| setting | " + " | ".join(t for _, t in cols) + " | s |", "|---" * (len(cols) + 2) + "|"]
    order = {name: i for i, name in enumerate(SETTING_ORDER)}
    for name, r in sorted(results.items(), key=lambda item: order.get(item[0], len(order))):
        cells = []
        for key, _ in cols:
            value = r.get(key)
            if value is None:  # scored before the column existed
                cells.append("n/a")
                continue
            cell = f"{value:.3f}" if key != "mean_labels_per_answer" else f"{value:.2f}"
            if base is not None and r is not base and key in ("meld_weighted_f1", "ew_l1_f", "ew_l2_f"):
                cell += f" ({value - base[key]:+.3f})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
    floors = [r for r in results.values() if r.get("ew_constant_floor_l1_f") is not None]
    if floors:
        floor = floors[0]
        labels = ", ".join(floor["ew_constant_floor_labels"])
        lines.append(
            f"\nBest constant answer on this OV-MERD subset ({labels}): EW L1 F {floor['ew_constant_floor_l1_f']:.3f}."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded", help="base model dir / id ('embedded': Gemma 3 270M)")
    parser.add_argument(
        "--backend",
        choices=["transformers", "llamacpp"],
        default="transformers",
        help="transformers (PEFT adapters) or llamacpp (the GGUF base and each adapter's adapter.gguf)",
    )
    parser.add_argument(
        "--settings",
        help="comma-separated subset of the settings to run (default: all)",
    )
    parser.add_argument("--sft-adapter", help="the SFT LoRA adapter folder")
    parser.add_argument("--grpo-adapter", help="the SFT+GRPO LoRA adapter folder")
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="another adapter to score as setting NAME (repeatable), e.g. an earlier GRPO run",
    )
    parser.add_argument("--data-root", default=os.environ.get("AFFECTLLM_DATA", "../shared/data"))
    parser.add_argument("--limit", type=int, help="score a seeded random subset of each dev set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context-turns", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, help="llama.cpp threads (default: all cores; 1 when sharing a busy machine)"
    )
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)

    from affectllm.backends import get_backend

    model = args.model
    sets = load_dev_sets(Path(args.data_root), args.limit, args.seed, args.context_turns)
    print(
        f"dev rows: MELD {len(sets['meld'])}, OV-MERD {len(sets['ovmerd'])}; model {model}", file=sys.stderr
    )
    results: dict[str, dict[str, Any]] = {}
    wanted = {name.strip() for name in args.settings.split(",")} if args.settings else None
    results.update(_earlier_results(args, model))
    for name, adapter, few_shot in settings(args):
        if wanted is not None and name not in wanted:
            continue
        backend = get_backend(
            args.backend, **backend_options(args.backend, model, adapter, args.batch_size, args.threads)
        )
        try:
            results[name] = run_setting(backend, sets, few_shot, args.max_new_tokens, args.batch_size)
        finally:
            backend.close()
        results[name]["adapter"] = adapter
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
        if args.output:  # after every setting: a long comparison loses no finished setting
            Path(args.output).write_text(
                json.dumps(_payload(args, model, results), indent=2), encoding="utf-8"
            )
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
