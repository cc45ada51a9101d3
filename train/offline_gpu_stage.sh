#!/usr/bin/env bash
# One training stage on a GPU machine that reaches neither PyPI nor the hub, and that receives files only in
# small transfers (this project's lent H200: 64 MiB a call, nothing kept once the machine goes back).
# torch, transformers, peft and accelerate are installed there; trl and datasets travel as wheels
# (bench/gpu_wheels, filled by `bash bench/gpu_check.sh --prepare`) with gguf, the embedded Gemma GGUF travels
# in parts (it is ~250 MB), and the training data as a folder. Everything lands in runs/gpu_store, which is
# git-ignored and so kept between calls to a machine that stays warm.
#
#   bash train/offline_gpu_stage.sh pack DIR PART_MB FIRST_MB  # here: split the cached GGUF into DIR/part-*
#   bash train/offline_gpu_stage.sh keep DIR...                # there: keep parts / wheels / data found in DIRs
#   bash train/offline_gpu_stage.sh sft|grpo RECIPE [overrides...]   # there: assemble once, train, copy out
#
# The adapter, its card and the log are copied to $OUT (default out/gpu_stage). A stage's recipe bounds its
# wall time with max_wall_minutes so the call ends inside the machine's per-command limit.
#
# The machine's transformers must convert the GGUF's tokenizer as llama.cpp tokenizes (the rebuild checks it:
# affectllm.models.check_gemma_tokenizer). transformers 5.17 does not; carry a transformers wheel (5.25 does)
# with the others. Stage 3 (docs/training.md) ran before that check existed and put the tokenizer files of a
# 5.25 rebuild over the 5.17 one instead.
set -euo pipefail
cd "$(dirname "$0")/.."
store=${STORE:-runs/gpu_store}
mkdir -p "$store"
store=$(cd "$store" && pwd)
out=${OUT:-out/gpu_stage}
gguf_name=gemma-3-270m-q4_k_m.gguf

case "${1:-}" in
pack)
    dir=$2 part_mb=$3 first_mb=$4
    cache=${AFFECTLLM_MODEL_CACHE:-$(python3 -c 'from affectllm.models import model_cache_dir; print(model_cache_dir())')}
    mkdir -p "$dir"
    # The first part is smaller: it travels with the wheels and the data.
    head -c $((first_mb * 1048576)) "$cache/$gguf_name" >"$dir/part-00"
    tail -c +$((first_mb * 1048576 + 1)) "$cache/$gguf_name" | split -b $((part_mb * 1048576)) -d -a 2 \
        --numeric-suffixes=1 - "$dir/part-"
    (cd "$cache" && sha256sum "$gguf_name") >"$dir/SHA256SUMS"
    cp "$cache/$gguf_name.affectllm-complete" "$dir/marker"
    ls -l "$dir"
    ;;
keep)
    shift
    mkdir -p "$store/parts" "$store/wheels" "$store/data"
    for dir in "$@"; do
        for f in "$dir"/*; do
            case "$f" in
            */part-* | */SHA256SUMS | */marker) cp "$f" "$store/parts/" ;;
            *.whl) cp "$f" "$store/wheels/" ;;
            *) cp -r "$f" "$store/data/" ;;
            esac
        done
    done
    ls "$store/parts" "$store/wheels" "$store/data"
    du -sh "$store"
    ;;
sft | grpo)
    method=$1
    shift
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 PIP_NO_INDEX=1
    export AFFECTLLM_MODEL_CACHE=$store/models
    if [ ! -f "$store/site/.done" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
            --target "$store/site" "$store"/wheels/*.whl
        touch "$store/site/.done"
    fi
    export PYTHONPATH=$store/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
    if [ ! -f "$AFFECTLLM_MODEL_CACHE/$gguf_name.affectllm-complete" ]; then
        mkdir -p "$AFFECTLLM_MODEL_CACHE"
        cat "$store"/parts/part-* >"$AFFECTLLM_MODEL_CACHE/$gguf_name"
        (cd "$AFFECTLLM_MODEL_CACHE" && sha256sum -c "$store/parts/SHA256SUMS")
        # The marker records the chat template written into the GGUF (affectllm.models.ensure_gemma_gguf).
        cp "$store/parts/marker" "$AFFECTLLM_MODEL_CACHE/$gguf_name.affectllm-complete"
    fi
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
    python3 -m affectllm train "$method" --config "$@" --data.root "$store/data" 2>&1 | tee "$out/$method.log"
    run_dir=$(python3 - "$method" "$@" <<'PY'
import sys
from affectllm.training.config import load_recipe
from affectllm.training.overrides import parse_overrides
method, path, *overrides = sys.argv[1:]
print(load_recipe(path, method, parse_overrides(overrides, method)).output_dir)
PY
    )
    for f in adapter_model.safetensors adapter_config.json README.md training_summary.json recipe.yaml; do
        cp "$run_dir/$f" "$out/$method-$f"
    done
    ls -l "$out"
    ;;
*)
    echo "usage: bash train/offline_gpu_stage.sh pack DIR PART_MB FIRST_MB | keep DIR... | sft|grpo RECIPE [overrides]" >&2
    exit 2
    ;;
esac
