#!/usr/bin/env python
"""Package a trained LoRA adapter as affectllm's default (``affectllm/data/adapters/gemma3-270m-ov/``).

What ships, for every backend the embedded model runs on:
  adapter_config.json, adapter_model.safetensors   PEFT form (transformers, vLLM); weights stored as float16,
                                                   which PEFT casts back to the model's dtype on load
                                                   (``--rank K``: each module's update re-factored to rank K)
  adapter.gguf                                     llama.cpp form, converted by llama.cpp's own
                                                   convert_lora_to_gguf.py (float16)
  recipe-sft.yaml, recipe-grpo.yaml, training.json what was trained, on what, for how long
  README.md                                        the model card, with the dev-set comparison when given

llama.cpp's converter is not a PyPI package; it ships inside llama-cpp-python's source distribution:

    pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all: -d /tmp/lcpp
    python tools/ship_default_adapter.py --run runs/gemma3-270m-sft --stage 1-sft \\
        --llama-cpp /tmp/lcpp/llama_cpp_python-0.3.36.tar.gz --eval "after stage 1=runs/eval-stage1"

Each shipping adds a stage to ``training.json`` and the card (the adapter is trained in stages that continue
from the committed one); earlier stages' recipes stay beside it.

``--llama-cpp`` takes that tarball, or a llama.cpp source checkout (the folder with convert_lora_to_gguf.py).

``--rank K`` ships a rank-K approximation of each module's update (``reduce_rank``; with ``--data-root`` the one
that best keeps the module's outputs on the run's own training rows): a rank-16 LoRA on every projection of
Gemma 3 270M is 7.6 MB a file, over the 5 MB a committed file may take; rank 10 is 4.8 MB. The card's dev table
must then come from the reduced adapter (evaluate its GGUF before shipping).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET = ROOT / "affectllm" / "data" / "adapters" / "gemma3-270m-ov"
SIZE_LIMIT = 16 * 1024 * 1024  # what a source checkout should carry, in all (a rank-16 adapter: ~15 MB)
# The largest file the repository takes: each re-ship adds its files to git history for good.
FILE_LIMIT = 5 * 1024 * 1024
CONVERTER = "convert_lora_to_gguf.py"


def llama_cpp_source(path: Path, scratch: Path) -> Path:
    """The llama.cpp folder holding the converter: the given checkout, or extracted from an sdist tarball."""
    if path.is_dir():
        found = sorted(path.rglob(CONVERTER))
        if not found:
            raise SystemExit(f"{path}: no {CONVERTER} inside")
        return found[0].parent
    if not tarfile.is_tarfile(path):
        raise SystemExit(f"{path}: neither a llama.cpp folder nor a source tarball")
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name and m.isfile()]
        wanted = [
            m
            for m in members
            if m.name.endswith(".py") and "/tests/" not in m.name and "/examples/" not in m.name
        ]
        if not any(m.name.endswith("/" + CONVERTER) for m in wanted):
            raise SystemExit(f"{path}: the tarball holds no vendor/llama.cpp/{CONVERTER}")
        tar.extractall(scratch, members=wanted, filter="data")
    return next(scratch.rglob(CONVERTER)).parent


def half_precision_weights(source: Path, target: Path) -> None:
    """The adapter weights as float16: half the bytes; PEFT copies them into the model's dtype on load."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(str(source))
    save_file({k: v.to(torch.float16).contiguous() for k, v in weights.items()}, str(target))


def reduce_rank(
    weights: dict[str, Any],
    config: dict[str, Any],
    rank: int,
    input_moments: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """Each module's LoRA update ``ΔW = B @ A`` replaced by a rank-``rank`` one, as new factors ``B'``, ``A'``.

    Without ``input_moments``: the best approximation in Frobenius norm (truncated SVD, Eckart-Young). With
    them (``{module: E[x xᵀ]}`` of the module's inputs, from :func:`input_second_moments`): the one that best
    keeps the module's *outputs*, minimising ``E‖(ΔW − ΔW')x‖²``. With ``C = L Lᵀ`` that is the truncated SVD of
    ``ΔW L``, mapped back by ``L⁻¹`` (the whitening of SVD-LLM, Wang et al. 2024). Why: a truncated SVD spends
    its rank on directions the model's activations never take; on the shipped adapter at rank 10 it keeps 94 %
    of the weights' energy, the whitened one 99 % of the outputs' energy.

    The model applies ``(alpha / r) · ΔW``; ``lora_alpha`` is rescaled with ``r`` so that factor stays. Returns
    the weights, the config and the share of the energy kept (of the outputs with ``input_moments``, else of
    the weights): the mean and the smallest over the modules. Raises ``ValueError`` for an adapter this cannot
    reduce exactly (per-module ranks or alphas, rsLoRA scaling, DoRA magnitudes, trained extra weights)."""
    import torch

    if rank < 1:
        raise ValueError("rank must be at least 1")
    unsupported = [
        key
        for key in ("rank_pattern", "alpha_pattern", "use_rslora", "use_dora", "modules_to_save")
        if config.get(key)
    ]
    if unsupported or any(".lora_A." not in k and ".lora_B." not in k for k in weights):
        raise ValueError(
            f"cannot reduce this adapter's rank exactly (it uses {unsupported or 'extra weights'})"
        )
    if rank > int(config["r"]):
        raise ValueError(f"rank {rank} is above the adapter's own rank {config['r']}")
    reduced: dict[str, Any] = {}
    kept: list[float] = []
    for key_a in (k for k in weights if ".lora_A." in k):
        module = key_a.split(".lora_A.")[0]
        key_b = key_a.replace(".lora_A.", ".lora_B.")
        # float64: the singular values of a rank-16 product span several orders of magnitude.
        update = weights[key_b].double() @ weights[key_a].double()
        root_moment = None
        if input_moments is not None:
            if module not in input_moments:
                raise ValueError(f"no input statistics for {module}")
            moment = input_moments[module].double()
            # A little damping keeps L invertible along directions the calibration text never excites.
            moment = moment + 1e-2 * moment.diagonal().mean() * torch.eye(len(moment), dtype=moment.dtype)
            root_moment = torch.linalg.cholesky(moment)
            update = update @ root_moment
        u, s, vh = torch.linalg.svd(update, full_matrices=False)
        root = s[:rank].sqrt()
        new_a = root[:, None] * vh[:rank]
        if root_moment is not None:
            new_a = torch.linalg.solve_triangular(root_moment, new_a, upper=False, left=False)  # new_a @ L⁻¹
        reduced[key_b] = (u[:, :rank] * root).to(weights[key_b].dtype).contiguous()
        reduced[key_a] = new_a.to(weights[key_a].dtype).contiguous()
        energy = float((s**2).sum())
        kept.append(float((s[:rank] ** 2).sum()) / energy if energy > 0 else 1.0)
    scale = float(config["lora_alpha"]) / int(config["r"])
    new_config = {**config, "r": rank, "lora_alpha": scale * rank}
    return reduced, new_config, {"energy_kept_mean": sum(kept) / len(kept), "energy_kept_min": min(kept)}


def input_second_moments(run: Path, method: str, data_root: Path, rows: int, seed: int = 1) -> dict[str, Any]:
    """``E[x xᵀ]`` of every LoRA module's input, with the run's adapter active, over ``rows`` of the run's own
    training rows (its ``method`` recipe's data, shuffled with ``seed``: prompt and answer for SFT, the prompt
    for GRPO). Keys are the PEFT module names the adapter's weight keys start with. No evaluation data is read."""
    import random

    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    from affectllm.training.common import load_base_model, load_tokenizer
    from affectllm.training.config import load_recipe
    from affectllm.training.data import build_grpo_rows, build_sft_rows

    recipe = load_recipe(run / "recipe.yaml", method, overrides=[("data.root", str(data_root))])
    sample = (build_sft_rows if method == "sft" else build_grpo_rows)(recipe.data)
    random.Random(seed).shuffle(sample)
    model_args = dataclasses.replace(recipe.model, dtype="float32")
    model, path, _ = load_base_model(model_args, training=False)
    tokenizer = load_tokenizer(path, recipe.model.chat_template_path)
    model = PeftModel.from_pretrained(model, str(run)).eval()
    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def accumulate(name: str):
        def hook(_module: Any, inputs: tuple[Any, ...], _output: Any) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            sums[name] = sums.get(name, 0) + (x.T @ x).double()
            counts[name] = counts.get(name, 0) + x.shape[0]

        return hook

    hooks = [
        m.register_forward_hook(accumulate(n)) for n, m in model.named_modules() if isinstance(m, LoraLayer)
    ]
    try:
        with torch.no_grad():
            for row in sample[:rows]:
                messages = row["prompt"] + row.get("completion", [])
                text = tokenizer.apply_chat_template(messages, tokenize=False)
                ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
                # One position's logits: those over a 262k vocabulary at every position would cost most of the pass.
                model(**ids, logits_to_keep=1)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: total / counts[name] for name, total in sums.items()}


def reduced_copy(
    run: Path, method: str, rank: int, out: Path, data_root: Path | None, rows: int
) -> dict[str, float]:
    """``run``'s adapter at ``rank`` (``reduce_rank``, whitened by ``rows`` training rows when ``data_root`` is
    given), written as a PEFT folder ``out``; returns what was kept."""
    from safetensors.torch import load_file, save_file

    config = json.loads((run / "adapter_config.json").read_text(encoding="utf-8"))
    moments = input_second_moments(run, method, data_root, rows) if data_root is not None else None
    weights, config, kept = reduce_rank(
        load_file(str(run / "adapter_model.safetensors")), config, rank, moments
    )
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"whitened_by_rows": rows if moments is not None else 0, **kept}


def convert_to_gguf(adapter: Path, llama_cpp: Path, out: Path) -> None:
    from affectllm.models import ensure_gemma_hf

    command = [
        sys.executable,
        str(llama_cpp / CONVERTER),
        "--base",
        str(ensure_gemma_hf()),
        "--outtype",
        "f16",
        "--outfile",
        str(out),
        str(adapter),
    ]
    env = {**os.environ, "PYTHONPATH": str(llama_cpp / "gguf-py") + os.pathsep + str(llama_cpp)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"{CONVERTER} failed:\n{done.stderr[-3000:]}")


def _summary(run: Path) -> dict[str, Any]:
    path = run / "training_summary.json"
    if not path.is_file():
        raise SystemExit(f"{run}: no training_summary.json (is this a finished affectllm training run?)")
    return json.loads(path.read_text(encoding="utf-8"))


def rows_seen(run: Path, summary: dict[str, Any]) -> int:
    """Rows (SFT) or prompts x generations (GRPO) the optimizer saw: steps x batch x accumulation."""
    import yaml

    trainer = (yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8")) or {}).get("trainer", {})
    batch = int(trainer.get("per_device_train_batch_size", 8)) * int(
        trainer.get("gradient_accumulation_steps", 1)
    )
    return int(summary["global_step"]) * batch


def _history(target: Path) -> list[dict[str, Any]]:
    """Earlier stages of the shipped adapter (``training.json``), oldest first; the first release's
    ``{"sft", "grpo"}`` form reads as two stages."""
    path = target / "training.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    if "stages" in data:
        return list(data["stages"])
    return [
        {"stage": f"0-{method}", "method": method, "recipe": f"recipe-{method}.yaml", "summary": data[method]}
        for method in ("sft", "grpo")
        if method in data
    ]


def _eval_table(folder: Path) -> list[str]:
    """The dev table of an ``affectllm eval run --tasks ... -o FOLDER`` run (its results.json)."""
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))

    def fmt(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, (int, float)) else "–"

    lines = [
        "| task | n | primary | value | best constant answer | emotions/answer | top answer share (gold) | "
        "rationale items citing a shown id |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        s, p = r["summary"], r["primary"]
        floor = s.get("floor") or {}
        lines.append(
            f"| {name} | {s.get('n')} | {p['metric']}:{p['key']} | **{fmt(p['value'])}** | {fmt(floor.get('value'))} "
            f"| {fmt(s.get('labels_per_answer'))} | {fmt(s.get('top_answer_share'))} ({fmt(s.get('gold_top_share'))}) "
            f"| {fmt(s.get('cited_share'))} |"
        )
    return lines


def model_card(
    stages: list[dict[str, Any]],
    evals: list[tuple[str, Path]],
    eval_command: str,
    sizes: dict,
    note: str = "",
) -> str:
    def metric(summary: dict[str, Any], key: str) -> str:
        value = summary.get("metrics", {}).get(key)
        return "n/a" if value is None else f"{value:.4g}"

    lines = [
        "---",
        "base_model: google/gemma-3-270m",
        "library_name: peft",
        "license: apache-2.0",
        "tags: [affectllm, emotion-recognition, open-vocabulary, lora, sft, grpo]",
        "---",
        "",
        "# affectllm default adapter: Gemma 3 270M, LoRA",
        "",
        "The adapter affectllm's embedded default model (Gemma 3 270M, the Q4_K_M GGUF shipped on PyPI) loads",
        "unless `--adapter none` is given. It answers in affectllm's contract: open-vocabulary emotions and a",
        "rationale citing the clip's evidence lines. A 270M model is a laptop default, not a strong recogniser;",
        "see the dev-set table for what it does. Trained with `affectllm train` in stages that each continue",
        "from the adapter the stage before committed, on a 2-core CPU (stage 3 on one GPU: `train/offline_gpu_stage.sh`).",
        "",
        "## Training stages (oldest first)",
    ]
    for stage in stages:
        summary = stage["summary"]
        kept = summary.get("data", {}).get("kept", {})
        lines.append(
            f"- **{stage['stage']}** ({stage['method'].upper()}, recipe `{stage['recipe']}`): "
            f"{summary.get('global_step')} optimizer steps, {summary.get('wall_time_s', 0) / 60:.0f} min wall, "
            f"final loss {metric(summary, 'loss')}"
            + (f", {stage['rows_seen']} rows seen" if stage.get("rows_seen") else "")
            + (f"; built from {', '.join(f'{k} {v}' for k, v in sorted(kept.items()))}" if kept else "")
            + (f". {stage['note']}" if stage.get("note") else "")
        )
    lines += [
        "",
        "Summaries with every logged value: `training.json`. OV-MERD and EMER clips (the dev gold) are held out",
        "of all training rows; no test split is read.",
        "",
        *([note.strip(), ""] if note.strip() else []),
        "## Files",
        f"- `adapter_model.safetensors` + `adapter_config.json` (PEFT, float16): {sizes['peft'] / 1e6:.1f} MB",
        f"- `adapter.gguf` (llama.cpp LoRA, float16, from llama.cpp's {CONVERTER}): {sizes['gguf'] / 1e6:.1f} MB",
    ]
    reduction = stages[-1].get("rank_reduction") if stages else None
    if reduction:
        how = (
            f"the one that best keeps its outputs on {reduction['whitened_by_rows']} of its training rows "
            "(whitened SVD)"
            if reduction.get("whitened_by_rows")
            else "its best approximation in Frobenius norm (truncated SVD)"
        )
        lines.append(
            f"- Rank {reduction['rank']}: each module's trained update was replaced by {how}, with "
            f"`tools/ship_default_adapter.py --rank`, keeping {reduction['energy_kept_mean']:.1%} of the energy "
            f"on average (at least {reduction['energy_kept_min']:.1%}); the dev tables below were measured on "
            "the reduced files."
        )
    for title, folder in evals:
        lines += ["", f"## Dev set: {title}", "", *_eval_table(folder)]
    if evals:
        lines += ["", "Produced by the user-facing command (dev splits, the first N samples of each task):", "",
                  "```", eval_command, "```"]  # fmt: skip
    lines += [
        "",
        "## Licence",
        "The adapter is Apache-2.0 (affectllm). It modifies Gemma 3, whose use is governed by the Gemma Terms of",
        "Use; the training data's own terms are in `data_cards/`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the training run (or checkpoint) to ship")
    parser.add_argument("--stage", required=True, help="a name for this stage in the card (e.g. 1-sft)")
    parser.add_argument("--llama-cpp", type=Path, required=True, help="llama.cpp folder or sdist tarball")
    parser.add_argument(
        "--eval", action="append", default=[], metavar="TITLE=DIR", help="an `eval run --tasks` output folder"
    )
    parser.add_argument("--eval-command", default="", help="the eval run command line, for the card")
    parser.add_argument("--target", type=Path, default=TARGET)
    parser.add_argument("--note", default="", help="a paragraph for the card (how the runs went)")
    parser.add_argument("--stage-note", default="", help="a sentence on this stage")
    parser.add_argument("--rank", type=int, help="ship each module's update at this lower rank (reduce_rank)")
    parser.add_argument(
        "--data-root",
        type=Path,
        help="with --rank: the datasets folder; the reduction then keeps each module's outputs on "
        "--calibration-rows of the run's own training rows (whitened SVD)",
    )
    parser.add_argument("--calibration-rows", type=int, default=64, help="training rows --data-root reads")
    args = parser.parse_args(argv)
    if args.data_root is not None and not args.rank:
        parser.error("--data-root only serves --rank")

    summary = _summary(args.run)
    stages = _history(args.target)
    method = str(summary.get("method") or "sft")
    recipe_name = f"recipe-{args.stage}.yaml"
    stages.append(
        {
            "stage": args.stage,
            "method": method,
            "recipe": recipe_name,
            "rows_seen": rows_seen(args.run, summary),
            "note": args.stage_note,
            "summary": summary,
        }
    )
    evals = []
    for spec in args.eval:
        title, _, folder = spec.partition("=")
        evals.append((title, Path(folder)))
    staging = args.target.with_name(args.target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # Earlier stages' recipes stay beside the adapter: the card names them.
    for old in args.target.glob("recipe-*.yaml") if args.target.is_dir() else []:
        shutil.copy2(old, staging / old.name)
    with tempfile.TemporaryDirectory() as scratch:
        adapter = args.run
        if args.rank:
            adapter = Path(scratch) / "reduced"
            kept = reduced_copy(args.run, method, args.rank, adapter, args.data_root, args.calibration_rows)
            stages[-1]["rank_reduction"] = {"rank": args.rank, **kept}
        llama_cpp = llama_cpp_source(args.llama_cpp, Path(scratch) / "llama.cpp")
        convert_to_gguf(adapter, llama_cpp, staging / "adapter.gguf")
        shutil.copy2(adapter / "adapter_config.json", staging / "adapter_config.json")
        half_precision_weights(adapter / "adapter_model.safetensors", staging / "adapter_model.safetensors")
    shutil.copy2(args.run / "recipe.yaml", staging / recipe_name)
    (staging / "training.json").write_text(json.dumps({"stages": stages}, indent=2) + "\n", encoding="utf-8")
    sizes = {
        "peft": sum(
            (staging / n).stat().st_size for n in ("adapter_model.safetensors", "adapter_config.json")
        ),
        "gguf": (staging / "adapter.gguf").stat().st_size,
    }
    (staging / "README.md").write_text(
        model_card(stages, evals, args.eval_command, sizes, args.note), encoding="utf-8"
    )
    total = sum(p.stat().st_size for p in staging.iterdir())
    too_large = [p.name for p in staging.iterdir() if p.stat().st_size > FILE_LIMIT]
    if too_large:
        raise SystemExit(
            f"{staging}: {', '.join(too_large)} over the {FILE_LIMIT / 2**20:.0f} MiB a file may take (try --rank)"
        )
    if total > SIZE_LIMIT:
        raise SystemExit(f"{staging}: {total / 1e6:.1f} MB is over the {SIZE_LIMIT / 1e6:.0f} MB budget")
    shutil.rmtree(args.target, ignore_errors=True)
    staging.rename(args.target)
    print(f"{args.target}: {total / 1e6:.1f} MB ({', '.join(sorted(p.name for p in args.target.iterdir()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
