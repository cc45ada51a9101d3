"""GRPO with trl's ``GRPOTrainer`` and affectllm's rewards (emotion-wheel F, format, label count, grounding).

``rollouts.kind: candidates`` trains the candidate distribution ranked decoding reads instead
(``affectllm.training.ranked_grpo``).

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
            # trl hands the policy's weights to vLLM over NCCL in both modes; its client refuses a CPU device
            # (docs/training.md, "Multi-process and sharded training").
            raise InputError(
                None,
                "trainer.use_vllm needs CUDA GPUs: trl syncs the policy's weights to vLLM over NCCL; on a CPU "
                "leave it false (plain generation)",
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
    candidates = recipe.rollouts.kind == "candidates"
    if not candidates:
        _check_generation(args)

    base = resolve_model_path(recipe.model.name_or_path)
    tokenizer = load_tokenizer(base, recipe.model.chat_template_path, recipe.model.trust_remote_code)
    report = BuildReport()
    rows = build_grpo_rows(recipe.data, tokenizer, report=report)
    # Keep only what the rewards read: fewer columns, less to move between processes.
    keep = set(_KEEP) | reward_columns(recipe.rewards)
    rows = [{k: v for k, v in row.items() if k in keep} for row in rows]
    if candidates:
        from affectllm.training.ranked_grpo import check_rows

        check_rows(rows)
    save_rows(rows, report.to_dict(), output_dir, "GRPO")
    if dry_run:
        return TrainResult(output_dir, output_dir, data=report.to_dict())
    if candidates:
        from affectllm.training.ranked_grpo import train_candidate_grpo

        return train_candidate_grpo(recipe, rows, tokenizer, output_dir, report.to_dict())
    dataset = dataset_from_rows(rows)
    funcs, weights = build_rewards(recipe.rewards)

    from trl import GRPOConfig

    model, base = load_lora_model(recipe, args)
    config = GRPOConfig(output_dir=str(output_dir), reward_weights=weights, **args)
    trainer = cpu_logits_trainer_class()(
        model=model, reward_funcs=funcs, args=config, train_dataset=dataset, processing_class=tokenizer
    )
    return train_and_save(trainer, recipe, base, output_dir, report.to_dict())


def cpu_logits_trainer_class():
    """trl's ``GRPOTrainer`` scoring completions on a CPU through the model's own output head.

    trl scores completion tokens with a fused, tiled output head; without Triton (on a CPU) that head runs every
    position of prompt + completion through all 262k vocabulary columns of Gemma 3, in chunks, again in the
    backward pass. Asking the model for the completion positions only (``logits_to_keep``) gives the same
    log-probabilities at a fraction of the cost (for SFT the same change measured 2.1 s against 6.6 s per
    step, see ``affectllm.training.sft``). GPUs, multimodal inputs and MoE auxiliary losses keep trl's path.
    """
    import torch
    from trl import GRPOTrainer

    class CPULogitsGRPOTrainer(GRPOTrainer):
        def _get_per_token_logps_and_entropies(
            self,
            model,
            input_ids,
            attention_mask,
            logits_to_keep,
            batch_size=None,
            compute_entropy=False,
            compute_aux_loss=False,
            **media,
        ):
            if (
                input_ids.device.type != "cpu"
                or compute_aux_loss
                or any(v is not None for v in media.values())
            ):
                return super()._get_per_token_logps_and_entropies(
                    model,
                    input_ids,
                    attention_mask,
                    logits_to_keep,
                    batch_size=batch_size,
                    compute_entropy=compute_entropy,
                    compute_aux_loss=compute_aux_loss,
                    **media,
                )
            batch_size = batch_size or input_ids.size(0)
            all_logps, all_entropies = [], []
            for start in range(0, input_ids.size(0), batch_size):
                ids = input_ids[start : start + batch_size]
                mask = attention_mask[start : start + batch_size]
                # Position t's logits predict token t+1: one extra position reaches the first completion token.
                with self.accelerator.autocast():
                    logits = model(
                        input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1, use_cache=False
                    ).logits
                log_probs = (logits[:, :-1].float() / self.temperature).log_softmax(dim=-1)
                targets = ids[:, -logits_to_keep:].unsqueeze(-1)
                all_logps.append(log_probs.gather(-1, targets).squeeze(-1))
                if compute_entropy:
                    with torch.no_grad():
                        all_entropies.append(-(log_probs.exp() * log_probs).sum(dim=-1))
            entropies = torch.cat(all_entropies) if compute_entropy else None
            return torch.cat(all_logps), entropies, None

    return CPULogitsGRPOTrainer
