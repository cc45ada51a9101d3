"""ddp_equivalence: 2 processes x per-device batch b train exactly like 1 process x batch 2b (SFT, GRPO and
candidate-set GRPO).

Both layouts start from the same LoRA adapter (random A *and* B, so both get gradients), train one step on the
same 2b rows with plain SGD (lr 1, no momentum, no weight decay, clipping out of reach) and save the adapter.
The step is then ``w1 = w0 - grad``, so ``w0 - w1`` is the averaged LoRA gradient each layout applied; the
first-step loss is the one logged in ``training_summary.json``. Nothing is pickled: the adapters are
safetensors, the summaries JSON.

The two-process runs go through ``affectllm train ... --num-processes 2`` with train/accelerate/cpu_ddp.yaml
(gloo on a CPU). What makes the layouts equal (docs/training.md, "Multi-process and sharded training"):
- SFT: transformers counts the answer tokens of the whole step across processes (``num_items_in_batch``,
  ``average_tokens_across_devices``, on by default), each process divides its token-loss sum by that count and
  multiplies by the process count, and DDP averages the gradients: the result is the global token mean.
  affectllm's answer-span loss (``affectllm.training.sft``) keeps that scaling.
- GRPO: rewards are gathered before the group advantages are computed, and with ``loss_type: dapo`` (the
  recipes' and trl's default) the loss is divided by the completion tokens of the whole generation batch
  across processes. The rollouts are fixed here (a completion per prompt and group position, see ``_worker``)
  so the comparison is about the loss and gradient math, not sampling.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CPU_DDP = REPO / "train" / "accelerate" / "cpu_ddp.yaml"

ROWS = [
    {"id": "a1", "transcript": "I got the job!", "labels": ["happy", "excited"]},
    {"id": "a2", "transcript": "Leave me alone, I said leave me alone right now.", "labels": ["angry"]},
    {
        "id": "a3",
        "transcript": "He is gone.",
        "labels": ["sad"],
        "context": [{"speaker": "Ann", "text": "Why did he go without a word to anyone?"}],
    },
    {"id": "a4", "transcript": "What? Really?", "labels": ["surprised"]},
]

# The fixed GRPO rollouts, by the row whose transcript the prompt holds: the k-th copy of a prompt in a group
# gets answers[k]. They score differently under the rewards (format, emotion-wheel F, label count), so the
# advantages are not zero, and the rows' answers differ in length, so each process holds a different number
# of completion tokens (a per-process token mean would not match the single process).
ANSWERS = {
    "I got the job!": (
        '<answer>{"emotions": ["happy", "excited"], "rationale": []}</answer>',
        "I am not sure.",
    ),
    "Leave me alone": (
        "No.",
        '<answer>{"emotions": ["angry", "annoyed", "tired"], "rationale": []}</answer>'
        " The speaker repeats it.",
    ),
}

LEARNING_RATE = 1.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _initial_adapter(model_dir: Path, out: Path) -> Path:
    """A LoRA adapter with random A and B (peft's default B is zero, which leaves A without a gradient)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
    )
    get_peft_model(base, config).save_pretrained(out)
    return out


def _write_recipe(
    tmp_path: Path,
    name: str,
    model_dir: Path,
    adapter: Path,
    method: str,
    trainer: dict,
    extra: dict | None = None,
) -> Path:
    import yaml

    data = tmp_path / "data" / "mine"
    data.mkdir(parents=True, exist_ok=True)
    rows = ROWS if method == "sft" else ROWS[:2]  # GRPO: 2 prompts x 2 generations = one step's 4 rollouts
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    recipe = {
        "model": {"name_or_path": str(model_dir), "dtype": "float32"},
        "init_adapter": str(adapter),
        "data": {
            "root": str(tmp_path / "data"),
            "sources": [{"dataset": "manifest", "data_dir": "mine", "task": "ov"}],
        },
        "trainer": {
            "max_steps": 1,
            "optim": "sgd",
            "learning_rate": LEARNING_RATE,
            "lr_scheduler_type": "constant",
            "weight_decay": 0.0,
            "max_grad_norm": 1.0e9,  # clipping computes the norm but scales by exactly 1
            "logging_steps": 1,
            "save_steps": 100,
            **trainer,
        },
        "output_dir": str(tmp_path / name),
        "resume": False,
    }
    if method == "grpo":
        recipe["rewards"] = {"format": 0.5, "ew_f1": {"weight": 1.0, "levels": [1, 2]}, "label_count": 0.5}
    recipe.update(extra or {})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def _accelerate_config(tmp_path: Path) -> Path:
    """The shipped CPU config with a free rendezvous port, so parallel test runs do not collide."""
    import yaml

    config = yaml.safe_load(CPU_DDP.read_text(encoding="utf-8"))
    config["main_process_port"] = _free_port()
    path = tmp_path / "cpu_ddp.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _run(command: list[str], tmp_path: Path) -> None:
    done = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


def _step(adapter: Path, out: Path) -> tuple[float, dict]:
    """The logged first-step loss and the LoRA gradient of the one SGD step (``(w0 - w1) / lr``)."""
    from safetensors.torch import load_file

    summary = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["global_step"] == 1
    before = load_file(str(adapter / "adapter_model.safetensors"))
    after = load_file(str(out / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    grads = {k: (before[k] - after[k]) / LEARNING_RATE for k in before}
    return float(summary["metrics"]["loss"]), grads


def _compare(tmp_path: Path, single: Path, double: Path, adapter: Path) -> dict:
    import torch

    loss_1, grads_1 = _step(adapter, single)
    loss_2, grads_2 = _step(adapter, double)
    scale = max(float(g.abs().max()) for g in grads_1.values())
    worst = max(float((grads_1[k] - grads_2[k]).abs().max()) for k in grads_1)
    report = {"loss_1x2b": loss_1, "loss_2xb": loss_2, "max_abs_grad": scale, "max_abs_grad_diff": worst}
    (tmp_path / "ddp_equivalence.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    # Both LoRA matrices got a gradient (the check would be empty otherwise).
    assert any("lora_A" in k and g.abs().max() > 0 for k, g in grads_1.items())
    assert any("lora_B" in k and g.abs().max() > 0 for k, g in grads_1.items())
    assert loss_1 != 0.0
    assert loss_2 == pytest.approx(loss_1, rel=1e-5, abs=1e-6), report
    # w1 = w0 - g is rounded to float32 around |w0| ~ 0.5: compare against that rounding, not exact bits.
    for key in grads_1:
        assert torch.allclose(grads_2[key], grads_1[key], rtol=1e-4, atol=1e-6 + 1e-4 * scale), (key, report)
    return report


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "affectllm.cli.main", "train", *args, "-q"]


def test_sft_ddp_equivalence(tmp_path, tiny_lm_dir):
    adapter = _initial_adapter(tiny_lm_dir, tmp_path / "init")
    one = _write_recipe(tmp_path, "one", tiny_lm_dir, adapter, "sft", {"per_device_train_batch_size": 4})
    two = _write_recipe(tmp_path, "two", tiny_lm_dir, adapter, "sft", {"per_device_train_batch_size": 2})
    _run(_cli("sft", "--config", str(one)), tmp_path)
    config = _accelerate_config(tmp_path)
    _run(
        _cli("sft", "--config", str(two), "--num-processes", "2", "--accelerate-config", str(config)),
        tmp_path,
    )
    _compare(tmp_path, tmp_path / "one", tmp_path / "two", adapter)


def test_max_wall_minutes_stops_every_process_at_the_same_step(tmp_path, tiny_lm_dir):
    # A process that stopped alone would leave the other waiting in the next gradient all-reduce: the run
    # would hang until the subprocess timeout instead of ending after its first step.
    adapter = _initial_adapter(tiny_lm_dir, tmp_path / "init")
    trainer = {"per_device_train_batch_size": 1, "max_steps": 50}
    recipe = _write_recipe(tmp_path, "limited", tiny_lm_dir, adapter, "sft", trainer)
    config = _accelerate_config(tmp_path)
    limited = ["--max_wall_minutes", "1e-6", "--num-processes", "2", "--accelerate-config", str(config)]
    _run(_cli("sft", "--config", str(recipe), *limited), tmp_path)
    summary = json.loads((tmp_path / "limited" / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["global_step"] == 1
    assert (tmp_path / "limited" / "checkpoint-1").is_dir()


def test_grpo_ddp_equivalence(tmp_path, tiny_lm_dir):
    adapter = _initial_adapter(tiny_lm_dir, tmp_path / "init")
    trainer = {"num_generations": 2, "max_completion_length": 48, "beta": 0.0, "loss_type": "dapo"}
    one = _write_recipe(
        tmp_path, "one", tiny_lm_dir, adapter, "grpo", {**trainer, "per_device_train_batch_size": 4}
    )
    two = _write_recipe(
        tmp_path, "two", tiny_lm_dir, adapter, "grpo", {**trainer, "per_device_train_batch_size": 2}
    )
    worker = [__file__, "grpo", "--config"]
    _run([sys.executable, *worker, str(one)], tmp_path)
    config = _accelerate_config(tmp_path)
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--num_processes",
        "2",
    ]
    _run([*launch, *worker, str(two)], tmp_path)
    report = _compare(tmp_path, tmp_path / "one", tmp_path / "two", adapter)
    summary = json.loads((tmp_path / "two" / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["metrics"]["reward_std"] > 0, report  # the fixed rollouts did give non-zero advantages


def test_candidate_grpo_ddp_equivalence(tmp_path, tiny_lm_dir):
    """Candidate-set GRPO (``rollouts.kind: candidates``): a prompt's sets are all drawn in one process, so the
    loss is a mean over prompts and DDP's gradient average gives the same step. The KL term to the starting
    adapter (loaded again as the frozen reference in every process) is part of it."""
    adapter = _initial_adapter(tiny_lm_dir, tmp_path / "init")
    trainer = {"num_generations": 4, "beta": 0.1}
    extra = {
        "rollouts": {"kind": "candidates", "candidates": list(CANDIDATES), "max_emotions": 4},
        "rewards": {"ew_f1": {"levels": [1, 2]}, "label_count": {"target": 2}},
    }
    one = _write_recipe(
        tmp_path, "one", tiny_lm_dir, adapter, "grpo", {**trainer, "per_device_train_batch_size": 2}, extra
    )
    two = _write_recipe(
        tmp_path, "two", tiny_lm_dir, adapter, "grpo", {**trainer, "per_device_train_batch_size": 1}, extra
    )
    worker = [__file__, "grpo", "--config"]
    _run([sys.executable, *worker, str(one)], tmp_path)
    config = _accelerate_config(tmp_path)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    _run([*launch, "--num_processes", "2", *worker, str(two)], tmp_path)
    report = _compare(tmp_path, tmp_path / "one", tmp_path / "two", adapter)
    summary = json.loads((tmp_path / "two" / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["metrics"]["reward_std"] > 0 and summary["metrics"]["kl"] >= 0, report


# Candidate-set GRPO: fixed trajectories (words drawn in order, how many joined) instead of sampled ones, the
# same for every prompt; their rewards differ by the prompt's gold.
CANDIDATES = ("happy", "excited", "angry", "sad", "surprised")
TRAJECTORIES = (([0, 1], 1), ([1, 0, 2], 2), ([2, 3, 0, 1], 4), ([3, 2], 1))


def _fixed_sets_trainer_class(base: type) -> type:
    from affectllm.training.ranked_grpo import ratio_set_logprob

    class FixedSetsTrainer(base):
        def _rollouts(self, log_pi):
            import torch

            r = self.rollouts
            logps = [ratio_set_logprob(log_pi, d, j, r.min_ratio, r.softness) for d, j in TRAJECTORIES]
            return [d[:j] for d, j in TRAJECTORIES], torch.stack(logps)

    return FixedSetsTrainer


def _fixed_rollouts_trainer_class(base: type) -> type:
    """affectllm's GRPO trainer (``base``) whose rollouts are fixed instead of sampled: the k-th copy of a
    prompt in this process's batch gets the k-th of its row's ANSWERS (trl places a prompt's group
    contiguously, and a per-device batch that is a multiple of num_generations holds whole groups, so k is the
    position in the group)."""

    class FixedRolloutsGRPOTrainer(base):
        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kwargs):
            tokenizer = self.processing_class
            end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
            seen: dict[tuple[int, ...], int] = {}
            completions = []
            for ids in prompt_ids:
                k = seen.get(tuple(ids), 0)
                seen[tuple(ids)] = k + 1
                prompt = tokenizer.decode(ids)
                answers = next(pair for start, pair in ANSWERS.items() if start in prompt)
                answer = tokenizer(answers[k % len(answers)], add_special_tokens=False)["input_ids"]
                completions.append([*answer, end][: self.max_completion_length])
            return completions, None

    return FixedRolloutsGRPOTrainer


def _worker(argv: list[str]) -> int:
    """``affectllm train grpo`` with the fixed rollouts (run by the tests, alone or under accelerate)."""
    from affectllm.cli.main import main
    from affectllm.training import grpo, ranked_grpo

    trainer_class = grpo.cpu_logits_trainer_class()
    grpo.cpu_logits_trainer_class = lambda: _fixed_rollouts_trainer_class(trainer_class)
    sets_class = ranked_grpo.candidate_grpo_trainer_class()
    ranked_grpo.candidate_grpo_trainer_class = lambda: _fixed_sets_trainer_class(sets_class)
    return main(["train", *argv, "-q"])


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
