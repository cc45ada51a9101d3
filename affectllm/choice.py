"""Closed label sets by likelihood: the model's log-probability of each label as its answer, not free text.

Free generation lets a small model fall into one habitual answer ("neutral" for every MELD row). Here the
answer contract's opening ``<answer>{"emotions": ["`` is written for the model, and each candidate
``LABEL"], "rationale":`` (the label and the contract's text up to the rationale list, which makes "sad" and
"sadness" distinct answers) is scored as the sum of its token log-probabilities. With ``calibrate``
(contextual calibration, Zhao et al. 2021, "Calibrate Before Use") the same candidates are scored on a
content-free version of the prompt, whose evidence is "N/A", and that prior is subtracted, which removes the
model's preference for a label whatever the input. The argmax label is then kept and generation continues
greedily after the chosen candidate, so the answer still cites evidence ids and the normal parser reads it.

Backends take part through three optional methods of ``affectllm.backends.base.Backend``: ``prompt_text``,
``continuation_logprobs`` and ``complete``; one that lacks them raises ``ScoringUnsupported`` naming itself.
"""

from __future__ import annotations

import json
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from affectllm.backends.base import Backend, GenerationConfig, Message
from affectllm.prompting import ANSWER_CLOSE, format_answer
from affectllm.schema import LINGUISTIC, Clip, Cue

# The contract's text around the one label, taken from the writer of the contract so the two cannot drift:
# format_answer(["<label>"]) == ANSWER_PREFIX + "<label>" + '"], "rationale": []}</answer>'.
_MARK = "@LABEL@"
_TEMPLATE = format_answer([_MARK], [], task="closed")
ANSWER_PREFIX = _TEMPLATE[: _TEMPLATE.index(_MARK)]
_AFTER_LABEL = _TEMPLATE[_TEMPLATE.index(_MARK) + len(_MARK) :]
# What follows the label up to the rationale list, ``"], "rationale":``: scored with the label (it closes it, so
# "sad" and "sadness" are different answers), and the rationale is generated after it. It ends before a space,
# where tokenizers split: ending at ``"]`` would score a token the model never writes (Gemma writes ``"],``
# as one token), and ending at ``[`` would cut Gemma's ``' [{"'`` in two.
LABEL_CLOSE = _AFTER_LABEL[: _AFTER_LABEL.index(" [")]

CONTENT_FREE_TEXT = "N/A"
# Content-free priors kept per backend (weakly, so a closed backend's entries go with it). The key holds the
# content-free prompt text itself, so a different label set, template or few-shot block is a different entry.
_PRIOR_CACHE_SIZE = 64
_priors: weakref.WeakKeyDictionary[Backend, OrderedDict[tuple[str, tuple[str, ...]], list[float]]] = (
    weakref.WeakKeyDictionary()
)


@dataclass
class ChoiceResult:
    """One likelihood choice.

    ``scores``: each label's summed token log-probability after the answer prefix; ``calibrated``: the same
    minus the content-free prior (equal to ``scores`` without calibration); ``mean_logprobs``: the per-token
    mean of ``scores`` (for inspection: labels of different token lengths); ``prior``: the content-free
    scores, or ``None``. ``answer_text`` is the full contract answer with the generated rationale.
    """

    answer_text: str
    label: str
    scores: dict[str, float]
    calibrated: dict[str, float]
    mean_logprobs: dict[str, float] = field(default_factory=dict)
    prior: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "scores": _rounded(self.scores),
            "calibrated": _rounded(self.calibrated),
            "mean_logprobs": _rounded(self.mean_logprobs),
        }
        if self.prior is not None:
            out["prior"] = _rounded(self.prior)
        return out


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in values.items()}


def _json_body(label: str) -> str:
    return json.dumps(label, ensure_ascii=False)[1:-1]


def label_continuation(label: str) -> str:
    """The text scored for ``label``: the label as the JSON string body, then ``LABEL_CLOSE``."""
    return _json_body(label) + LABEL_CLOSE


def content_free_clip() -> Clip:
    """A clip whose only evidence is "N/A", for callers that build the content-free prompt with their own
    template (``build_messages(content_free_clip(), ...)``) instead of ``content_free_messages``."""
    cue = Cue(LINGUISTIC, "transcript", value=CONTENT_FREE_TEXT, source="transcript")
    return Clip("N/A", [cue], transcript=CONTENT_FREE_TEXT)


def content_free_messages(messages: Sequence[Message]) -> list[Message]:
    """``messages`` with the last user turn replaced by "N/A": the instructions, label list and any few-shot
    turns stay, everything the sample contributes (question, dialogue context, evidence, transcript) goes.

    Replacing the whole turn needs no knowledge of the template that wrote it, so it holds for every template
    and user-written prompt; substituting inside the turn would have to find the evidence block by its
    wording. Media parts go too (text-only scoring).
    """
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        raise ValueError("the messages have no user turn to make content-free")
    return [
        {**m, "content": CONTENT_FREE_TEXT} if i == last_user else dict(m) for i, m in enumerate(messages)
    ]


def score_continuations(
    backend: Backend, prompts: Iterable[str], continuations: Iterable[str]
) -> list[list[list[float]]]:
    """Per-token log-probabilities ``out[p][c][t]`` of each continuation after each raw prompt text."""
    continuations = list(continuations)
    if not continuations:
        raise ValueError("no continuations to score")
    if any(not c for c in continuations):
        raise ValueError("a continuation to score is empty")
    prompts = list(prompts)
    scored = backend.continuation_logprobs(prompts, continuations)
    if len(scored) != len(prompts) or any(len(row) != len(continuations) for row in scored):
        raise RuntimeError(f"the {backend.name} backend returned scores of the wrong shape")
    return scored


def _prior(backend: Backend, prompt: str, labels: tuple[str, ...]) -> list[float]:
    cache = _priors.setdefault(backend, OrderedDict())
    key = (prompt, labels)
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    tokens = score_continuations(backend, [prompt], [label_continuation(lab) for lab in labels])[0]
    cache[key] = [sum(t) for t in tokens]
    if len(cache) > _PRIOR_CACHE_SIZE:
        cache.popitem(last=False)
    return cache[key]


def choose_labels(
    backend: Backend,
    batch: Sequence[Sequence[Message]],
    labels: Sequence[str],
    generation: GenerationConfig,
    calibrate: bool = True,
    content_free: Sequence[Sequence[Message]] | None = None,
    explain: bool = True,
) -> list[ChoiceResult]:
    """``choose_label`` for many conversations: one scoring call and one generation call for the batch, or
    conversation by conversation on a backend that keeps one sequence's KV cache (``Backend.sequential``), so
    the rationale continues on the cache the scoring left instead of evaluating the prompt again."""
    labels = list(dict.fromkeys(str(lab) for lab in labels))
    if not labels:
        raise ValueError("choosing a label needs the label set")
    if content_free is not None and len(content_free) != len(batch):
        raise ValueError("content_free needs one conversation per conversation in the batch")
    if not batch:
        return []
    if len(batch) > 1 and getattr(backend, "sequential", False):
        out = []
        for i, messages in enumerate(batch):
            own = None if content_free is None else [content_free[i]]
            out += choose_labels(backend, [messages], labels, generation, calibrate, own, explain)
        return out
    priors: list[dict[str, float] | None] = [None] * len(batch)
    if calibrate:
        # Before the samples: a sequential backend's cache then ends on the sample's prompt.
        for i, messages in enumerate(batch):
            neutral = content_free[i] if content_free is not None else content_free_messages(messages)
            prior_prompt = backend.prompt_text(neutral) + ANSWER_PREFIX
            priors[i] = dict(zip(labels, _prior(backend, prior_prompt, tuple(labels)), strict=True))
    prompts = [backend.prompt_text(m) + ANSWER_PREFIX for m in batch]
    scored = score_continuations(backend, prompts, [label_continuation(lab) for lab in labels])
    results: list[ChoiceResult] = []
    for per_label, prior in zip(scored, priors, strict=True):
        sums = {lab: sum(t) for lab, t in zip(labels, per_label, strict=True)}
        means = {lab: sum(t) / len(t) for lab, t in zip(labels, per_label, strict=True)}
        calibrated = dict(sums) if prior is None else {lab: sums[lab] - prior[lab] for lab in labels}
        # Ties go to the earlier label of the set, so the choice is deterministic.
        best = max(labels, key=lambda lab: calibrated[lab])
        results.append(ChoiceResult("", best, sums, calibrated, means, prior))
    if explain:
        config = GenerationConfig(
            max_new_tokens=generation.max_new_tokens,
            temperature=0.0,
            seed=generation.seed,
            stop=list(dict.fromkeys([*generation.stop, ANSWER_CLOSE])),
            repetition_penalty=generation.repetition_penalty,
        )
        # The prompts already end with ANSWER_PREFIX; the model goes on after the chosen label's closing.
        chosen = [label_continuation(r.label) for r in results]
        tails = backend.complete([p + c for p, c in zip(prompts, chosen, strict=True)], config)
        for result, head, tail in zip(results, chosen, tails, strict=True):
            # Engines drop the stop string; the parser reads an answer cut there as a complete one.
            result.answer_text = ANSWER_PREFIX + head + tail
    else:
        for result in results:
            result.answer_text = format_answer([result.label], [], task="closed")
    return results


def choose_label(
    backend: Backend,
    messages: Sequence[Message],
    labels: Sequence[str],
    generation: GenerationConfig,
    calibrate: bool = True,
    content_free: Sequence[Message] | None = None,
    explain: bool = True,
) -> ChoiceResult:
    """Pick the label of a closed set that the model finds most likely as its answer to ``messages``.

    ``calibrate`` subtracts the label scores on a content-free prompt (``content_free``, default
    ``content_free_messages(messages)``); the prior is cached per backend and content-free prompt, so a run over
    a dataset pays for it once. ``explain`` continues the answer greedily after the chosen label to write the
    rationale (up to ``generation.max_new_tokens``, stopping at ``</answer>``); without it the answer has an
    empty rationale. Raises ``ScoringUnsupported`` for a backend without log-probabilities.
    """
    return choose_labels(
        backend,
        [messages],
        labels,
        generation,
        calibrate=calibrate,
        content_free=None if content_free is None else [content_free],
        explain=explain,
    )[0]


__all__ = [
    "ANSWER_PREFIX",
    "ChoiceResult",
    "choose_label",
    "choose_labels",
    "content_free_clip",
    "content_free_messages",
    "label_continuation",
    "score_continuations",
]
