"""Recipe loading: YAML sections, command-line overrides, unknown keys and wrong types as errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from affectllm.errors import InputError
from affectllm.rewards import RewardSpec
from affectllm.training.config import (
    DataSource,
    GRPORecipe,
    SFTRecipe,
    dump_recipe,
    load_recipe,
    parse_cli_overrides,
    parse_override_value,
)

REPO = Path(__file__).resolve().parents[1]

SFT_YAML = """
model:
  name_or_path: embedded
  dtype: float32
lora:
  r: 8
  target_modules: [q_proj, v_proj]
data:
  root: ../shared/data
  sources:
    - {dataset: meld, split: train, limit: 100, context_turns: 2}
    - goemotions
  holdout:
    - {dataset: ovmerd, split: all}
trainer:
  max_steps: 10
  learning_rate: 2.0e-4
output_dir: runs/x
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_sft_recipe_from_yaml(tmp_path):
    recipe = load_recipe(write(tmp_path, SFT_YAML), "sft")
    assert isinstance(recipe, SFTRecipe)
    assert recipe.model.dtype == "float32"
    assert recipe.lora.r == 8 and recipe.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.data.sources[0] == DataSource("meld", split="train", limit=100, context_turns=2)
    assert recipe.data.sources[1].dataset == "goemotions"  # a bare name is a source with defaults
    assert recipe.data.holdout[0].split == "all"
    assert recipe.trainer == {"max_steps": 10, "learning_rate": 2.0e-4}
    assert recipe.resume == "auto"


def test_overrides_win_over_yaml_and_keep_types(tmp_path):
    path = write(tmp_path, SFT_YAML)
    overrides = parse_cli_overrides(
        [
            "--lora.r",
            "4",
            "--max_steps=3",
            "--trainer.learning_rate",
            "1e-4",
            "--resume",
            "false",
            "--lora.target_modules",
            "all-linear",
            "--data.few_shot",
            "true",
        ]
    )
    recipe = load_recipe(path, "sft", overrides)
    assert recipe.lora.r == 4
    assert recipe.trainer["max_steps"] == 3  # a bare trl argument lands in the trainer section
    assert recipe.trainer["learning_rate"] == pytest.approx(1e-4)  # YAML 1.1 would read "1e-4" as text
    assert recipe.resume is False
    assert recipe.lora.target_modules == "all-linear"
    assert recipe.data.few_shot is True


def test_unknown_keys_are_errors_naming_the_file(tmp_path):
    with pytest.raises(InputError, match=r"r\.yaml.*unknown key.*'lr'"):
        load_recipe(write(tmp_path, "lr: 1\n"), "sft")
    with pytest.raises(InputError, match=r"lora: unknown key.*'rank'"):
        load_recipe(write(tmp_path, "lora: {rank: 8}\n"), "sft")
    with pytest.raises(InputError, match=r"sources\[0\].*'splt'"):
        load_recipe(write(tmp_path, "data: {sources: [{dataset: meld, splt: train}]}\n"), "sft")
    # SFT has no rewards section.
    with pytest.raises(InputError, match="unknown key"):
        load_recipe(write(tmp_path, "rewards: {format: 1}\n"), "sft")
    with pytest.raises(InputError, match="override 'nonsense'"):
        load_recipe(None, "sft", [("nonsense", 1)])


def test_trainer_arguments_are_checked_against_trl(tmp_path):
    with pytest.raises(InputError, match=r"trainer: unknown argument.*max_prompt_length"):
        # trl removed max_prompt_length; the data builder filters long prompts instead.
        load_recipe(write(tmp_path, "trainer: {max_prompt_length: 512}\n"), "grpo")
    with pytest.raises(InputError, match="top-level 'output_dir'"):
        load_recipe(write(tmp_path, "trainer: {output_dir: x}\n"), "sft")
    with pytest.raises(InputError, match="weight under 'rewards'"):
        load_recipe(write(tmp_path, "trainer: {reward_weights: [1.0]}\n"), "grpo")


def test_wrong_types_and_bad_yaml(tmp_path):
    with pytest.raises(InputError, match=r"lora\.r: expected an integer"):
        load_recipe(write(tmp_path, "lora: {r: eight}\n"), "sft")
    with pytest.raises(InputError, match="expected true or false"):
        load_recipe(write(tmp_path, "data: {few_shot: maybe}\n"), "sft")
    with pytest.raises(InputError, match="task: expected 'ov' or 'closed'"):
        load_recipe(write(tmp_path, "data: {sources: [{dataset: meld, task: open}]}\n"), "sft")
    with pytest.raises(InputError, match="not valid YAML"):
        load_recipe(write(tmp_path, "model: [unclosed\n"), "sft")
    with pytest.raises(InputError, match="must be a YAML mapping"):
        load_recipe(write(tmp_path, "- a\n- b\n"), "sft")
    with pytest.raises(InputError, match="not found"):
        load_recipe(tmp_path / "missing.yaml", "sft")


def test_grpo_rewards_section_and_round_trip(tmp_path):
    text = """
rewards:
  format: 0.5
  ew_f1: {weight: 1.0, levels: [1, 2]}
  label_count: {weight: 0.5, target: 2}
trainer: {num_generations: 4, beta: 0.0, loss_type: dapo, scale_rewards: group}
init_adapter: runs/sft
"""
    recipe = load_recipe(write(tmp_path, text), "grpo")
    assert isinstance(recipe, GRPORecipe)
    assert recipe.rewards == [
        RewardSpec("format", 0.5, {}),
        RewardSpec("ew_f1", 1.0, {"levels": [1, 2]}),
        RewardSpec("label_count", 0.5, {"target": 2}),
    ]
    saved = tmp_path / "saved.yaml"
    dump_recipe(recipe, saved)
    assert load_recipe(saved, "grpo") == recipe
    with pytest.raises(InputError, match="unknown reward"):
        load_recipe(write(tmp_path, "rewards: {ew: 1}\n"), "grpo")


def test_parse_cli_overrides_errors_and_values():
    assert parse_override_value("[1, 2]") == [1, 2]
    assert parse_override_value("3e-5") == pytest.approx(3e-5)
    assert parse_override_value("runs/x") == "runs/x"
    with pytest.raises(InputError, match="needs a value"):
        parse_cli_overrides(["--max_steps"])
    with pytest.raises(InputError, match="unexpected argument"):
        parse_cli_overrides(["max_steps", "3"])


def test_shipped_recipes_all_load():
    recipes = sorted((REPO / "train" / "recipes").glob("*/*/*.yaml"))
    assert len(recipes) >= 6
    for path in recipes:
        method = path.parent.name
        recipe = load_recipe(path, method)
        assert recipe.output_dir
        assert recipe.data.sources, path
        for source in recipe.data.sources:
            assert source.split == "train", path


def test_cli_prints_the_resolved_recipe_with_overrides(tmp_path, capsys):
    import yaml

    from affectllm.cli.main import main

    path = write(tmp_path, SFT_YAML)
    assert (
        main(["train", "sft", "--config", str(path), "--lora.r", "2", "--max_steps=7", "--print-recipe"]) == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["lora"]["r"] == 2 and printed["trainer"]["max_steps"] == 7
    # Bad overrides are reported as errors (exit code 2), not tracebacks.
    assert main(["train", "grpo", "--config", str(path), "--lora.rank", "2", "--print-recipe"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_cli_without_config_fails_at_once_before_any_heavy_import(capsys):
    """`affectllm train sft` with no --config used to build a model for 82 s before failing."""
    import subprocess
    import sys

    code = (
        "import sys; from affectllm.cli.main import main; rc = main(['train', 'sft', '--max_steps', '3']); "
        "heavy = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules]; print(rc, heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "[]"], proc.stdout + proc.stderr
    assert "needs --config RECIPE.yaml" in proc.stderr and "train/recipes/" in proc.stderr


def test_cli_accepts_bare_booleans_trl_names_and_trainer_arguments_as_trl_reads_them(tmp_path, capsys):
    import yaml

    from affectllm.cli.main import main

    path = write(tmp_path, SFT_YAML)
    argv = ["train", "sft", "-c", str(path), "--print-recipe", "--bf16", "--gradient_checkpointing",
            "--lora_r", "4", "--lora_alpha=8", "--use_peft", "--model_name_or_path", "some/model",
            "--learning_rate", "3e-4", "--lr_scheduler_type", "cosine", "--no_remove_unused_columns",
            "--dataset_name", "meld", "--resume_from_checkpoint", "false"]  # fmt: skip
    assert main(argv) == 0
    recipe = yaml.safe_load(capsys.readouterr().out)
    trainer = recipe["trainer"]
    assert trainer["bf16"] is True and trainer["gradient_checkpointing"] is True
    assert trainer["learning_rate"] == pytest.approx(3e-4) and trainer["lr_scheduler_type"] == "cosine"
    assert trainer["remove_unused_columns"] is False
    assert recipe["lora"]["r"] == 4 and recipe["lora"]["alpha"] == 8 and recipe["lora"]["enabled"] is True
    assert recipe["model"]["name_or_path"] == "some/model"
    assert [s["dataset"] for s in recipe["data"]["sources"]] == ["meld"]
    assert recipe["resume"] is False


@pytest.mark.parametrize(
    ("override", "says"),
    [
        (["--learning_rat", "1"], "did you mean --learning_rate"),
        (["--lr_scheduler_type", "bogus"], "choose one of linear"),
        (["--learning_rate", "fast"], "--learning_rate 'fast'"),
        (["--max_steps"], "--max_steps needs a value"),
        (["3"], "unexpected argument '3'"),
    ],
)
def test_cli_override_mistakes_are_one_line_errors(tmp_path, capsys, override, says):
    from affectllm.cli.main import main

    path = write(tmp_path, SFT_YAML)
    assert main(["train", "sft", "-c", str(path), "--print-recipe", *override]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_cli_help_lists_every_option(capsys):
    from affectllm.cli.main import main
    from affectllm.training.overrides import TRL_ALIASES, recipe_option_names

    with pytest.raises(SystemExit):
        main(["train", "sft", "--help"])
    out = capsys.readouterr().out
    for name in [
        *recipe_option_names("sft"),
        *TRL_ALIASES,
        "learning_rate",
        "bf16",
        "gradient_checkpointing",
    ]:
        assert f"--{name}" in out, name
    assert "--config RECIPE.yaml" in out and "--dry-run" in out and "--print-recipe" in out
