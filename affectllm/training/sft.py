"""LoRA supervised fine-tuning with trl's ``SFTTrainer`` on answers in the inference answer contract."""

from __future__ import annotations

import logging
from pathlib import Path

from affectllm.training.common import (
    TrainResult,
    dataset_from_rows,
    load_lora_model,
    load_tokenizer,
    resolve_model_path,
    save_rows,
    train_and_save,
    trainer_defaults,
)
from affectllm.training.config import SFTRecipe
from affectllm.training.data import BuildReport, build_sft_rows

log = logging.getLogger(__name__)


def run_sft(recipe: SFTRecipe, dry_run: bool = False) -> TrainResult:
    """Build the SFT rows, train (resuming from the newest checkpoint when ``recipe.resume`` is "auto") and
    save the adapter with a model card into ``recipe.output_dir``.

    ``dry_run`` builds and saves the training rows (``output_dir/train_rows.jsonl``) without loading trl's
    trainer, to inspect what a recipe would train on.
    """
    output_dir = Path(recipe.output_dir).expanduser()
    output_dir.mkdir(parents=True, exist_ok=True)
    base = resolve_model_path(recipe.model.name_or_path)
    tokenizer = load_tokenizer(base, recipe.model.chat_template_path, recipe.model.trust_remote_code)
    args = trainer_defaults(recipe)
    report = BuildReport()
    rows = build_sft_rows(recipe.data, tokenizer, max_length=args.get("max_length", 1024), report=report)
    save_rows(rows, report.to_dict(), output_dir, "SFT")
    if dry_run:
        return TrainResult(output_dir, output_dir, data=report.to_dict())
    dataset = dataset_from_rows(rows)

    from trl import SFTConfig

    model, base = load_lora_model(recipe, args)
    config = SFTConfig(output_dir=str(output_dir), **args)
    trainer = completion_logits_trainer_class()(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer
    )
    return train_and_save(trainer, recipe, base, output_dir, report.to_dict())


def completion_logits_trainer_class():
    """trl's ``SFTTrainer`` whose plain NLL loss, on a CPU, projects only the answer span through the output head.

    The loss only reads the logits of positions whose next token is a label (the answer: prompts are masked),
    so the model is asked for the last ``K`` positions (``logits_to_keep``), ``K`` reaching back to the earliest
    answer token in the batch. The result equals trl's loss; it is what makes CPU training affordable for
    Gemma 3, whose 262k-token output head outweighs its transformer body: measured on 2 CPU cores (2 rows of
    300 tokens, 50 answer tokens each, LoRA r=8), forward+backward takes 2.1 s this way, 4.4 s with full
    logits and 6.6 s with trl's tiled fused head (``python bench/bench_sft_step.py``). GPUs keep trl's fused
    Triton head (it never holds the answer logits), as do other loss settings (label smoothing, DFT, a custom
    ``compute_loss_func``, sequence parallelism).
    """
    import torch
    from trl import SFTTrainer

    class CompletionLogitsSFTTrainer(SFTTrainer):
        def _kept_logits_applies(self, inputs: dict) -> bool:
            return (
                self.args.device.type == "cpu"
                and self.args.loss_type == "nll"
                and self.label_smoother is None
                and self.compute_loss_func is None
                and not self.aux_loss_enabled
                and "labels" in inputs
                and "shift_labels" not in inputs
                and getattr(self.args, "parallelism_config", None) is None
            )

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not self._kept_logits_applies(inputs):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            labels = inputs["labels"]
            model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            model_inputs["use_cache"] = False
            # Position t's logits predict token t+1: keep from one position before the first label.
            targets = labels[:, 1:]
            has_label = (targets != -100).any(dim=0).nonzero()
            first = int(has_label[0]) if len(has_label) else targets.size(1) - 1
            keep = targets.size(1) - first
            logits = model(**model_inputs, logits_to_keep=keep + 1).logits[:, :-1].float()
            targets = targets[:, first:]
            mask = targets != -100
            per_token = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="none"
            )
            num_tokens = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = per_token.sum() / torch.as_tensor(num_tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            with torch.no_grad():
                # The same diagnostics trl logs, over answer tokens only.
                valid = logits[mask]
                log_p = torch.log_softmax(valid, dim=-1)
                entropy = -(log_p.exp() * log_p).sum(-1).sum()
                correct = (valid.argmax(-1) == targets[mask]).sum()
                n_valid = self.accelerator.gather_for_metrics(mask.sum()).sum()
                entropy = self.accelerator.gather_for_metrics(entropy).sum()
                correct = self.accelerator.gather_for_metrics(correct).sum()
                ok = n_valid > 0
                self._metrics[mode]["entropy"].append((entropy / n_valid).item() if ok else 0.0)
                self._metrics[mode]["mean_token_accuracy"].append((correct / n_valid).item() if ok else 0.0)
                if mode == "train" and "attention_mask" in inputs:
                    seen = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
                    self._total_train_tokens += seen // self._tp_size
                self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return CompletionLogitsSFTTrainer
