"""LoRA supervised fine-tuning with trl's ``SFTTrainer`` on answers in the inference answer contract."""

from __future__ import annotations

import logging
from pathlib import Path

from affectllm.training.common import (
    TrainResult,
    WallClock,
    dataset_from_rows,
    is_main_process,
    load_base_model,
    load_tokenizer,
    log_history_metrics,
    resolve_model_path,
    resolve_resume,
    save_run,
    trainer_defaults,
    wrap_lora,
)
from affectllm.training.config import SFTRecipe
from affectllm.training.data import BuildReport, build_sft_rows, write_rows

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
    log.info("SFT rows: %s", report.to_dict())
    if is_main_process():
        write_rows(rows, output_dir / "train_rows.jsonl")
    if dry_run:
        return TrainResult(output_dir, output_dir, data=report.to_dict())
    dataset = dataset_from_rows(rows)

    from trl import SFTConfig, SFTTrainer

    model, base, kind = load_base_model(recipe.model)
    model = wrap_lora(model, recipe, kind, bool(args.get("gradient_checkpointing")))
    config = SFTConfig(output_dir=str(output_dir), **args)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    resume = resolve_resume(recipe.resume, output_dir)
    if resume:
        log.info("resuming from %s", resume)
    clock = WallClock(output_dir, resuming=bool(resume))
    if is_main_process():
        trainer.add_callback(clock.callback())
    train_output = trainer.train(resume_from_checkpoint=resume)
    if is_main_process():
        clock.save()
    result = TrainResult(
        output_dir=output_dir,
        adapter_dir=output_dir,
        metrics={**log_history_metrics(trainer), **dict(train_output.metrics)},
        wall_time_s=clock.total(),
        global_step=int(trainer.state.global_step),
        data=report.to_dict(),
    )
    save_run(trainer, recipe, base, result)
    return result
