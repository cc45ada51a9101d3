#!/usr/bin/env python
"""GRPO cost per prompt on a CPU: generated rollouts (trl's GRPOTrainer) against candidate-set rollouts
(``rollouts.kind: candidates``), in the same process, on the embedded Gemma 3 270M with the shipped adapter, the
same prompts (MER2023 training rows in the OV-MERD prompt form) and the same reward (emotion-wheel F).

    python bench/bench_grpo_rollouts.py --data-root ../shared/data
    python bench/bench_grpo_rollouts.py --data-root ../shared/data --steps 3 --json bench/results/grpo_rollouts.json

Each trainer runs ``--steps`` optimizer steps of 2 prompts: 4 generated answers a prompt (the stage-5 recipe's
setting), or 16 candidate sets a prompt (the stage-6 recipe's). Prints the seconds per prompt and per rollout of
each, and the ratio of the generated to the candidate-set cost (> 1: candidate sets are cheaper per prompt).
The candidate-set time includes scoring the frozen reference once per prompt (beta > 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS_PER_STEP = 2
SOURCE = {
    "dataset": "mer2023",
    "data_dir": "mer2023",
    "split": "train",
    "eval_task": "ovmerd-ov-subtitle",
    "limit": 40,
}
HOLDOUT = [{"dataset": "ovmerd", "split": "all"}, {"dataset": "emer", "split": "all"}]


def _recipe(out: Path, data_root: str, steps: int, candidates: bool):
    from affectllm.training.config import load_recipe

    trainer = {"max_steps": steps, "learning_rate": 1e-5, "logging_steps": 1, "save_steps": 1000}
    overrides: dict = {
        "model": {"name_or_path": "embedded", "dtype": "float32"},
        "init_adapter": str(ROOT / "affectllm" / "data" / "adapters" / "gemma3-270m-ov"),
        "data": {"root": data_root, "sources": [SOURCE], "holdout": HOLDOUT, "seed": 7},
        "rewards": {"ew_f1": {"levels": [1, 2]}},
        "output_dir": str(out),
        "resume": False,
    }
    if candidates:
        overrides["rollouts"] = {"kind": "candidates"}
        overrides["trainer"] = {
            **trainer,
            "per_device_train_batch_size": PROMPTS_PER_STEP,
            "num_generations": 16,
            "beta": 0.5,
        }
    else:
        overrides["trainer"] = {
            **trainer,
            "per_device_train_batch_size": PROMPTS_PER_STEP * 4,
            "num_generations": 4,
            "max_completion_length": 128,
            "temperature": 1.0,
            "beta": 0.0,
            "loss_type": "dapo",
        }
    return load_recipe(None, "grpo", overrides)


def _run(name: str, recipe) -> dict:
    from affectllm.training.grpo import run_grpo

    result = run_grpo(recipe)
    seconds = float(result.metrics["train_runtime"])
    prompts = result.global_step * PROMPTS_PER_STEP
    rollouts = prompts * (16 if name == "candidate sets" else 4)
    return {
        "steps": result.global_step,
        "prompts": prompts,
        "rollouts": rollouts,
        "train_runtime_s": round(seconds, 1),
        "s_per_prompt": round(seconds / prompts, 2),
        "s_per_rollout": round(seconds / rollouts, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("AFFECTLLM_DATA", "../shared/data"))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, candidates in (("generated", False), ("candidate sets", True)):
            recipe = _recipe(Path(tmp) / name.replace(" ", "-"), args.data_root, args.steps, candidates)
            figures[name] = _run(name, recipe)
            print(f"{name:15s} {figures[name]}", flush=True)
    ratio = figures["generated"]["s_per_prompt"] / figures["candidate sets"]["s_per_prompt"]
    figures["generated_over_candidate_s_per_prompt"] = round(ratio, 2)
    print(f"generated / candidate-set seconds per prompt: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
