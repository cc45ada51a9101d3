"""Closed-set labels by likelihood (affectllm.choice): the scores are the model's, checked against a brute-force
computation, on the tiny transformers model, the real embedded GGUF through llama.cpp, and the OpenAI
completions protocol."""

from __future__ import annotations

import json
import math
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from affectllm.backends import GenerationConfig, get_backend
from affectllm.backends.base import Backend, Message, ScoringUnsupported
from affectllm.choice import (
    ANSWER_PREFIX,
    LabelPrior,
    choose_emotions,
    choose_label,
    choose_labels,
    content_free_clip,
    content_free_messages,
    default_candidates,
    fit_label_prior,
    label_continuation,
    likely_set,
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


def test_label_prior_makes_the_choices_follow_the_gold_frequencies() -> None:
    """A scorer biased 0.3 nats towards "a" chooses it for most rows; fitted on rows whose gold is half "a",
    half "b", the offsets split the choices at the gold's shares."""
    import random

    rng = random.Random(1)
    scores, gold = [], []
    for i in range(200):
        signal = rng.gauss(0.0, 0.2)
        scores.append({"a": -0.5 + 0.3 - signal, "b": -0.5 + signal, "c": -4.0 + rng.gauss(0.0, 0.2)})
        gold.append("a" if i % 2 else "b")
    prior = fit_label_prior(scores, gold)
    assert prior.before["a"] > 0.7 and prior.before["c"] == 0.0
    # Add-one smoothing: c, never gold, keeps a small target share instead of an infinite offset.
    assert prior.target == pytest.approx({"a": 101 / 203, "b": 101 / 203, "c": 1 / 203})
    assert prior.after["a"] == pytest.approx(prior.target["a"], abs=0.02)
    assert prior.after["b"] == pytest.approx(prior.target["b"], abs=0.02)
    assert prior.after["c"] <= 0.01
    # The a/b boundary moves to the median margin of these rows (about the scorer's 0.3-nat bias).
    median = statistics.median(row["a"] - row["b"] for row in scores)
    assert prior.offsets["b"] - prior.offsets["a"] == pytest.approx(median, abs=0.02)
    # The saved offsets are exact (a resumed run chooses with the same ones); the shares are rounded.
    restored = LabelPrior.from_dict(json.loads(json.dumps(prior.to_dict())))
    assert restored.offsets == prior.offsets and restored.rows == prior.rows
    with pytest.raises(ValueError, match="outside the label set"):
        fit_label_prior(scores[:2], ["a", "z"])
    with pytest.raises(ValueError, match="one gold label per"):
        fit_label_prior(scores, gold[:3])


def test_choosing_with_a_label_prior_adds_its_offsets(tiny) -> None:
    generation = GenerationConfig(max_new_tokens=8)
    messages = _messages()
    raw = choose_label(tiny, messages, LABELS, generation, calibrate=False, explain=False)
    # Offsets that make the raw runner-up the choice.
    runner_up = sorted(LABELS, key=raw.scores.__getitem__)[-2]
    offsets = dict.fromkeys(LABELS, -0.2)
    offsets[runner_up] = max(raw.scores.values()) - raw.scores[runner_up] + 0.1
    prior = LabelPrior(offsets, dict.fromkeys(LABELS, 1 / 7), {}, {}, rows=0)
    chosen = choose_label(tiny, messages, LABELS, generation, calibrate=prior, explain=False)
    assert chosen.label == runner_up
    for lab in LABELS:
        assert chosen.calibrated[lab] == pytest.approx(raw.scores[lab] + offsets[lab], abs=1e-4)
    with pytest.raises(ValueError, match="fitted for"):
        choose_label(tiny, messages, LABELS[:3], generation, calibrate=prior, explain=False)


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
        assert result.answer_text.startswith(ANSWER_PREFIX + result.label + '"], "rationale":')
        prediction = parse_answer(result.answer_text, labels=LABELS)
        assert prediction.emotions == [result.label]
        single = choose_label(tiny, messages, LABELS, generation)
        assert single.label == result.label
        assert single.calibrated == pytest.approx(result.calibrated, abs=1e-4)
        assert single.answer_text == result.answer_text
    # Without the rationale the answer is the bare contract.
    bare = choose_label(tiny, batch[0], LABELS, generation, explain=False)
    assert parse_answer(bare.answer_text, labels=LABELS).emotions == [bare.label]


SPEECH = Clip(
    "speech",
    [
        Cue("acoustic", "pitch", detail="very high", start=0.1, end=1.9),
        Cue("acoustic", "speaking rate", detail="very fast", start=0.1, end=1.9),
    ],
)


def test_a_cited_id_is_the_likeliest_of_the_prompts_ids(tiny) -> None:
    """The rationale's first item is opened for the model up to its id, and the id written is the one of the
    prompt's ids the model scores highest there (brute force over the same text)."""
    from affectllm.choice import ANSWER_HEAD_CLOSE, FIRST_ID_OPEN, ID_CLOSE

    generation = GenerationConfig(max_new_tokens=6, stop=["</answer>"])
    lines = SPEECH.evidence() + CLIP.evidence()  # A1, A2, L1
    result = choose_labels(tiny, [_messages()], LABELS, generation, cite=[lines])[0]
    head = ANSWER_PREFIX + result.label + ANSWER_HEAD_CLOSE + FIRST_ID_OPEN
    assert result.answer_text.startswith(head)
    prompt = tiny.prompt_text(_messages()) + head
    scores = {e.id: sum(_brute_force(tiny, prompt, e.id + ID_CLOSE)) for e in lines}
    assert result.answer_text[len(head) :].startswith(max(scores, key=scores.get) + ID_CLOSE)
    assert parse_answer(result.answer_text).format_ok  # noise for a cue, in the contract's structure
    # Without ids the rationale stays the model's own.
    free = choose_labels(tiny, [_messages()], LABELS, generation, cite=[[]])[0]
    assert free.answer_text == choose_labels(tiny, [_messages()], LABELS, generation)[0].answer_text


class _Scripted(Backend):
    """Scores a continuation by a table (the whole text, else the text before its first quote) and completes
    from a script: the item writer's control flow only (the scores themselves are checked on real models above
    and in test_backend_llamacpp)."""

    name = "scripted"

    def __init__(self, preferred: dict[str, float], tails: list[str]) -> None:
        self.preferred, self.tails, self.completed = preferred, list(tails), []
        self.heads: list[str] = []

    def generate(self, batch: Any, config: GenerationConfig) -> list[str]:
        self.generated_with = list(config.stop)
        return [self.heads.pop(0) for _ in batch]

    def prompt_text(self, messages: Any) -> str:
        return "PROMPT:"

    def _score(self, continuation: str) -> float:
        return self.preferred.get(continuation, self.preferred.get(continuation.split('"')[0], -5.0))

    def continuation_logprobs(self, prompts: Any, continuations: Any) -> list[list[list[float]]]:
        return [[[self._score(c)] for c in continuations] for _ in prompts]

    def complete(self, prompts: Any, config: GenerationConfig) -> list[str]:
        self.completed.append((list(prompts), list(config.stop)))
        return [self.tails.pop(0) for _ in prompts]


def test_rationale_items_cite_shown_lines_with_their_modality_and_time() -> None:
    """Each item: the id the model scores highest among the shown lines, the cue text it writes up to the
    closing quote, the cited line's modality and time, and another item while the model prefers one."""
    from affectllm.choice import MAX_CITED_ITEMS

    # "L1" is what the model would like to cite, but the prompt shows only acoustic lines. Each scripted
    # completion is a cue's text up to its closing quote (the stop, which the engine drops). The model prefers
    # another item after the first ('"},') and none after the second ('"}]').
    backend = _Scripted(
        {"L1": 0.0, "A2": -1.0, "A1": -2.0, "happy": 0.0}, ["a high pitch", "fast \\", "speech"]
    )
    closings = iter([{'"},': 0.0, '"}]': -1.0}, {'"},': -1.0, '"}]': 0.0}])
    scores = backend.continuation_logprobs

    def closing_or_scores(prompts: Any, options: Any) -> Any:
        if '"}]' not in options:
            return scores(prompts, options)
        closing = next(closings)
        return [[[closing[o]] for o in options]]

    backend.continuation_logprobs = closing_or_scores
    result = choose_labels(
        backend, [_messages()], ["happy", "sad"], GenerationConfig(), cite=[SPEECH.evidence()]
    )[0]
    prediction = parse_answer(result.answer_text, clip=SPEECH)
    assert prediction.format_ok and prediction.emotions == ["happy"], result.answer_text
    items = [(r.cue_id, r.cue, r.modality, r.time) for r in prediction.rationale]
    # An escaped quote is part of the cue: its text goes on after it.
    assert items == [
        ("A2", "a high pitch", "acoustic", "0.1-1.9s"),
        ("A2", 'fast "speech', "acoustic", "0.1-1.9s"),
    ]
    assert all(stops[-1] == '"' for _, stops in backend.completed)

    # A model that keeps preferring another item is closed after MAX_CITED_ITEMS, and the answer parses.
    endless = _Scripted({"A1": 0.0, '"},': 0.0, '"}]': -1.0}, [f"loud {k}" for k in range(MAX_CITED_ITEMS)])
    result = choose_labels(endless, [_messages()], ["happy"], GenerationConfig(), cite=[SPEECH.evidence()])[0]
    prediction = parse_answer(result.answer_text)
    assert prediction.format_ok and [r.cue_id for r in prediction.rationale] == ["A1"] * MAX_CITED_ITEMS
    assert not endless.tails


def test_a_generated_answer_is_continued_with_cited_items_once_its_emotions_are_written() -> None:
    from affectllm.choice import ANSWER_HEAD_CLOSE, generate_cited

    backend = _Scripted({"A1": 0.0, '"}]': 0.0}, [' [{"id": "L1", "cue": "hi"}]}', "a loud voice"])
    backend.heads = [
        '<answer>{"emotions": ["anger", "fear',  # stopped where the rationale starts
        "I cannot tell.",  # off the contract: kept as written
        '<answer>{"emotions": ["joy',  # a prompt without evidence lines: its rationale is the model's own
    ]
    texts = generate_cited(
        backend, [_messages()] * 3, [SPEECH.evidence(), SPEECH.evidence(), []], GenerationConfig()
    )
    assert ANSWER_HEAD_CLOSE in backend.generated_with
    prediction = parse_answer(texts[0])
    assert prediction.format_ok and prediction.emotions == ["anger", "fear"]
    assert [(r.cue_id, r.cue) for r in prediction.rationale] == [("A1", "a loud voice")]
    assert texts[1] == "I cannot tell."
    assert parse_answer(texts[2]).format_ok and [r.cue_id for r in parse_answer(texts[2]).rationale] == ["L1"]


def test_a_backend_without_logprobs_says_so() -> None:
    class TextOnly(Backend):
        name = "textonly"

        def generate(self, batch: Any, config: GenerationConfig) -> list[str]:
            return ["" for _ in batch]

    with pytest.raises(ScoringUnsupported, match=r"textonly backend.*free generation"):
        choose_label(TextOnly(), _messages(), LABELS, GenerationConfig())


# ------------------------------------------------------------------------------------ open vocabulary


def test_likely_set_keeps_the_words_near_the_best_one() -> None:
    scores = {"sad": -1.0, "angry": -1.0 + math.log(0.5), "happy": -1.0 + math.log(0.2), "calm": -9.0}
    assert likely_set(scores, max_emotions=4, min_ratio=0.3) == ["sad", "angry"]
    assert likely_set(scores, max_emotions=4, min_ratio=0.1) == ["sad", "angry", "happy"]
    assert likely_set(scores, max_emotions=1, min_ratio=0.0) == ["sad"]
    assert likely_set(scores, max_emotions=9, min_ratio=0.0) == ["sad", "angry", "happy", "calm"]
    # The best word always, even when the ratio admits nothing else; ties keep the given order.
    assert likely_set({"b": -2.0, "a": -2.0}, max_emotions=4, min_ratio=1.0) == ["b", "a"]
    assert likely_set({}, max_emotions=3, min_ratio=0.3) == []


def test_default_candidates_are_known_to_the_emotion_wheels() -> None:
    from affectllm.wheel import load_emotion_wheels

    words = default_candidates()
    wheels = load_emotion_wheels()
    assert len(words) == len(set(words)) >= 20
    assert all(wheels.in_vocabulary(w) for w in words)


def test_open_vocabulary_answer_names_the_likely_words_and_parses(tiny) -> None:
    generation = GenerationConfig(max_new_tokens=16, stop=["</answer>"])
    words = ["happy", "sad", "angry", "surprised", "worried"]
    messages = build_messages(CLIP, task="ov")
    raw = choose_label(tiny, messages, words, generation, calibrate=False, explain=False)
    for max_emotions, ratio in ((3, 0.0), (2, 0.9), (5, 0.0)):
        result = choose_emotions(tiny, [messages], words, generation, max_emotions, ratio)[0]
        # The same scores as the closed-set choice over the same words, and the set the rule reads from them.
        assert result.scores == pytest.approx(raw.scores, abs=1e-5)
        assert result.labels == likely_set(raw.scores, max_emotions, ratio)
        assert result.label == result.labels[0] == raw.label
        prefix = ANSWER_PREFIX + '", "'.join(result.labels) + '"], "rationale":'
        assert result.answer_text.startswith(prefix)
        assert parse_answer(result.answer_text).emotions == result.labels
    assert len(choose_emotions(tiny, [messages], words, generation, 5, 0.0)[0].labels) == 5
    bare = choose_emotions(tiny, [messages, messages], words, generation, 2, 0.0, explain=False)
    assert [parse_answer(b.answer_text).emotions for b in bare] == [b.labels for b in bare]
    assert bare[0].labels == bare[1].labels


def test_the_reasoner_decodes_open_vocabulary_by_likelihood_and_chat_streams_it_whole(tiny) -> None:
    from affectllm.reasoner import EmotionReasoner
    from affectllm.settings import PromptSettings

    settings = PromptSettings(
        task="ov", decoding="likelihood", candidates=("happy", "sad", "angry"), max_emotions=3, min_ratio=0.0
    )
    reasoner = EmotionReasoner(tiny, settings, GenerationConfig(max_new_tokens=12, stop=["</answer>"]))
    assert reasoner.decoding == "likelihood"
    prediction = reasoner.predict(CLIP)
    assert sorted(prediction.emotions) == ["angry", "happy", "sad"]
    assert set(prediction.label_scores) == {"happy", "sad", "angry"}
    assert prediction.emotions == sorted(prediction.label_scores, key=lambda w: -prediction.label_scores[w])
    session = reasoner.chat(CLIP)
    pieces = list(session.stream_reply())
    assert len(pieces) == 1 and pieces[0] == prediction.raw
    assert session.last_prediction.emotions == prediction.emotions
    # "auto" unresolved (a reasoner built by hand) and the chat task generate.
    assert EmotionReasoner(tiny, settings.replace(decoding="auto")).decoding == "generate"
    assert EmotionReasoner(tiny, PromptSettings(task="chat", decoding="likelihood")).decoding == "generate"


def test_auto_decoding_ranks_only_for_the_embedded_model_on_a_scoring_backend(tiny) -> None:
    from affectllm.reasoner import resolve_decoding
    from affectllm.settings import PromptSettings

    class Embedded(Backend):
        """Stands in for the llama.cpp backend's identity only: the decision reads its name and methods."""

        name = "llamacpp"

        def generate(self, batch: Any, config: GenerationConfig) -> list[str]:
            return []

        def continuation_logprobs(self, prompts: Any, continuations: Any) -> list[list[list[float]]]:
            return []

    class TextOnly(Embedded):
        continuation_logprobs = Backend.continuation_logprobs

    ov, closed = PromptSettings(task="ov"), PromptSettings(task="closed", labels=("a", "b"))
    assert resolve_decoding(ov, Embedded()) == "likelihood"
    assert resolve_decoding(ov, Embedded(), model="my.gguf") == "generate"  # another model writes its own
    assert resolve_decoding(ov, TextOnly()) == "generate"
    assert resolve_decoding(closed, Embedded()) == "generate"
    assert resolve_decoding(ov, tiny, model="tiny") == "generate"
    assert resolve_decoding(ov.replace(decoding="generate"), Embedded()) == "generate"
    assert resolve_decoding(closed.replace(decoding="likelihood"), tiny) == "likelihood"


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

    # The reference keeps every logits row (logits_all) and reads them from the rows it stores. Q4_K matrix
    # products of a one-token decode and of a batch take different kernels in llama.cpp (the same
    # log-probability differs by up to ~0.15 nats between them), so the candidate is fed one token at a time
    # as the backend does, for an exact comparison, and as one batch, for a loose one.
    reference = llama_cpp.Llama(
        model_path=str(gemma_gguf), n_ctx=512, n_threads=2, logits_all=True, verbose=False
    )
    prompt_ids = reference.tokenize(prompt.encode(), add_bos=True, special=True)
    start = len(prompt_ids)
    reference.eval(prompt_ids)

    def reference_logprobs(ids: list[int], one_at_a_time: bool) -> list[float]:
        reference.n_tokens = start  # eval() drops the KV entries past it first
        for chunk in [[tok] for tok in ids[:-1]] if one_at_a_time else [ids[:-1]]:
            if chunk:
                reference.eval(chunk)
        rows = reference.scores[start - 1 : start + len(ids) - 1]
        return [float(_log_softmax(row)[tok]) for row, tok in zip(rows, ids, strict=True)]

    for continuation, first, again in zip(continuations, got[0], got[1], strict=True):
        ids = reference.tokenize(continuation.encode(), add_bos=False, special=False)
        assert first == pytest.approx(reference_logprobs(ids, one_at_a_time=True), abs=1e-3)
        assert first == pytest.approx(reference_logprobs(ids, one_at_a_time=False), abs=0.25)
        # The second pass evaluated only the prompt's last token again (a one-token decode).
        assert again == pytest.approx(first, abs=0.25)
    reference.close()


# ------------------------------------------------------------------------------- OpenAI-compatible servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # starts llama_cpp.server with the embedded GGUF (~30 s of CPU)
def test_openai_echo_logprobs_from_llama_cpp_server_match_llama_cpp(gemma_gguf: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] not installed")
    from affectllm.models import GEMMA_CHAT_TEMPLATE

    port = _free_port()
    # llama_cpp.server keeps every logits row (logits_all) by default, which echo log-probabilities need.
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gemma_gguf), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "512", "--n_threads", "2", "--model_alias", "gemma"]  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    local = get_backend("llamacpp", model=str(gemma_gguf), adapter="none", n_ctx=512, n_threads=2)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "llama_cpp.server did not come up"
                time.sleep(0.5)
        client = get_backend(
            "openai",
            base_url=f"http://127.0.0.1:{port}/v1",
            model="gemma",
            chat_template=GEMMA_CHAT_TEMPLATE,
            concurrency=1,  # the server decodes one request at a time
            timeout=300,
        )
        messages = _messages()
        assert client.prompt_text(messages) == local.prompt_text(messages)
        # A few tokens only: llama-cpp-python sorts the whole 262k vocabulary in Python for every echoed token
        # (a second or two per prompt token on a small CPU), so a real prompt would take minutes here.
        prompt, continuations = (
            'We won! {"emotions": ["',
            [label_continuation("joy"), label_continuation("anger")],
        )
        served = score_continuations(client, [prompt], continuations)[0]
        direct = score_continuations(local, [prompt], continuations)[0]
        for over_http, in_process in zip(served, direct, strict=True):
            # The server tokenizes prompt + label as one text; for these labels the split is the same.
            assert len(over_http) == len(in_process)
            assert over_http == pytest.approx(in_process, abs=0.1)  # batch vs one-token kernels (see above)
        # Raw-text completion goes to the completions endpoint unchanged (the server's own sampling defaults,
        # e.g. llama-cpp-python's repeat penalty, differ from the in-process backend's, so compare with it).
        body = {
            "model": "gemma",
            "prompt": prompt,
            "max_tokens": 3,
            "temperature": 0.0,
            "top_p": 1.0,
            "seed": 0,
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as answer:
            expected = json.loads(answer.read())["choices"][0]["text"]
        assert expected and client.complete([prompt], GenerationConfig(max_new_tokens=3)) == [expected]
    finally:
        local.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _EchoWithoutPromptServer:
    """A completions endpoint that, like llama.cpp's llama-server, ignores ``echo`` for log-probabilities and
    returns only the generated token's (the response shape of OpenAI's completions API)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompts = request["prompt"] if isinstance(request["prompt"], list) else [request["prompt"]]
                choices = [
                    {
                        "index": i,
                        "text": p + " x",
                        "finish_reason": "length",
                        "logprobs": {
                            "tokens": [" x"],
                            "token_logprobs": [-0.5],
                            "top_logprobs": [{" x": -0.5}],
                            "text_offset": [len(p)],
                        },
                    }
                    for i, p in enumerate(prompts)
                ]
                body = json.dumps({"id": "c", "object": "text_completion", "created": 0, "model": "m",
                                   "choices": choices}).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_scoring_needs_a_template_and_prompt_logprobs() -> None:
    from affectllm.models import GEMMA_CHAT_TEMPLATE

    server = _EchoWithoutPromptServer()
    try:
        bare = get_backend("openai", base_url=server.base_url, model="m")
        with pytest.raises(ScoringUnsupported, match="chat_template"):
            choose_label(bare, _messages(), LABELS, GenerationConfig())
        client = get_backend("openai", base_url=server.base_url, model="m", chat_template=GEMMA_CHAT_TEMPLATE)
        with pytest.raises(ScoringUnsupported, match=r"does not return the prompt's log-probabilities"):
            choose_label(client, _messages(), LABELS, GenerationConfig())
    finally:
        server.close()
