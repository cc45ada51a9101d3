"""bench/bench_training.py on the tiny random LM: settings scored into one file across runs (dev data only)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_training", ROOT / "bench" / "bench_training.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_scored_separately_merge_into_one_comparison(shared_data, tiny_lm_dir, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"])).save_pretrained(adapter)
    bench = _bench_module()
    out = tmp_path / "bench.json"
    common = ["--model", str(tiny_lm_dir), "--data-root", str(shared_data), "--limit", "2"]
    common += ["--max-new-tokens", "4", "--sft-adapter", str(adapter), "--output", str(out)]
    common += ["--runs-dir", str(tmp_path / "runs")]
    assert bench.main([*common, "--settings", "zero-shot base"]) == 0
    assert bench.main([*common, "--settings", "SFT"]) == 0
    table = capsys.readouterr().out
    results = json.loads(out.read_text(encoding="utf-8"))["results"]
    assert set(results) == {"zero-shot base", "SFT"}
    for scores in results.values():
        assert scores["n_meld"] == 2 and scores["n_ovmerd"] == 2
        assert 0.0 <= scores["meld_weighted_f1"] <= 1.0 and 0.0 <= scores["ew_l1_f"] <= 1.0
    assert results["SFT"]["adapter"] == str(adapter)
    # The second run's table still compares against the base scored by the first.
    sft_row = [line for line in table.splitlines() if line.startswith("| SFT |")][-1]
    assert "(+" in sft_row or "(-" in sft_row
    # A different subset is a different comparison: earlier settings are not mixed in.
    assert bench.main([*common[:5], "3", *common[6:], "--settings", "SFT"]) == 0
    assert set(json.loads(out.read_text(encoding="utf-8"))["results"]) == {"SFT"}
    # So is a different answer budget.
    other_budget = [*common[:5], "3", common[6], "5", *common[8:]]
    assert bench.main([*other_budget, "--settings", "zero-shot base"]) == 0
    assert set(json.loads(out.read_text(encoding="utf-8"))["results"]) == {"zero-shot base"}


def test_llamacpp_refuses_a_missing_or_stale_adapter_gguf(tmp_path):
    """A run copied or resumed into a folder keeps the old adapter.gguf; scoring it would report the old adapter."""
    import os

    import pytest

    bench = _bench_module()
    folder = tmp_path / "run"
    folder.mkdir()
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(b"w")
    with pytest.raises(SystemExit, match=r"no adapter\.gguf"):
        bench.backend_options("llamacpp", "embedded", str(folder), 1)
    gguf = folder / "adapter.gguf"
    gguf.write_bytes(b"g")
    os.utime(gguf, (1_000_000, 1_000_000))  # converted long before the weights were last written
    with pytest.raises(SystemExit, match=r"older than adapter_model\.safetensors"):
        bench.backend_options("llamacpp", "embedded", str(folder), 1)
    os.utime(gguf, None)
    os.utime(weights, (1_000_000, 1_000_000))
    assert bench.backend_options("llamacpp", "embedded", str(folder), 1)["adapter"] == str(gguf)
