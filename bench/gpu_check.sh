#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py; docs/training.md, "GPU check"): affectllm's transformers backend, LoRA SFT
# and GRPO, QLoRA and a 1-GPU `accelerate launch` on a tiny model, figures in $OUT/gpu_check.json.
#
#   bash bench/gpu_check.sh --prepare    # here (PyPI reachable): fill bench/gpu_wheels/ for the GPU machine
#   bash bench/gpu_check.sh              # on the GPU machine: offline install of the carried wheels, all steps
#   bash bench/gpu_check.sh --dry-run    # on a CPU (or GPU_CHECK_DRY=1): the same steps and code, no GPU
#   GPU_CHECK_ONLY="sft grpo" bash bench/gpu_check.sh   # only these steps (after env and tiny_model)
#
# Output: $OUT/gpu_check.json and $OUT/gpu_check.log ($OUT defaults to out/gpu_check).
set -u
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
mode=run
case "${1:-}" in
    --prepare) mode=prepare ;;
    --dry-run) mode=dry ;;
    "") ;;
    *) echo "usage: bash bench/gpu_check.sh [--prepare | --dry-run]" >&2; exit 2 ;;
esac
[ "${GPU_CHECK_DRY:-0}" = 1 ] && [ "$mode" = run ] && mode=dry

if [ "$mode" = prepare ]; then
    "$python" bench/gpu_check.py prepare || exit
    wheels=$(du -sb bench/gpu_wheels | cut -f1)
    tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
    echo "travels: bench/gpu_wheels $((wheels / 1024))k + working tree $((tree / 1024))k" \
        "= $(((wheels + tree) / 1048576)) MiB (the device tool's limit: 64 MiB)"
    exit 0
fi

out=${OUT:-out/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# Nothing may reach the network: pip is only ever called with --no-index (bench/gpu_check.py).
export PIP_NO_INDEX=1
args=(run --out "$out")
[ "$mode" = dry ] && args+=(--dry-run)
# GPU_CHECK_ONLY="sft grpo": a second call reruns only the steps that failed (env and tiny_model always run).
[ -n "${GPU_CHECK_ONLY:-}" ] && args+=(--only $GPU_CHECK_ONLY)
# The report is written after every step; gpu_check.log keeps each step's whole output.
exec "$python" bench/gpu_check.py "${args[@]}"
