"""GRPO with trl's ``GRPOTrainer`` and affectllm's rewards (emotion-wheel F, format, label count, grounding).

On a CPU the policy generates its own rollouts (plain ``generate``); on GPUs set ``trainer.use_vllm: true`` with
``vllm_mode: colocate`` (vLLM shares the training GPUs) or ``server`` (a separate ``trl vllm-serve`` process).
"""

from __future__ import annotations

import logging
from pathlib import Path

from affectllm.errors import InputError, require
from affectllm.rewards import build_rewards, reward_columns
from affectllm.training.common import (
    TrainResult,
    cuda_available,
    dataset_from_rows,
    load_lora_model,
    load_tokenizer,
    resolve_model_path,
    save_rows,
    train_and_save,
    trainer_defaults,
)
from affectllm.training.config import GRPORecipe
from affectllm.training.data import BuildReport, build_grpo_rows

log = logging.getLogger(__name__)

# Columns every GRPO row keeps besides the rewards' own (ids for the completion log).
_KEEP = ("prompt", "id", "dataset", "task")


def _check_generation(args: dict) -> None:
    if args.get("use_vllm"):
        if not cuda_available():
            raise InputError(
                None, "trainer.use_vllm needs CUDA GPUs; on a CPU leave it false (plain generation)"
            )
        require("vllm", "vllm", "GRPO generation with vLLM (trainer.use_vllm)")
        mode = args.get("vllm_mode", "colocate")
        if mode not in ("colocate", "server"):
            raise InputError(None, f"trainer.vllm_mode must be colocate or server, not {mode!r}")


def run_grpo(recipe: GRPORecipe, dry_run: bool = False) -> TrainResult:
    """Build the GRPO rows, train with the recipe's rewards and weights (resuming from the newest checkpoint
    when ``recipe.resume`` is "auto") and save the adapter with a model card into ``recipe.output_dir``."""
    output_dir = Path(recipe.output_dir).expanduser()
    output_dir.mkdir(parents=True, exist_ok=True)
    args = trainer_defaults(recipe)
    _check_generation(args)
    funcs, weights = build_rewards(recipe.rewards)

    base = resolve_model_path(recipe.model.name_or_path)
    tokenizer = load_tokenizer(base, recipe.model.chat_template_path, recipe.model.trust_remote_code)
    report = BuildReport()
    rows = build_grpo_rows(recipe.data, tokenizer, report=report)
    # Keep only what the rewards read: fewer columns, less to move between processes.
    keep = set(_KEEP) | reward_columns(recipe.rewards)
    rows = [{k: v for k, v in row.items() if k in keep} for row in rows]
    save_rows(rows, report.to_dict(), output_dir, "GRPO")
    if dry_run:
        return TrainResult(output_dir, output_dir, data=report.to_dict())
    dataset = dataset_from_rows(rows)

    from trl import GRPOConfig, GRPOTrainer

    model, base = load_lora_model(recipe, args)
    config = GRPOConfig(output_dir=str(output_dir), reward_weights=weights, **args)
    trainer = GRPOTrainer(
        model=model, reward_funcs=funcs, args=config, train_dataset=dataset, processing_class=tokenizer
    )
    return train_and_save(trainer, recipe, base, output_dir, report.to_dict())
