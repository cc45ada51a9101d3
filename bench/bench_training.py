"""Does training help? The same base model zero-shot, few-shot, after SFT and after SFT+GRPO — on dev data only.

Each setting runs the dev tasks meld-closed-context and ovmerd-ov-subtitle through ``affectllm.tasks.run_task``,
the code of ``affectllm eval run``: the same prompts, parser and metrics, the first ``--limit`` samples.

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

Nothing here builds a prompt or scores an answer its own way. Test splits are never read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# The dev tasks this comparison runs, exactly as `affectllm eval run --task NAME` runs them.
TASKS = {"meld": "meld-closed-context", "ovmerd": "ovmerd-ov-subtitle"}


def run_setting(
    adapter: str | None, few_shot: bool, args: argparse.Namespace, out_dir: Path
) -> dict[str, Any]:
    """One setting on the dev tasks through ``affectllm.tasks.run_task`` — the code behind ``affectllm eval
    run``, with its prompts, parser and metrics — so every number here is what that command prints for the same
    ``--limit`` (the first N dev samples)."""
    from affectllm.reasoner import load_reasoner
    from affectllm.tasks import dataset_folder, generation_config, load_task, run_task, task_rows

    start = time.perf_counter()
    out: dict[str, Any] = {}
    options = backend_options(args.backend, args.model, adapter, args.batch_size, args.threads)
    for key, name in TASKS.items():
        task = load_task(name)
        data_dir = dataset_folder(args.data_root, task.dataset)
        rows = task_rows(task, data_dir, limit=args.limit)
        reasoner = load_reasoner(
            args.backend,
            task=task,
            generation=generation_config(task, {"max_new_tokens": args.max_new_tokens}),
            few_shot=-1 if few_shot else 0,
            **options,
        )
        try:
            result = run_task(
                task, data_dir, out_dir / name, reasoner, limit=args.limit, batch_size=args.batch_size,
                progress=False, identity={"adapter": adapter, "model": args.model, "few_shot": few_shot},
                overwrite=True, rows=rows,
            )  # fmt: skip
        finally:
            reasoner.backend.close()
        metrics, summary = result.metrics["metrics"], result.metrics["summary"]
        out[f"n_{key}"] = result.n_samples
        out[f"{key}_top_answer_share"] = summary["top_answer_share"]
        out[f"{key}_gold_top_share"] = summary["gold_top_share"]
        out[f"{key}_cited_share"] = summary["cited_share"]
        out[f"{key}_floor"] = (summary.get("floor") or {}).get("value")
        if key == "meld":
            out["meld_weighted_f1"] = metrics["closed_set"]["weighted_f1"]
            out["meld_accuracy"] = metrics["closed_set"]["accuracy"]
        else:
            out["ew_l1_f"] = metrics["ew"]["l1"]["f"]
            out["ew_l2_f"] = metrics["ew"]["l2"]["f"]
            out["mean_labels_per_answer"] = summary["labels_per_answer"]
            floor = metrics["ew"].get("floor") or {}
            out["ew_constant_floor_l1_f"] = (floor.get("l1") or {}).get("f")
            out["ew_constant_floor_labels"] = floor.get("labels")
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


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


def _identity(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "backend": args.backend,
        "limit": args.limit,
        "max_new_tokens": args.max_new_tokens,
    }


def _earlier_results(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Settings already scored in ``--output`` by an earlier run on the same data and backend: a long
    comparison can run setting by setting (``--settings``) while adapters are still training."""
    if not args.output or not Path(args.output).is_file():
        return {}
    earlier = json.loads(Path(args.output).read_text(encoding="utf-8"))
    same = all(earlier.get(key) == value for key, value in _identity(args).items())
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
        ("ovmerd_top_answer_share", "top OV answer share"),
        ("meld_top_answer_share", "top MELD answer share"),
        ("ovmerd_cited_share", "OV cited share"),
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
    parser.add_argument("--limit", type=int, help="score the first N samples of each dev task (as eval run)")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--runs-dir", default="runs/bench_training", help="where each task run's files go")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, help="llama.cpp threads (default: all cores; 1 when sharing a busy machine)"
    )
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)

    results = _earlier_results(args)
    wanted = {name.strip() for name in args.settings.split(",")} if args.settings else None
    for name, adapter, few_shot in settings(args):
        if wanted is not None and name not in wanted:
            continue
        folder = Path(args.runs_dir) / name.replace(" ", "-").replace("+", "-")
        results[name] = {**run_setting(adapter, few_shot, args, folder), "adapter": adapter}
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
        if args.output:  # after every setting: a long comparison loses no finished setting
            payload = {**_identity(args), "results": results}
            Path(args.output).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
