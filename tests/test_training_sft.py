"""A few real LoRA SFT steps on the tiny random LM: adapter saved, loss finite, resumable; LoRA targets."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from affectllm.errors import InputError
from affectllm.training.config import load_recipe

ROWS = [
    {"id": "a1", "transcript": "I got the job!", "labels": ["happy", "excited"]},
    {"id": "a2", "transcript": "Leave me alone.", "labels": ["angry"]},
    {
        "id": "a3",
        "transcript": "He is gone.",
        "labels": ["sad"],
        "context": [{"speaker": "Ann", "text": "Why?"}],
    },
    {"id": "a4", "transcript": "What? Really?", "labels": ["surprised"]},
]


def tiny_recipe(tmp_path: Path, model_dir: Path, method: str = "sft", **trainer):
    data = tmp_path / "mine"
    data.mkdir(exist_ok=True)
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
    overrides = {
        "model": {"name_or_path": str(model_dir), "dtype": "float32"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {
            "root": str(tmp_path),
            "sources": [{"dataset": "manifest", "data_dir": "mine", "task": "ov"}],
        },
        "trainer": {
            "max_steps": 2,
            "per_device_train_batch_size": 2,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_steps": 1,
            **trainer,
        },
        "output_dir": str(tmp_path / f"out-{method}"),
    }
    return load_recipe(None, method, overrides)


def lora_b_norm(adapter_dir: Path) -> float:
    from safetensors.torch import load_file

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return sum(float(t.abs().sum()) for k, t in weights.items() if "lora_B" in k)


def test_sft_steps_save_adapter_card_and_resume(tmp_path, tiny_lm_dir, caplog):
    from affectllm.training.sft import run_sft

    recipe = tiny_recipe(tmp_path, tiny_lm_dir, max_length=2048)
    result = run_sft(recipe)
    out = Path(recipe.output_dir)
    assert result.global_step == 2
    assert math.isfinite(result.metrics["train_loss"]) and result.metrics["train_loss"] > 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    # LoRA B starts at zero: non-zero weights show the optimizer really stepped.
    assert lora_b_norm(out) > 0
    assert not (out / "training_args.bin").exists()  # no pickle beside the shipped adapter
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "SFT LoRA adapter" in card and "manifest:train: 4 rows" in card and "optimizer steps: 2" in card
    assert load_recipe(out / "recipe.yaml", "sft") == recipe
    summary = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["data"]["total"] == 4
    assert len((out / "train_rows.jsonl").read_text(encoding="utf-8").splitlines()) == 4

    # Asking for one more step resumes from checkpoint-2 instead of starting over.
    recipe.trainer["max_steps"] = 3
    with caplog.at_level(logging.INFO, logger="affectllm.training"):
        again = run_sft(recipe)
    assert any("resuming from" in r.message and "checkpoint-2" in r.message for r in caplog.records)
    assert again.global_step == 3
    assert again.wall_time_s >= result.wall_time_s  # summed over the resumed segments


def test_max_wall_minutes_stops_and_saves_at_the_first_step_past_the_limit(tmp_path, tiny_lm_dir, caplog):
    from affectllm.training.sft import run_sft

    recipe = tiny_recipe(tmp_path, tiny_lm_dir, max_length=2048, max_steps=50, save_steps=100)
    recipe.max_wall_minutes = 1e-6  # already past after the first step
    with caplog.at_level(logging.INFO, logger="affectllm.training"):
        result = run_sft(recipe)
    out = Path(recipe.output_dir)
    assert result.global_step == 1
    assert (out / "checkpoint-1").is_dir()  # resumable from where it stopped
    assert (out / "adapter_model.safetensors").is_file() and lora_b_norm(out) > 0
    assert any("max_wall_minutes" in r.message for r in caplog.records)


def test_dry_run_builds_rows_without_training(tmp_path, tiny_lm_dir):
    from affectllm.training.sft import run_sft

    recipe = tiny_recipe(tmp_path, tiny_lm_dir)
    result = run_sft(recipe, dry_run=True)
    assert result.global_step == 0 and result.data["total"] == 4
    assert (Path(recipe.output_dir) / "train_rows.jsonl").is_file()
    assert not (Path(recipe.output_dir) / "adapter_model.safetensors").exists()


def test_lora_targets_language_layers_only_on_a_multimodal_backbone(tiny_vlm_dir):
    from transformers import AutoModelForImageTextToText

    from affectllm.training.common import lora_target_modules, model_kind
    from affectllm.training.config import LoraArgs

    assert model_kind(str(tiny_vlm_dir)) == "image_text_to_text"
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir)
    names = lora_target_modules(model, LoraArgs(target_modules="all-linear"), multimodal=True)
    assert names and all("vision" not in n and "projector" not in n for n in names)
    assert not any("lm_head" in n for n in names)
    everything = lora_target_modules(model, LoraArgs(target_modules="all-linear", language_only=False), True)
    assert any("vision" in n for n in everything)  # the tower has linear layers; language_only left them out
    with pytest.raises(InputError, match="matches no linear layer"):
        lora_target_modules(model, LoraArgs(target_modules=["no_such_proj"]), multimodal=True)


def test_qlora_needs_a_gpu(tmp_path, tiny_lm_dir):
    import torch

    from affectllm.training.common import load_base_model

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    recipe = tiny_recipe(tmp_path, tiny_lm_dir)
    recipe.model.load_in_4bit = True
    with pytest.raises(InputError, match="needs a CUDA GPU"):
        load_base_model(recipe.model)


def test_answer_span_loss_equals_the_full_logits_loss(tiny_lm_dir, tmp_path):
    """The trainer's loss projects only the answer positions through the output head; it must equal the
    model's own loss over full logits (same masked tokens), and its gradients must match too."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from affectllm.training.sft import completion_logits_trainer_class

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    from datasets import Dataset

    dataset = Dataset.from_list([{"prompt": "a b c", "completion": " d e"}])
    config = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1)
    trainer = completion_logits_trainer_class()(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer
    )
    input_ids = torch.randint(0, 50, (2, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 10:] = 0  # right padding of the shorter row
    labels = input_ids.clone()
    labels[0, :7] = -100  # prompts of different lengths
    labels[1, :4] = -100
    labels[1, 10:] = -100
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    model.train()
    model.zero_grad()
    ours = trainer.compute_loss(model, dict(inputs))
    ours.backward()
    ours_grad = model.lm_head.weight.grad.clone()
    model.zero_grad()
    reference = model(**inputs).loss
    reference.backward()
    assert torch.allclose(ours, reference, atol=1e-5)
    assert torch.allclose(ours_grad, model.lm_head.weight.grad, atol=1e-5)
    assert trainer._metrics["train"]["mean_token_accuracy"]
