#!/usr/bin/env python
"""A short GPU check of affectllm's GPU paths on a tiny model, for a machine with CUDA but no hub, no network,
no trl and only what the checkout carries (docs/training.md, "GPU check").

    python bench/gpu_check.py prepare               # here, with network: fill bench/gpu_wheels/ (git-ignored)
    python bench/gpu_check.py run --out DIR         # there: install the carried wheels, run every step
    python bench/gpu_check.py run --out DIR --dry-run   # here: the same steps and code on the CPU

``bash bench/gpu_check.sh`` wraps the last two. Steps (each in its own process, timed, with a time limit; a
failing step records its error and the next one runs):

- ``env``: Python, torch/CUDA, the GPU's name and memory, the versions of the training stack;
- ``tiny_model``: a 2-layer Gemma 3 model built from a config with a locally trained tokenizer
  (tests/tiny_models.py), the model every later step uses;
- ``backend``: affectllm's transformers backend generating answers to few-shot-example prompts, tokens/s at
  batch 1 and batch 16;
- ``sft``: LoRA SFT steps through ``affectllm.training.sft.run_sft`` (bf16 on a GPU);
- ``grpo``: LoRA GRPO steps through ``affectllm.training.grpo.run_grpo`` with the emotion-wheel reward;
- ``qlora``: the SFT steps on a 4-bit (bitsandbytes NF4) base, when the carried bitsandbytes imports;
- ``accelerate``: the SFT steps through ``accelerate launch`` (1 GPU, train/accelerate/single_gpu.yaml) and
  ``affectllm train sft``.

All figures go to ``DIR/gpu_check.json``; every step's output to ``DIR/gpu_check.log``. The orchestrating
process imports nothing outside the standard library, so a broken install is reported, not fatal.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "bench" / "gpu_wheels"
BNB_SITE = WHEELS / "bnb_site"  # bitsandbytes unpacked, without the CUDA builds the target machine cannot use

# The packages the target machine lacks (its image has torch, transformers, peft, accelerate, pyarrow, pandas,
# xxhash, fsspec, huggingface-hub, jinja2, pyyaml, tqdm, numpy: affectllm's core and the rest of `train`).
# Versions are the ones installed here, so the dry run on this machine runs what travels.
CARRIED = ("trl", "datasets", "dill", "multiprocess")
# datasets 5 needs pyarrow >= 24; an older pyarrow there gets this datasets (pyarrow >= 21, same dill and
# multiprocess), which trl accepts (datasets >= 4.7).
FALLBACK_DATASETS = "4.8.4"
FALLBACK_BELOW_PYARROW = 24
# The target's torch is built for CUDA 13.0; bitsandbytes loads the library named after torch's CUDA version.
BNB_CUDA_LIBS = ("libbitsandbytes_cuda130.so", "libbitsandbytes_cpu.so")
# What may travel besides the checkout: the device tool's limit is 64 MiB for everything together.
CARRY_BUDGET_MB = 40.0
TARGET_PYTHON = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)

# (step, seconds allowed on a GPU). Generous for the tiny model; the whole run stays under 8 minutes because
# each step also gets at most what is left of TOTAL_BUDGET_S.
STEPS = (
    ("env", 60),
    ("tiny_model", 90),
    ("backend", 90),
    ("sft", 120),
    ("grpo", 120),
    ("qlora", 90),
    ("accelerate", 150),
)
TOTAL_BUDGET_S = 440.0
# A dry run is no timing: a busy 2-core CPU takes several times longer, and a step cut short would be a false
# failure.
DRY_RUN_SLACK = 5

# SFT/GRPO rows in affectllm's manifest format (the `manifest` dataset): transcripts and gold labels.
FIXTURE_ROWS = [
    {"id": "g1", "transcript": "I got the job! I start on Monday.", "labels": ["happy", "excited"]},
    {"id": "g2", "transcript": "Leave me alone. I told you twice already.", "labels": ["angry", "annoyed"]},
    {
        "id": "g3",
        "transcript": "He is gone. I keep setting two plates.",
        "labels": ["sad", "lonely"],
        "context": [{"speaker": "Ann", "text": "How are you holding up?"}],
    },
    {"id": "g4", "transcript": "What? Really? You came all this way?", "labels": ["surprised", "happy"]},
    {"id": "g5", "transcript": "I don't know if the results will be good.", "labels": ["worried"]},
    {"id": "g6", "transcript": "Fine. Whatever. Do what you want.", "labels": ["frustrated", "resigned"]},
    {"id": "g7", "transcript": "Thank you so much, this means a lot.", "labels": ["grateful", "touched"]},
    {"id": "g8", "transcript": "The meeting is at three in room four.", "labels": ["neutral"]},
]


# ------------------------------------------------------------------------------------------------ prepare


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def _download(spec: str, dest: Path) -> None:
    """One wheel for the target (CPython 3.12, x86-64 Linux), without its dependencies."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    _pip(
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        TARGET_PYTHON,
        "--implementation",
        "cp",
        *platforms,
        "-d",
        str(dest),
        spec,
    )


def _size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def prepare(bitsandbytes: str | None) -> dict[str, Any]:
    """Fill ``bench/gpu_wheels/`` for the target machine and write what it holds to ``manifest.json``."""
    from importlib.metadata import version

    if WHEELS.exists():
        shutil.rmtree(WHEELS)
    (WHEELS / "fallback").mkdir(parents=True)
    versions = {name: version(name) for name in CARRIED}
    for name, ver in versions.items():
        _download(f"{name}=={ver}", WHEELS)
    _download(f"datasets=={FALLBACK_DATASETS}", WHEELS / "fallback")
    manifest: dict[str, Any] = {
        "python": TARGET_PYTHON,
        "wheels": versions,
        "fallback_datasets": FALLBACK_DATASETS,
    }

    # bitsandbytes ships one library per CUDA/ROCm/XPU build (~41 MB zipped, 123 MB unpacked); the target's
    # torch uses CUDA 13.0, so only that library and the CPU one travel, unpacked with the package's metadata
    # (transformers finds bitsandbytes through importlib.metadata).
    with tempfile.TemporaryDirectory() as tmp:
        _download(f"bitsandbytes=={bitsandbytes}" if bitsandbytes else "bitsandbytes", Path(tmp))
        wheel = next(Path(tmp).glob("bitsandbytes-*.whl"))
        import zipfile

        with zipfile.ZipFile(wheel) as archive:
            names = [
                n
                for n in archive.namelist()
                if not (n.endswith(".so") and Path(n).name.startswith("libbitsandbytes_"))
                or Path(n).name in BNB_CUDA_LIBS
            ]
            archive.extractall(BNB_SITE, members=names)
        manifest["bitsandbytes"] = {
            "version": wheel.name.split("-")[1],
            "wheel_mb": round(_size_mb(wheel), 1),
            "carried_mb": round(_size_mb(BNB_SITE), 1),
            "libraries": list(BNB_CUDA_LIBS),
        }
    total = _size_mb(WHEELS)
    manifest["carried_mb"] = round(total, 1)
    if total > CARRY_BUDGET_MB:
        shutil.rmtree(BNB_SITE)
        manifest["bitsandbytes"]["skipped"] = f"{total:.1f} MB would exceed the {CARRY_BUDGET_MB} MB budget"
        manifest["carried_mb"] = round(_size_mb(WHEELS), 1)
    (WHEELS / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


# ---------------------------------------------------------------------------------------------------- run


def _install_wheels(site: Path, log: Any) -> dict[str, Any]:
    """Install the carried wheels into ``site`` with pip, offline (``--no-index``: pip never looks for more)."""
    manifest_path = WHEELS / "manifest.json"
    if not manifest_path.is_file():
        return {
            "status": "error",
            "error": f"{manifest_path} missing: run `bash bench/gpu_check.sh --prepare`",
        }
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    wheels = [w for w in WHEELS.glob("*.whl") if not w.name.startswith("datasets-")]
    pyarrow = _pyarrow_major()
    datasets_dir = WHEELS / "fallback" if pyarrow is not None and pyarrow < FALLBACK_BELOW_PYARROW else WHEELS
    wheels += list(datasets_dir.glob("datasets-*.whl"))
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--target",
        str(site),
        *map(str, wheels),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    log.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    result = {
        "status": "ok" if done.returncode == 0 else "error",
        "seconds": round(time.perf_counter() - start, 1),
        "wheels": sorted(w.name for w in wheels),
        "pyarrow_major": pyarrow,
        "carried_mb": manifest.get("carried_mb"),
        "bitsandbytes": manifest.get("bitsandbytes"),
    }
    if done.returncode:
        result["error"] = (done.stderr or done.stdout).strip()[-2000:]
        # One wheel pip refuses must not keep the others out: each alone, so the steps that need only some run.
        failed = []
        for wheel in wheels:
            alone = subprocess.run([*command[: -len(wheels)], str(wheel)], capture_output=True, text=True)
            log.write(f"$ pip install ... {wheel.name}\n{alone.stdout}{alone.stderr}\n")
            if alone.returncode:
                failed.append(wheel.name)
        result["failed_wheels"] = failed
    return result


def _pyarrow_major() -> int | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("pyarrow").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return None


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_all(out: Path, dry_run: bool, only: list[str] | None) -> dict[str, Any]:
    """Run every step in its own process and write ``out/gpu_check.json`` after each one (a run cut short by
    the caller's time limit still leaves the steps that finished)."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "mode": "dry-run (CPU)" if dry_run else "gpu",
        "started_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "steps": {},
    }
    json_path = out / "gpu_check.json"

    def save() -> None:
        report["total_s"] = round(time.perf_counter() - started, 1)
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    work = Path(tempfile.mkdtemp(prefix="affectllm-gpu-check-"))
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
        AFFECTLLM_MODEL_CACHE=str(work / "model-cache"),
        AFFECTLLM_CACHE=str(work / "cache"),
        HF_HOME=str(work / "hf-home"),
    )
    paths = [str(REPO)]
    if BNB_SITE.is_dir():
        paths.insert(0, str(BNB_SITE))
    with open(out / "gpu_check.log", "a", encoding="utf-8") as log:
        if dry_run:
            # The same code on the CPU: no GPU visible; this environment already has the carried versions
            # (the wheels are for the target's Python 3.12).
            env["CUDA_VISIBLE_DEVICES"] = ""
            report["install"] = {"status": "skipped", "reason": "dry run uses this environment's packages"}
        else:
            site = work / "site"
            report["install"] = _install_wheels(site, log)
            paths.insert(0, str(site))
        env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
        save()
        for name, limit in STEPS:
            if only and name not in only and name not in ("env", "tiny_model"):
                continue
            slack = DRY_RUN_SLACK if dry_run else 1
            left = TOTAL_BUDGET_S * slack - (time.perf_counter() - started)
            if left < 10:
                report["steps"][name] = {"status": "skipped", "reason": "out of the run's time budget"}
                save()
                continue
            report["steps"][name] = _run_step(name, min(limit * slack, left), work, dry_run, env, log)
            log.flush()
            save()
    shutil.rmtree(work, ignore_errors=True)
    save()
    return report


def _run_step(name: str, limit: float, work: Path, dry_run: bool, env: dict, log: Any) -> dict[str, Any]:
    result_path = work / f"{name}.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "step",
        name,
        "--work",
        str(work),
        "--result",
        str(result_path),
    ] + (["--dry-run"] if dry_run else [])
    log.write(f"\n===== step {name} (limit {limit:.0f} s) =====\n")
    log.flush()
    start = time.perf_counter()
    # Its own process group: a step past its limit is ended with every process it started (accelerate's
    # worker too), so nothing keeps the GPU busy for the next step.
    process = subprocess.Popen(
        command,
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=limit)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        code = None
    seconds = round(time.perf_counter() - start, 1)
    log.write(output)
    print(f"step {name}: {seconds} s, exit {code}", flush=True)
    if result_path.is_file():
        result = json.loads(result_path.read_text(encoding="utf-8"))
    elif code is None:
        result = {"status": "error", "error": f"timed out after {limit:.0f} s", "output_tail": _tail(output)}
    else:
        result = {"status": "error", "error": f"exit code {code}", "output_tail": _tail(output)}
    result["seconds"] = seconds
    return result


# -------------------------------------------------------------------------------------- steps (subprocess)


class StepSkipped(Exception):
    """A step that cannot run on this machine, for a reason the report states (not a failure)."""


def _torch_device(dry_run: bool) -> str:
    import torch

    if dry_run:
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible to torch (run with --dry-run on a CPU)")
    return "cuda"


def _cuda_peak_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def step_env(work: Path, dry_run: bool) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {}
    for name in (
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "trl",
        "datasets",
        "pyarrow",
        "bitsandbytes",
        "tokenizers",
        "safetensors",
        "huggingface-hub",
        "numpy",
        "triton",
    ):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "versions": versions,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_multiprocessors=props.multi_processor_count,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,memory.used",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
        )
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    if not dry_run and not torch.cuda.is_available():
        raise RuntimeError(f"no CUDA device visible to torch: {json.dumps(info)}")
    return info


def step_tiny_model(work: Path, dry_run: bool) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import build_tiny_causal_lm

    path = build_tiny_causal_lm(work / "tiny-lm")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return {
        "path_name": path.name,
        "model_type": config.get("model_type"),
        "vocab_size": config.get("vocab_size"),
        "hidden_size": config.get("hidden_size"),
        "layers": config.get("num_hidden_layers"),
    }


def step_backend(work: Path, dry_run: bool) -> dict[str, Any]:
    """affectllm's transformers backend on the tiny model: prompts from the shipped few-shot examples, greedy,
    64 new tokens; tokens/s counted by re-tokenizing each answer (a random model rarely stops early)."""
    import torch

    from affectllm.backends.base import GenerationConfig
    from affectllm.backends.hf import TransformersBackend
    from affectllm.prompting import build_messages, load_examples

    device = _torch_device(dry_run)
    backend = TransformersBackend(model=work / "tiny-lm", adapter="none", device=device, batch_size=16)
    param = next(backend.model.parameters())
    clips = [example.clip for example in load_examples()]
    prompts = [build_messages(clips[i % len(clips)], task="ov", few_shot=0) for i in range(16)]
    config = GenerationConfig(max_new_tokens=64, temperature=0.0)
    backend.generate(prompts[:2], config)  # warm-up: CUDA context, kernels, allocator

    def timed(batch: list, repeats: int) -> dict[str, Any]:
        tokens, seconds = 0, 0.0
        for _ in range(repeats):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            answers = backend.generate(batch, config)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds += time.perf_counter() - start
            tokens += sum(len(backend.tokenizer(a, add_special_tokens=False).input_ids) for a in answers)
        return {
            "prompts": len(batch) * repeats,
            "new_tokens": tokens,
            "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1),
        }

    prompt_tokens = len(backend.tokenizer(backend.prompt_text(prompts[0])).input_ids)
    result = {
        "device": str(param.device),
        "dtype": str(param.dtype).replace("torch.", ""),
        "prompt_tokens": prompt_tokens,
        "max_new_tokens": config.max_new_tokens,
        "batch_1": timed(prompts[:1], 4),
        "batch_16": timed(prompts, 2),
        "cuda_peak_mb": _cuda_peak_mb(),
    }
    backend.close()
    return result


def _write_manifest(work: Path) -> Path:
    data = work / "data" / "fixture"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in FIXTURE_ROWS), encoding="utf-8")
    return work / "data"


def _recipe(work: Path, method: str, dry_run: bool, name: str, **trainer: Any):
    """The recipe the training steps run: the tiny model, LoRA r=8, the fixture rows; dtype "auto" as the
    shipped recipes (bf16 weights and autocast on a GPU, float32 on a CPU)."""
    from affectllm.training.config import load_recipe

    overrides = {
        "model": {"name_or_path": str(work / "tiny-lm"), "dtype": "auto"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": {
            "root": str(_write_manifest(work)),
            "sources": [{"dataset": "manifest", "data_dir": "fixture", "task": "ov"}],
        },
        "trainer": {
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_steps": 1000,  # only the final adapter: the check times training, not checkpoint writes
            **trainer,
        },
        "output_dir": str(work / name),
    }
    return load_recipe(None, method, overrides)


def _train_figures(result: Any) -> dict[str, Any]:
    metrics = result.metrics
    steps = result.global_step
    runtime = metrics.get("train_runtime") or result.wall_time_s
    figures = {
        "global_step": steps,
        "train_loss": metrics.get("train_loss"),
        "train_runtime_s": round(runtime, 2),
        "steps_per_s": round(steps / runtime, 2) if runtime else None,
        "adapter_saved": (Path(result.adapter_dir) / "adapter_model.safetensors").is_file(),
        "cuda_peak_mb": _cuda_peak_mb(),
    }
    for key, value in metrics.items():
        if (key.startswith("rewards/") and key.endswith("/mean")) or key in (
            "reward",
            "completions/mean_length",
        ):
            figures[key] = value
    if not figures["adapter_saved"] or steps <= 0:
        raise RuntimeError(f"training left no adapter or took no step: {figures}")
    return figures


def step_sft(work: Path, dry_run: bool) -> dict[str, Any]:
    from affectllm.training.common import trainer_defaults
    from affectllm.training.sft import run_sft

    _torch_device(dry_run)
    recipe = _recipe(work, "sft", dry_run, "sft", max_steps=2 if dry_run else 30, max_length=2048)
    return {**_train_figures(run_sft(recipe)), "bf16": trainer_defaults(recipe)["bf16"]}


def step_grpo(work: Path, dry_run: bool) -> dict[str, Any]:
    from affectllm.rewards import parse_reward_specs
    from affectllm.training.grpo import run_grpo

    _torch_device(dry_run)
    recipe = _recipe(
        work,
        "grpo",
        dry_run,
        "grpo",
        max_steps=2 if dry_run else 8,
        num_generations=4,
        max_completion_length=16 if dry_run else 48,
        temperature=1.0,
    )
    recipe.rewards = parse_reward_specs({"format": 0.5, "ew_f1": {"weight": 1.0, "levels": [1, 2]}})
    return _train_figures(run_grpo(recipe))


def step_qlora(work: Path, dry_run: bool) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    manifest_path = WHEELS / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    carried = manifest.get("bitsandbytes") or {}
    try:
        bnb_version = version("bitsandbytes")
    except PackageNotFoundError as exc:
        reason = carried.get("skipped") or "bitsandbytes not carried (run --prepare)"
        raise StepSkipped(reason) from exc
    import bitsandbytes  # noqa: F401  (a carried build that cannot load fails here, before training)

    if dry_run:
        raise StepSkipped(f"bitsandbytes {bnb_version} imports; 4-bit training needs CUDA (dry run)")
    from affectllm.training.sft import run_sft

    _torch_device(dry_run)
    recipe = _recipe(work, "sft", dry_run, "qlora", max_steps=10, max_length=2048)
    recipe.model.load_in_4bit = True
    figures = _train_figures(run_sft(recipe))
    return {**figures, "bitsandbytes": bnb_version, "carried_mb": carried.get("carried_mb")}


def step_accelerate(work: Path, dry_run: bool) -> dict[str, Any]:
    """``accelerate launch`` of ``affectllm train sft`` in one process: the shipped 1-GPU config on a GPU, the
    CPU flags in a dry run. The launched command prints its summary as JSON (the last lines of its output)."""
    from affectllm.training.config import dump_recipe

    _torch_device(dry_run)
    recipe = _recipe(work, "sft", dry_run, "accelerate-sft", max_steps=2 if dry_run else 20, max_length=2048)
    recipe_path = work / "accelerate-sft.yaml"
    dump_recipe(recipe, recipe_path)
    if dry_run:
        launch = [
            "--cpu",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ]
    else:
        launch = ["--config_file", str(REPO / "train" / "accelerate" / "single_gpu.yaml")]
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launch,
        "-m",
        "affectllm.cli.main",
        "train",
        "sft",
        "--config",
        str(recipe_path),
        "-q",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    sys.stdout.write(done.stdout + done.stderr)
    if done.returncode:
        raise RuntimeError(
            f"accelerate launch exited {done.returncode}: {_tail(done.stderr or done.stdout, 15)}"
        )
    summary = json.loads(done.stdout[done.stdout.rindex('{\n  "output_dir"') :])
    steps = summary["global_step"]
    adapter = Path(summary["output_dir"]) / "adapter_model.safetensors"
    if steps <= 0 or not adapter.is_file():
        raise RuntimeError(f"the launched run took no step or saved no adapter: {summary}")
    return {
        "launch_args": launch,
        "global_step": steps,
        "train_loss": summary.get("metrics", {}).get("train_loss"),
        "train_runtime_s": summary.get("metrics", {}).get("train_runtime"),
        "launch_wall_s": round(seconds, 1),
    }


STEP_FUNCTIONS = {
    "env": step_env,
    "tiny_model": step_tiny_model,
    "backend": step_backend,
    "sft": step_sft,
    "grpo": step_grpo,
    "qlora": step_qlora,
    "accelerate": step_accelerate,
}


def run_step(name: str, work: Path, result_path: Path, dry_run: bool) -> int:
    """One step in this process; its figures (or its error) go to ``result_path`` as JSON."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        result = {"status": "ok", **STEP_FUNCTIONS[name](work, dry_run)}
    except StepSkipped as exc:
        result = {"status": "skipped", "reason": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        result = {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}"[:2000],
            "traceback_tail": _tail(traceback.format_exc(), 12),
        }
    with contextlib.suppress(ImportError):
        import torch

        if torch.cuda.is_available():
            result.setdefault("cuda_peak_mb", _cuda_peak_mb())
    result_path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return 0 if result["status"] != "error" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="download the wheels into bench/gpu_wheels (needs PyPI)")
    prep.add_argument("--bitsandbytes", help="bitsandbytes version (default: the newest)")
    run = commands.add_parser("run", help="run every step and write OUT/gpu_check.json")
    run.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "out" / "gpu_check"))
    run.add_argument("--dry-run", action="store_true", help="the same steps on the CPU")
    run.add_argument(
        "--only",
        nargs="*",
        choices=[name for name, _ in STEPS],
        help="run only these steps (env and tiny_model always run)",
    )
    step = commands.add_parser("step", help="(internal) one step in its own process")
    step.add_argument("name", choices=sorted(STEP_FUNCTIONS))
    step.add_argument("--work", type=Path, required=True)
    step.add_argument("--result", type=Path, required=True)
    step.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "prepare":
        manifest = prepare(args.bitsandbytes)
        print(json.dumps(manifest, indent=2))
        return 0
    if args.command == "step":
        return run_step(args.name, args.work, args.result, args.dry_run)
    report = run_all(args.out, args.dry_run, args.only)
    statuses = {name: step["status"] for name, step in report["steps"].items()}
    print(json.dumps({"out": str(args.out / "gpu_check.json"), "total_s": report["total_s"], **statuses}))
    return 0 if "error" not in statuses.values() and report["install"]["status"] != "error" else 1


if __name__ == "__main__":
    sys.exit(main())
