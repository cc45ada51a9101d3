"""Closed-set labels by likelihood (affectllm.choice): the scores are the model's, checked against a brute-force
computation, on the tiny transformers model, the real embedded GGUF through llama.cpp, and the OpenAI
completions protocol."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from affectllm.backends import GenerationConfig, get_backend
from affectllm.backends.base import Backend, Message, ScoringUnsupported
from affectllm.choice import (
    ANSWER_PREFIX,
    choose_label,
    choose_labels,
    content_free_clip,
    content_free_messages,
    label_continuation,
    score_continuations,
)
from affectllm.parsing import parse_answer
from affectllm.prompting import build_messages
from affectllm.schema import Clip, Cue

LABELS = ["neutral", "joy", "sadness", "anger", "fear", "disgust", "surprise"]
CONTEXT = [{"speaker": "Ross", "text": "Did you see the final score?"}]
CLIP = Clip(
    "c",
    [Cue("linguistic", "transcript", value="We won! We actually won!", source="transcript")],
    transcript="We won! We actually won!",
    context=CONTEXT,
)


def _messages(clip: Clip = CLIP) -> list[Message]:
    return build_messages(clip, task="closed", labels=LABELS)


def _log_softmax(row: Any) -> Any:
    import numpy as np

    row = np.asarray(row, dtype=np.float64)
    shifted = row - row.max()
    return shifted - math.log(float(np.exp(shifted).sum()))


# ------------------------------------------------------------------------------------------- transformers


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir: Path) -> Iterator[Any]:
    backend = get_backend("transformers", model=str(tiny_lm_dir), device="cpu", adapter="none")
    yield backend
    backend.close()


def _brute_force(backend: Any, prompt: str, continuation: str) -> list[float]:
    """Full forward over prompt + continuation tokens, log-softmax over every position, gather."""
    import torch

    prompt_ids = backend.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    cont_ids = backend.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + cont_ids])
    with torch.inference_mode():
        logprobs = torch.log_softmax(backend.model(input_ids=ids).logits[0].float(), dim=-1)
    start = len(prompt_ids)
    return [float(logprobs[start + j - 1, tok]) for j, tok in enumerate(cont_ids)]


def test_transformers_scores_equal_a_full_forward(tiny) -> None:
    prompts = [
        tiny.prompt_text(_messages()) + ANSWER_PREFIX,
        tiny.prompt_text(_messages(content_free_clip())),
    ]
    continuations = [label_continuation(lab) for lab in LABELS]
    scored = score_continuations(tiny, prompts, continuations)
    # The tiny model's sliding window (128) is shorter than the prompt, so the cached path is checked
    # across the window too.
    assert len(tiny.tokenizer(prompts[0])["input_ids"]) > 128
    lengths = {len(tokens) for tokens in scored[0]}
    assert len(lengths) > 1  # candidates of different token lengths are batched together
    for prompt, per_label in zip(prompts, scored, strict=True):
        for continuation, tokens in zip(continuations, per_label, strict=True):
            expected = _brute_force(tiny, prompt, continuation)
            assert len(tokens) == len(expected)
            assert tokens == pytest.approx(expected, abs=1e-4)


def test_calibration_subtracts_the_content_free_prior(tiny) -> None:
    generation = GenerationConfig(max_new_tokens=24)
    messages = _messages()
    raw = choose_label(tiny, messages, LABELS, generation, calibrate=False, explain=False)
    calibrated = choose_label(tiny, messages, LABELS, generation, explain=False)
    assert raw.prior is None and raw.calibrated == raw.scores
    assert calibrated.scores == pytest.approx(raw.scores, abs=1e-5)
    neutral_prompt = tiny.prompt_text(content_free_messages(messages)) + ANSWER_PREFIX
    prior = [sum(t) for t in score_continuations(tiny, [neutral_prompt], map(label_continuation, LABELS))[0]]
    assert calibrated.prior == pytest.approx(dict(zip(LABELS, prior, strict=True)), abs=1e-4)
    for lab in LABELS:
        assert calibrated.calibrated[lab] == pytest.approx(raw.scores[lab] - calibrated.prior[lab], abs=1e-4)
    assert calibrated.label == max(LABELS, key=calibrated.calibrated.__getitem__)
    assert raw.label == max(LABELS, key=raw.scores.__getitem__)
    means = {
        lab: raw.scores[lab] / len(t)
        for lab, t in zip(
            LABELS,
            score_continuations(
                tiny, [tiny.prompt_text(messages) + ANSWER_PREFIX], map(label_continuation, LABELS)
            )[0],
            strict=True,
        )
    }
    assert raw.mean_logprobs == pytest.approx(means, abs=1e-5)


def test_content_free_prompt_keeps_instructions_and_drops_the_sample() -> None:
    messages = build_messages(CLIP, task="closed", labels=LABELS, few_shot=1)
    neutral = content_free_messages(messages)
    assert [m["role"] for m in neutral] == [m["role"] for m in messages]
    assert neutral[:-1] == messages[:-1] and neutral[-1]["content"] == "N/A"
    assert "We won" in messages[-1]["content"] and all("We won" not in str(m["content"]) for m in neutral)


def test_the_answer_parses_with_the_chosen_label_and_batches_agree(tiny) -> None:
    generation = GenerationConfig(max_new_tokens=16, stop=["</answer>"])
    other = Clip(
        "d", [Cue("linguistic", "transcript", value="Leave me alone.")], transcript="Leave me alone."
    )
    batch = [_messages(), _messages(other)]
    results = choose_labels(tiny, batch, LABELS, generation)
    for messages, result in zip(batch, results, strict=True):
        assert result.answer_text.startswith(ANSWER_PREFIX + result.label + '"], "rationale": [')
        prediction = parse_answer(result.answer_text, labels=LABELS)
        assert prediction.emotions == [result.label]
        single = choose_label(tiny, messages, LABELS, generation)
        assert single.label == result.label
        assert single.calibrated == pytest.approx(result.calibrated, abs=1e-4)
        assert single.answer_text == result.answer_text
    # Without the rationale the answer is the bare contract.
    bare = choose_label(tiny, batch[0], LABELS, generation, explain=False)
    assert parse_answer(bare.answer_text, labels=LABELS).emotions == [bare.label]


def test_a_backend_without_logprobs_says_so() -> None:
    class TextOnly(Backend):
        name = "textonly"

        def generate(self, batch: Any, config: GenerationConfig) -> list[str]:
            return ["" for _ in batch]

    with pytest.raises(ScoringUnsupported, match=r"textonly backend.*free generation"):
        choose_label(TextOnly(), _messages(), LABELS, GenerationConfig())


# ---------------------------------------------------------------------------------------------- llama.cpp


@pytest.fixture(scope="module")
def gemma_gguf() -> Path:
    pytest.importorskip("llama_cpp")
    from affectllm.models import ensure_gemma_gguf

    return ensure_gemma_gguf()


@pytest.mark.slow  # ~30 s of CPU: two model loads and a few hundred prompt tokens twice
def test_llamacpp_scores_agree_with_a_full_logits_evaluation(gemma_gguf: Path) -> None:
    import llama_cpp

    backend = get_backend("llamacpp", model=str(gemma_gguf), adapter="none", n_ctx=512, n_threads=2)
    prompt = backend.prompt_text(_messages()) + ANSWER_PREFIX
    continuations = [label_continuation(lab) for lab in LABELS]
    # Twice: the second pass reuses the prompt's KV cache from the first.
    got = backend.continuation_logprobs([prompt, prompt], continuations)
    result = choose_label(backend, _messages(), LABELS, GenerationConfig(max_new_tokens=12))
    assert parse_answer(result.answer_text, labels=LABELS).emotions == [result.label]
    backend.close()

    # The reference keeps every logits row (logits_all) and evaluates each candidate as one batch.
    reference = llama_cpp.Llama(
        model_path=str(gemma_gguf), n_ctx=512, n_threads=2, logits_all=True, verbose=False
    )
    prompt_ids = reference.tokenize(prompt.encode(), add_bos=True, special=True)
    reference.eval(prompt_ids)
    for continuation, first, again in zip(continuations, got[0], got[1], strict=True):
        ids = reference.tokenize(continuation.encode(), add_bos=False, special=False)
        reference.n_tokens = len(prompt_ids)
        reference.eval(ids)
        rows = reference.scores[len(prompt_ids) - 1 : len(prompt_ids) + len(ids) - 1]
        expected = [float(_log_softmax(row)[tok]) for row, tok in zip(rows, ids, strict=True)]
        # Q4_K matrix products of a one-token decode and of a batch take different kernels in llama.cpp:
        # the same log-probabilities differ by up to ~0.06 nats between them.
        assert first == pytest.approx(expected, abs=0.1)
        assert again == pytest.approx(first, abs=0.1)
    reference.close()
