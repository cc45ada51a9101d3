"""The GPU check (bench/gpu_check.sh) in its dry mode: every step runs the same code on the CPU, so on a GPU
machine it can only fail for GPU reasons; and the carried wheels install offline for the target's Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "bench" / "gpu_wheels"


@pytest.mark.slow
def test_dry_run_runs_every_step_on_the_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text(encoding="utf-8"))
    steps = report["steps"]
    assert report["mode"] == "dry-run (CPU)"
    assert list(steps) == ["env", "tiny_model", "backend", "sft", "grpo", "qlora", "accelerate"]
    failed = {name: step for name, step in steps.items() if step["status"] == "error"}
    assert not failed, json.dumps(failed, indent=2)
    assert done.returncode == 0, done.stdout + done.stderr
    # 4-bit training needs CUDA: in a dry run the step only shows bitsandbytes imports (when it was carried).
    assert steps["qlora"]["status"] == "skipped"
    assert "CUDA" in steps["qlora"]["reason"] or "not carried" in steps["qlora"]["reason"]
    assert all(step["status"] == "ok" for name, step in steps.items() if name != "qlora")

    assert steps["env"]["cuda_available"] is False and steps["env"]["versions"]["trl"]
    backend = steps["backend"]
    assert backend["device"] == "cpu" and backend["dtype"] == "float32"
    assert backend["batch_1"]["new_tokens"] > 0 and backend["batch_16"]["tokens_per_s"] > 0
    for name in ("sft", "grpo"):
        assert steps[name]["global_step"] == 2 and steps[name]["adapter_saved"]
        assert steps[name]["train_loss"] is not None
    assert "rewards/ew_f1/mean" in steps["grpo"]
    assert steps["sft"]["bf16"] is False  # float32 on a CPU, as the shipped recipes' dtype "auto" resolves
    assert steps["accelerate"]["global_step"] == 2 and "--cpu" in steps["accelerate"]["launch_args"]
    assert (tmp_path / "out" / "gpu_check.log").stat().st_size > 0


def test_carried_wheels_install_offline_for_the_target_python(tmp_path):
    """What `bash bench/gpu_check.sh --prepare` left installs with pip and no index for CPython 3.12, datasets
    in both variants (the target picks one by its pyarrow)."""
    manifest_path = WHEELS / "manifest.json"
    if not manifest_path.is_file():
        pytest.skip("bench/gpu_wheels not prepared (bash bench/gpu_check.sh --prepare)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    others = [w for w in WHEELS.glob("*.whl") if not w.name.startswith("datasets-")]
    assert {w.name.split("-")[0] for w in others} == {"trl", "dill", "multiprocess"}
    datasets_versions = {
        WHEELS: manifest["wheels"]["datasets"],
        WHEELS / "fallback": manifest["fallback_datasets"],
    }
    for datasets_dir, datasets_version in datasets_versions.items():
        wheels = others + list(datasets_dir.glob("datasets-*.whl"))
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps",
             "--only-binary=:all:", "--python-version", manifest["python"], "--implementation", "cp",
             "--platform", "manylinux_2_28_x86_64", "--target", str(tmp_path / "site"),
             *map(str, wheels)],
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"trl-{manifest['wheels']['trl']}" in done.stdout
        assert f"datasets-{datasets_version}" in done.stdout
    if "bitsandbytes" in manifest and "skipped" not in manifest["bitsandbytes"]:
        site = WHEELS / "bnb_site"
        libraries = sorted(p.name for p in site.glob("bitsandbytes/libbitsandbytes_*.so"))
        assert libraries == sorted(manifest["bitsandbytes"]["libraries"])
        assert list(site.glob("bitsandbytes-*.dist-info/METADATA"))
    assert manifest["carried_mb"] < 40
