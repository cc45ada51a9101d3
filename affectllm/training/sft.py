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

    from trl import SFTConfig, SFTTrainer

    model, base = load_lora_model(recipe, args)
    config = SFTConfig(output_dir=str(output_dir), **args)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    return train_and_save(trainer, recipe, base, output_dir, report.to_dict())
