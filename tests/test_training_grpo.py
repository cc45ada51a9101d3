"""A few real GRPO steps on the tiny random LM with affectllm's rewards: plain generation on a CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_training_sft import tiny_recipe

from affectllm.errors import InputError


def test_grpo_steps_log_rewards_and_save_the_adapter(tmp_path, tiny_lm_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from affectllm.rewards import parse_reward_specs
    from affectllm.training.grpo import run_grpo

    # GRPO continues an SFT adapter; an untrained one saved by peft stands in for it here.
    sft_dir = tmp_path / "sft-adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])).save_pretrained(
        sft_dir
    )

    recipe = tiny_recipe(
        tmp_path, tiny_lm_dir, "grpo", num_generations=2, max_completion_length=8, temperature=1.0
    )
    recipe.init_adapter = str(sft_dir)
    recipe.rewards = parse_reward_specs(
        {
            "format": 0.5,
            "ew_f1": {"weight": 1.0, "levels": [1, 2]},
            "label_count": 0.5,
            "length": {"max_tokens": 1},
        }
    )
    result = run_grpo(recipe)
    out = Path(recipe.output_dir)
    assert result.global_step == 2
    for name in ("format", "ew_f1", "label_count", "length"):
        assert math.isfinite(result.metrics[f"rewards/{name}/mean"])
    assert math.isfinite(result.metrics["train_loss"])
    assert (out / "adapter_model.safetensors").is_file()
    # The SFT adapter was continued, not replaced by a fresh LoRA with other targets.
    import json

    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "GRPO LoRA adapter" in card and "ew_f1" in card
    rows = (out / "train_rows.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 4 and '"labels"' in rows[0] and '"evidence"' not in rows[0]  # only rewards' columns


def test_vllm_generation_needs_gpus(tmp_path, tiny_lm_dir):
    import torch

    from affectllm.training.grpo import run_grpo

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    recipe = tiny_recipe(tmp_path, tiny_lm_dir, "grpo", use_vllm=True, num_generations=2)
    with pytest.raises(InputError, match="use_vllm needs CUDA"):
        run_grpo(recipe)


def test_bad_init_adapter_is_an_input_error(tmp_path, tiny_lm_dir):
    from affectllm.training.grpo import run_grpo

    recipe = tiny_recipe(tmp_path, tiny_lm_dir, "grpo", num_generations=2, max_completion_length=4)
    recipe.init_adapter = str(tmp_path)
    with pytest.raises(InputError, match="not a PEFT adapter"):
        run_grpo(recipe)


def test_init_adapter_continues_at_its_own_rank_and_says_so(tmp_path, tiny_lm_dir, caplog):
    """A shipped adapter may be stored at a lower rank than the recipe's fresh-adapter ``lora.r`` (stage 7)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from affectllm.training.common import wrap_lora

    saved = tmp_path / "rank2"
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), lora).save_pretrained(saved)
    recipe = tiny_recipe(tmp_path, tiny_lm_dir, "grpo", num_generations=2, max_completion_length=4)
    recipe.init_adapter = str(saved)
    assert recipe.lora.r != 2
    with caplog.at_level("INFO", logger="affectllm"):
        model = wrap_lora(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), recipe, "causal_lm", False)
    assert model.peft_config["default"].r == 2
    assert any(p.requires_grad for n, p in model.named_parameters() if "lora_A" in n)
    assert "continues at its own rank 2" in caplog.text


def test_cpu_completion_logps_equal_trls_fused_head(tmp_path, tiny_lm_dir):
    """On a CPU completions are scored through the model's own head for the completion positions only; the
    log-probabilities and entropies must equal trl's fused head over the whole sequence."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from affectllm.training.grpo import cpu_logits_trainer_class

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    config = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,  # as affectllm's recipes run on a CPU; autocast differs between the two paths
        report_to="none",
        per_device_train_batch_size=2,
        num_generations=2,
        temperature=0.7,
        max_steps=1,
    )
    dataset = Dataset.from_list([{"prompt": "a b c"}])
    trainer = cpu_logits_trainer_class()(
        model=model,
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    input_ids = torch.randint(0, 50, (3, 10))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, :3] = 0  # a left-padded prompt
    ours, our_entropy, _ = trainer._get_per_token_logps_and_entropies(
        model, input_ids, attention_mask, 4, batch_size=2, compute_entropy=True
    )
    theirs, their_entropy, _ = GRPOTrainer._get_per_token_logps_and_entropies(
        trainer, model, input_ids, attention_mask, 4, batch_size=2, compute_entropy=True
    )
    assert ours.shape == theirs.shape == (3, 4)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(our_entropy, their_entropy, atol=1e-4)
