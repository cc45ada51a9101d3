"""``affectllm train sft|grpo --config RECIPE.yaml [--key value ...]``: LoRA SFT and GRPO from YAML recipes.

Any recipe field can be overridden on the command line with a dotted key (``--lora.r 8``,
``--trainer.learning_rate 1e-4``, ``--data.root ../shared/data``); a bare key names a top-level field or a trl
trainer argument (``--max_steps 10``, ``--output_dir runs/x``). Unknown keys are errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


class _OverridesParser(argparse.ArgumentParser):
    """Collects the ``--key value`` pairs it does not know into ``args.overrides`` instead of failing."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        namespace.overrides = list(getattr(namespace, "overrides", None) or []) + list(extras)
        return namespace, []


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
        sub = methods.add_parser(method, help=text, description=f"{text}. {__doc__.splitlines()[2]}")
        sub.add_argument("--config", "-c", help="recipe YAML (train/recipes/<model>/<method>/*.yaml)")
        sub.add_argument(
            "--dry-run",
            action="store_true",
            help="build the training rows (output_dir/train_rows.jsonl) and print the counts; do not train",
        )
        sub.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
        sub.set_defaults(func=run, overrides=[])
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])


def run(args: argparse.Namespace) -> int:
    from affectllm.training.config import load_recipe, parse_cli_overrides, recipe_to_dict

    overrides = parse_cli_overrides(args.overrides)
    recipe = load_recipe(args.config, args.method, overrides)
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
    print(json.dumps(summary, indent=2))
    return 0


_SHOWN = {"loss", "train_loss", "reward", "reward_std", "completions/mean_length", "train_runtime", "epoch"}
