"""The transformers backend on a tiny random Gemma-3-style model: generation, batching, streaming, stops, LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest

from affectllm.backends import GenerationConfig, get_backend
from affectllm.errors import InputError
from affectllm.prompting import build_messages
from affectllm.schema import Clip, Cue

CLIP = Clip(
    "t", [Cue("acoustic", "pitch", 210.0, "Hz", "high", 0.0, 1.0), Cue("facial", "AU12", 1.5, None, "B")]
)


@pytest.fixture(scope="module")
def backend(tiny_lm_dir: Path):
    b = get_backend("transformers", model=str(tiny_lm_dir), device="cpu")
    yield b
    b.close()


def test_prompt_uses_the_chat_template(backend) -> None:
    text = backend.prompt_text(build_messages(CLIP, few_shot=1))
    assert text.startswith("<bos><start_of_turn>user\nYou are an expert")
    assert text.count("<start_of_turn>model\n") == 2 and text.endswith("<start_of_turn>model\n")
    assert "<answer>{" in text  # the few-shot target


def test_generate_is_deterministic_and_batched(backend) -> None:
    config = GenerationConfig(max_new_tokens=12)
    short, long_ = build_messages(CLIP), build_messages(CLIP, few_shot=2)
    single = backend.generate([short], config)
    batched = backend.generate([long_, short], config)
    assert len(batched) == 2 and all(isinstance(t, str) for t in batched)
    # Left padding: the short prompt's continuation does not change when batched with a longer one.
    assert batched[1] == single[0]
    assert backend.generate([short], config) == single
    n_tokens = len(backend.tokenizer(single[0], add_special_tokens=False)["input_ids"])
    assert 0 < n_tokens <= 14


def test_sampling_is_seeded(backend) -> None:
    config = GenerationConfig(max_new_tokens=10, temperature=1.0, top_p=0.95, seed=7)
    messages = build_messages(CLIP)
    assert backend.generate([messages], config) == backend.generate([messages], config)


def test_stream_matches_generate(backend) -> None:
    config = GenerationConfig(max_new_tokens=15)
    messages = build_messages(CLIP)
    pieces = list(backend.stream(messages, config))
    assert pieces and "".join(pieces) == backend.generate([messages], config)[0]


def test_stop_strings_cut_the_text(backend) -> None:
    messages = build_messages(CLIP)
    full = backend.generate([messages], GenerationConfig(max_new_tokens=20))[0]
    assert len(full) > 4
    stop = full[2:4]
    cut = backend.generate([messages], GenerationConfig(max_new_tokens=20, stop=[stop]))[0]
    assert cut == full[: full.index(stop)]
    streamed = "".join(backend.stream(messages, GenerationConfig(max_new_tokens=20, stop=[stop])))
    assert streamed == cut


def test_lora_adapter(tiny_lm_dir: Path, tmp_path: Path, backend) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    # A freshly initialised LoRA is a no-op (B = 0); give it weights so it visibly changes the output.
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")

    adapted = get_backend(
        "transformers", model=str(tiny_lm_dir), adapter=str(tmp_path / "adapter"), device="cpu"
    )
    config = GenerationConfig(max_new_tokens=10)
    messages = build_messages(CLIP)
    assert adapted.adapter == str(tmp_path / "adapter")
    assert adapted.generate([messages], config) != backend.generate([messages], config)
    merged = get_backend(
        "transformers",
        model=str(tiny_lm_dir),
        adapter=str(tmp_path / "adapter"),
        merge_adapter=True,
        device="cpu",
    )
    assert merged.generate([messages], config) == adapted.generate([messages], config)


def test_bad_model_and_adapter_paths(tmp_path: Path, tiny_lm_dir: Path) -> None:
    with pytest.raises(InputError, match="not a transformers model"):
        get_backend("transformers", model=str(tmp_path))
    (tmp_path / "notadapter").mkdir()
    with pytest.raises(InputError, match=r"adapter_config\.json"):
        get_backend("transformers", model=str(tiny_lm_dir), adapter=str(tmp_path / "notadapter"))


def test_4bit_needs_cuda(tiny_lm_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA"):
        get_backend("transformers", model=str(tiny_lm_dir), load_in_4bit=True)


def test_unknown_backend() -> None:
    with pytest.raises(KeyError, match="unknown backend"):
        get_backend("nope")


@pytest.mark.slow
def test_the_shipped_adapter_loads_as_the_embedded_default() -> None:
    """The default adapter ships its PEFT weights in float16; the fp32 embedded model must load and use them."""
    from affectllm import models
    from affectllm.parsing import parse_answer
    from affectllm.prompting import STOP_SEQUENCES

    shipped = models.default_adapter("transformers")
    if shipped is None:
        pytest.skip("no default adapter ships in this checkout")
    backend = get_backend("transformers")
    try:
        assert backend.adapter is not None and Path(backend.adapter) == shipped
        clip = Clip("c", [], transcript="I can't believe you lied to me again!")
        config = GenerationConfig(max_new_tokens=100, temperature=0.0, stop=list(STOP_SEQUENCES))
        text = backend.generate([build_messages(clip, few_shot=False)], config)[0]
    finally:
        backend.close()
    prediction = parse_answer(text)
    assert prediction.format_ok and prediction.emotions, text
