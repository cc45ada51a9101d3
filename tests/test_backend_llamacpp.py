"""The llama.cpp backend on the real embedded Gemma 3 270M GGUF (skipped without llama-cpp-python)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from affectllm.backends import GenerationConfig, get_backend
from affectllm.errors import InputError
from affectllm.parsing import parse_answer
from affectllm.prompting import STOP_SEQUENCES, build_messages
from affectllm.schema import Clip, Cue

CLIP = Clip(
    "l",
    [
        Cue("acoustic", "loudness", detail="loud (+2.0 SD vs speaker)", start=0.0, end=2.0),
        Cue("facial", "AU6+AU12 cheek raise and smile", detail="strong (D)", start=0.2, end=2.0),
    ],
    transcript="We won! We actually won!",
)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory):
    from affectllm.models import ensure_gemma_gguf

    gguf = ensure_gemma_gguf(tmp_path_factory.mktemp("gguf"))
    b = get_backend("llamacpp", model=str(gguf), n_ctx=4096, n_threads=1)
    yield b
    b.close()


def test_prompt_is_gemma_turns_without_bos_text(backend) -> None:
    text = backend.prompt_text(build_messages(CLIP))
    assert text.startswith("<start_of_turn>user\nYou are an expert") and text.endswith(
        "<start_of_turn>model\n"
    )


def test_generate_stream_and_stop(backend) -> None:
    messages = build_messages(CLIP)
    config = GenerationConfig(max_new_tokens=4)
    out = backend.generate([messages, messages], config)
    assert out[0] == out[1] and out[0].strip()
    assert "".join(backend.stream(messages, config)) == out[0]
    stop = out[0].strip()[:2]
    cut = backend.generate([messages], GenerationConfig(max_new_tokens=4, stop=[stop]))[0]
    assert stop not in cut


def test_pruned_scoring_is_exact_for_the_words_that_can_be_chosen(backend) -> None:
    """Likelihood decoding stops scoring a word once it cannot come within the margin of the best: every word
    it does score has its full scores, the rest could not have been chosen, and the chosen set is the same."""
    import math

    from affectllm.choice import ANSWER_PREFIX, choose_emotions, default_candidates, label_continuation
    from affectllm.choice import likely_set as keep

    words = list(default_candidates())
    continuations = [label_continuation(w) for w in words]
    prompt = backend.prompt_text(build_messages(CLIP)) + ANSWER_PREFIX
    # From an empty cache each time: llama.cpp's numbers differ by up to ~0.3 nats when the prompt's last token
    # is evaluated alone on a reused cache rather than in one batch with the rest.
    backend.llm.reset()
    full = {
        w: sum(t)
        for w, t in zip(words, backend.continuation_logprobs([prompt], continuations)[0], strict=True)
    }
    margin = -math.log(0.3)
    backend.llm.reset()
    pruned = backend.continuation_logprobs_pruned(prompt, continuations, margin)
    scored = {w: sum(t) for w, t in zip(words, pruned, strict=True) if t is not None}
    assert 0 < len(scored) < len(words)  # most words stop early
    assert scored == pytest.approx({w: full[w] for w in scored}, abs=1e-4)
    best = max(full.values())
    assert all(full[w] < best - margin for w in words if w not in scored)
    backend.llm.reset()
    chosen = choose_emotions(
        backend, [build_messages(CLIP)], words, GenerationConfig(max_new_tokens=8), 4, 0.3
    )[0]
    assert chosen.labels == keep(full, 4, 0.3) and set(chosen.scores) == set(scored)


@pytest.mark.slow
def test_few_shot_steers_the_base_model(backend) -> None:
    config = GenerationConfig(max_new_tokens=120, stop=list(STOP_SEQUENCES))
    text = backend.generate([build_messages(CLIP, few_shot=True)], config)[0]
    prediction = parse_answer(text, clip=CLIP)
    assert prediction.emotions, text


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        get_backend("llamacpp", model=str(tmp_path / "none.gguf"))


def test_corrupt_model_file_is_an_input_error_quoting_llama_cpp(tmp_path: Path, capfd) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(InputError, match="could not load") as info:
        get_backend("llamacpp", model=str(bad), n_threads=1)
    assert str(bad) in str(info.value)
    # llama.cpp's own complaint is quoted in the error instead of being printed around it.
    assert "llama_model_load" not in capfd.readouterr().err


def test_the_shipped_adapter_is_the_quiet_default_and_answers_in_contract(capfd) -> None:
    from affectllm import models

    shipped = models.default_adapter("llamacpp")
    if shipped is None:
        pytest.skip("no default adapter ships in this checkout")
    backend = get_backend("llamacpp", n_threads=1)
    try:
        assert backend.adapter == str(shipped)
        config = GenerationConfig(max_new_tokens=120, temperature=0.0, stop=list(STOP_SEQUENCES))
        text = backend.generate([build_messages(CLIP, few_shot=False)], config)[0]
    finally:
        backend.close()
    prediction = parse_answer(text, clip=CLIP)
    # Zero-shot, the fine-tuned adapter answers in the contract the base model needs examples for. The stage-1
    # adapter sometimes names the same emotion twice, which the parser repairs and notes; nothing else may be off.
    assert prediction.emotions and prediction.rationale, text
    assert all(error.startswith("dropped repeated emotion") for error in prediction.errors), text
    assert "llama_" not in capfd.readouterr().err


def test_the_default_cites_only_lines_its_prompt_shows() -> None:
    """A speech prompt has acoustic lines only; left free, the shipped adapter cited "L1" (the transcript
    line of its training prompts) in every EmoDB answer. Generated or chosen by likelihood, every rationale
    item now cites a line the prompt shows."""
    from affectllm import models
    from affectllm.prompting import shown_evidence
    from affectllm.reasoner import EmotionReasoner
    from affectllm.settings import PromptSettings

    if models.default_adapter("llamacpp") is None:
        pytest.skip("no default adapter ships in this checkout")
    clip = Clip(
        "speech",
        [
            Cue("acoustic", "pitch", detail="very high and rising (+2.5 SD)", start=0.1, end=1.9),
            Cue("acoustic", "loudness", detail="loud (+1.8 SD vs speaker)", start=0.1, end=1.9),
            Cue("acoustic", "speaking rate", detail="very fast (+2.9 SD)", start=0.1, end=1.9),
        ],
        transcript="Heute abend koennte ich es ihm sagen.",
    )
    labels = ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral")
    backend = get_backend("llamacpp", n_threads=1)
    try:
        for decoding in ("generate", "likelihood"):
            settings = PromptSettings(
                task="closed", labels=labels, modalities="acoustic", decoding=decoding, calibration="none"
            )
            config = GenerationConfig(max_new_tokens=120, stop=list(STOP_SEQUENCES))
            shown = {e.id for e in shown_evidence(clip, settings)}
            assert shown == {"A1", "A2", "A3"}
            prediction = EmotionReasoner(backend, settings, config).predict(clip)
            assert prediction.format_ok and prediction.emotions, (decoding, prediction.raw)
            assert prediction.rationale and {r.cue_id for r in prediction.rationale} <= shown, prediction.raw
    finally:
        backend.close()
