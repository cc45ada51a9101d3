"""The shipped accelerate configs (train/accelerate/*.yaml) pass accelerate's own checks, and the DeepSpeed
ones DeepSpeed's too (docs/training.md, "Multi-process and sharded training")."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "train" / "accelerate"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
DEEPSPEED = {"zero2.yaml": 2, "zero3.yaml": 3}


def _launch_arguments(path: Path):
    """``accelerate launch --config_file PATH``'s arguments after its own validation (what it launches)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(path), "train/sft.py"])
    return _validate_launch_command(args)


def test_the_documented_configs_are_shipped():
    names = {p.name for p in CONFIGS}
    assert {"single_gpu.yaml", "ddp.yaml", "cpu_ddp.yaml", "fsdp.yaml", "zero2.yaml", "zero3.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_passes_accelerates_config_class_and_launch_checks(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(path))  # unknown keys and unknown enum values raise here
    assert isinstance(config, ClusterConfig)
    assert config.num_processes >= 1 and config.num_machines == 1
    args, defaults, _ = _launch_arguments(path)
    assert defaults.distributed_type == config.distributed_type
    assert args.use_deepspeed == (config.distributed_type == DistributedType.DEEPSPEED)
    assert args.use_fsdp == (config.distributed_type == DistributedType.FSDP)
    if config.distributed_type == DistributedType.FSDP:
        assert config.fsdp_config["fsdp_version"] == 2
    if path.name in DEEPSPEED:
        assert config.deepspeed_config["zero_stage"] == DEEPSPEED[path.name]


def test_a_misspelt_key_is_refused_by_accelerate(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = yaml.safe_load((CONFIG_DIR / "ddp.yaml").read_text(encoding="utf-8"))
    config["num_procesess"] = 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ValueError, match="unknown keys"):
        load_config_from_file(str(bad))


@pytest.mark.parametrize("name", sorted(DEEPSPEED))
def test_deepspeed_config_passes_accelerate_transformers_and_deepspeed(name, tiny_lm_dir, monkeypatch):
    """The DeepSpeed config accelerate launch derives from the YAML, with the Trainer's "auto" values filled
    in as a 2-GPU bf16 run would, is accepted by DeepSpeed's own config class. (DeepSpeed is an optional
    extra; the accelerate half runs without it.)"""
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults, _ = _launch_arguments(CONFIG_DIR / name)
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == DEEPSPEED[name]
    assert plugin.zero3_init_flag == (DEEPSPEED[name] == 3)

    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install 'affectllm[deepspeed]')")
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import AutoModelForCausalLM, TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    # Loaded before TrainingArguments registers the ZeRO-3 config (which would make loading partition it).
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    trainer_args = TrainingArguments(
        output_dir="unused",
        use_cpu=True,
        bf16=True,  # what affectllm's trainer defaults choose on a bf16 GPU
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        report_to="none",
    )
    hf_config = HfTrainerDeepSpeedConfig(copy.deepcopy(trainer_args.deepspeed_plugin.deepspeed_config))
    hf_config.trainer_config_process(trainer_args)
    hf_config.trainer_config_finalize(trainer_args, model, num_training_steps=10)
    checked = DeepSpeedConfig(hf_config.config)
    assert checked.zero_optimization_stage == DEEPSPEED[name]
    assert checked.train_micro_batch_size_per_gpu == 2 and checked.gradient_accumulation_steps == 2
    assert checked.bfloat16_config.enabled
