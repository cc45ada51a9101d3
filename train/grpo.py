"""GRPO from a recipe — the script `accelerate launch` runs (one process per GPU).

    python train/grpo.py --config train/recipes/gemma3-270m/grpo/ew_f1.yaml [--key value ...]
    accelerate launch --config_file train/accelerate/zero2.yaml train/grpo.py --config RECIPE.yaml

The same as `affectllm train grpo`; overrides use the same dotted keys (--num_generations 4).
"""

import sys

from affectllm.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", "grpo", *sys.argv[1:]]))
