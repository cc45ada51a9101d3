"""LoRA SFT from a recipe — the script `accelerate launch` runs (one process per GPU).

    python train/sft.py --config train/recipes/gemma3-270m/sft/ov_mix.yaml [--key value ...]
    accelerate launch --config_file train/accelerate/ddp.yaml train/sft.py --config RECIPE.yaml

The same as `affectllm train sft`; overrides use the same dotted keys (--lora.r 8, --max_steps 10).
"""

import sys

from affectllm.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", "sft", *sys.argv[1:]]))
