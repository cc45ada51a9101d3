"""``affectllm train sft|grpo --config RECIPE.yaml [--key value ...]``: LoRA SFT and GRPO from YAML recipes.

Any recipe field can be overridden on the command line: a dotted recipe key (``--lora.r 8``,
``--data.root ../shared/data``), trl's own argument names (``--model_name_or_path``, ``--lora_r``,
``--use_peft``, ``--dataset_name``) or a trl trainer argument (``--learning_rate 1e-4``, ``--max_steps 10``,
``--bf16``, ``--gradient_checkpointing``); a flag without a value is true. Unknown keys are errors.
Arguments are checked before anything heavy is loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from affectllm.cli._options import add_quiet_option, positive_int

log = logging.getLogger(__name__)

RECIPES_HINT = "the shipped recipes are train/recipes/<model>/<method>/*.yaml, e.g. train/recipes/gemma3-270m/sft/ov_mix.yaml"


class _OverridesParser(argparse.ArgumentParser):
    """Collects the ``--key value`` pairs it does not know into ``args.overrides`` instead of failing, and lists
    every override in its help (computed when help is asked for, so ``affectllm --help`` imports no trl)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        namespace.overrides = list(getattr(namespace, "overrides", None) or []) + list(extras)
        return namespace, []

    def format_help(self) -> str:
        from affectllm.training.overrides import options_help

        method = self.prog.split()[-1]
        return super().format_help() + "\n" + options_help(method) + "\n"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune with LoRA: supervised (sft) or GRPO with emotion-wheel rewards (grpo)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    methods = parser.add_subparsers(dest="method", metavar="METHOD", parser_class=_OverridesParser)
    for method, text in (
        ("sft", "LoRA supervised fine-tuning on answers in the inference answer contract"),
        ("grpo", "GRPO with emotion-wheel, format, label-count and grounding rewards"),
    ):
        sub = methods.add_parser(
            method,
            help=text,
            description=f"{text}.\n\n{__doc__.split(chr(10) + chr(10), 1)[1]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            usage=f"affectllm train {method} --config RECIPE.yaml [--num-processes N] "
            "[--accelerate-config FILE] "
            "[--dry-run] [--print-recipe] [-q] [--KEY [VALUE] ...]",
        )
        sub.add_argument(
            "--config", "-c", metavar="RECIPE.yaml", help=f"the recipe (required; {RECIPES_HINT})"
        )
        sub.add_argument(
            "--dry-run",
            action="store_true",
            help="build the training rows (output_dir/train_rows.jsonl) and print the counts; do not train",
        )
        sub.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
        sub.add_argument(
            "--num-processes",
            type=positive_int,
            default=1,
            metavar="N",
            help="train data-parallel in N processes: the command reruns itself under `accelerate launch` "
            "(one process per GPU; on a CPU the processes join over gloo). Default 1",
        )
        sub.add_argument(
            "--accelerate-config",
            metavar="FILE",
            help="the accelerate config for --num-processes (train/accelerate/*.yaml: ddp, zero2, zero3, "
            "fsdp, cpu_ddp); default: plain data parallel on this machine",
        )
        add_quiet_option(sub)
        sub.set_defaults(func=run, overrides=[])
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])


def check_arguments(args: argparse.Namespace) -> Any:
    """Everything that can be checked without a model: the recipe file, every override, the data sources.
    Returns the resolved recipe."""
    from affectllm.errors import InputError
    from affectllm.training.config import load_recipe
    from affectllm.training.overrides import parse_overrides

    if not args.config:
        raise InputError(None, f"affectllm train {args.method} needs --config RECIPE.yaml; {RECIPES_HINT}")
    overrides = parse_overrides(args.overrides, args.method)
    recipe = load_recipe(args.config, args.method, overrides)
    if not recipe.data.sources:
        raise InputError(args.config, "data.sources is empty: name at least one dataset to train on")
    return recipe


def run(args: argparse.Namespace) -> int:
    from affectllm.training.config import recipe_to_dict

    recipe = check_arguments(args)
    launch = args.num_processes > 1 or args.accelerate_config
    # Inside a launched process (WORLD_SIZE set) train here; --dry-run and --print-recipe need no processes.
    if launch and not (args.print_recipe or args.dry_run or "WORLD_SIZE" in os.environ):
        return launch_processes(args, bf16=bool(recipe.trainer.get("bf16")))
    if args.print_recipe:
        import yaml

        sys.stdout.write(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
        return 0
    if args.method == "sft":
        from affectllm.training.sft import run_sft as runner
    else:
        from affectllm.training.grpo import run_grpo as runner
    result = runner(recipe, dry_run=args.dry_run)
    summary: dict[str, Any] = {
        "output_dir": str(result.output_dir),
        "global_step": result.global_step,
        "wall_time_s": round(result.wall_time_s, 1),
        "data": result.data,
    }
    if not args.dry_run:
        summary["metrics"] = {
            k: v for k, v in result.metrics.items() if k in _SHOWN or k.startswith("rewards/")
        }
    from affectllm.training.common import end_distributed, is_main_process

    if is_main_process():  # one summary for a multi-process run, not one per process
        print(json.dumps(summary, indent=2))
    end_distributed()
    return 0


def launch_processes(args: argparse.Namespace, bf16: bool = False) -> int:
    """Rerun this training command in ``args.num_processes`` processes under ``accelerate launch`` and return
    its exit status (``bf16``: the recipe asks for bf16). Without ``--accelerate-config`` it is plain data
    parallel on this machine: accelerate's multi-GPU launcher, which also starts CPU processes (its
    MULTI_CPU type starts one process unless mpirun is used); no mixed precision is forced, the recipe's
    bf16 decides."""
    import subprocess

    from affectllm.errors import InputError

    if args.accelerate_config and not os.path.isfile(args.accelerate_config):
        raise InputError(args.accelerate_config, "accelerate config not found")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(args.num_processes)]
    if args.accelerate_config:
        command += ["--config_file", args.accelerate_config]
        _warn_about_cpu_fallback(args.accelerate_config, bf16)
    else:
        command += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["-m", "affectllm.cli.main", "train", args.method, "--config", args.config]
    command += ["-q"] if args.quiet else []
    command += list(args.overrides)
    return subprocess.run(command, check=False).returncode


_SHOWN = {"loss", "train_loss", "reward", "reward_std", "completions/mean_length", "train_runtime", "epoch"}


def _warn_about_cpu_fallback(config_path: str, bf16: bool) -> None:
    """Say so when an accelerate config asks for what its processes will not do on this machine:
    accelerate (1.16) turns FSDP on only for GPU-type processes, so on a CPU an FSDP config trains as plain
    data parallel; DeepSpeed configs run on a CPU, but their bf16 must match the trainer's
    (``--bf16 true``)."""
    import torch
    import yaml

    with open(config_path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    if torch.cuda.is_available() or not isinstance(config, dict):
        return
    kind = config.get("distributed_type")
    if kind == "FSDP":
        log.warning(
            "%s: accelerate shards with FSDP only on GPUs; on this CPU the processes train as DDP",
            config_path,
        )
    elif kind == "DEEPSPEED" and config.get("mixed_precision") == "bf16" and not bf16:
        log.warning(
            "%s: the DeepSpeed config is bf16; on a CPU add --bf16 true (or set mixed_precision: 'no') so "
            "the trainer agrees",
            config_path,
        )
