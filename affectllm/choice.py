"""Emotions by likelihood: the model's log-probability of each candidate label as its answer, not free text.

Free generation lets a small model fall into one habitual answer ("neutral" for every MELD row). Here the
answer contract's opening ``<answer>{"emotions": ["`` is written for the model, and each candidate
``LABEL"],`` (the label and the contract's text that closes it, which makes "sad" and "sadness" distinct
answers) is scored as the sum of its token log-probabilities. With ``calibrate``
(contextual calibration, Zhao et al. 2021, "Calibrate Before Use") the same candidates are scored on a
content-free version of the prompt, whose evidence is "N/A", and that prior is subtracted, which removes the
model's preference for a label whatever the input. A :class:`LabelPrior` instead adds per-label offsets fitted on
labelled rows of a training split (``fit_label_prior``), so that the choices there follow the training labels'
frequencies. The argmax label is then kept and generation continues greedily after the chosen candidate, so the
answer still cites evidence ids and the normal parser reads it; given the prompt's evidence lines, each
rationale item is written in the contract's structure and cites one of them (``write_rationales``).

Open-vocabulary answers (``choose_emotions``) score a candidate vocabulary the same way and name every word
whose probability is close to the best one's, so a model that writes one habitual emotion still answers with
the several its probabilities support.

Backends take part through three optional methods of ``affectllm.backends.base.Backend``: ``prompt_text``,
``continuation_logprobs`` and ``complete``; one that lacks them raises ``ScoringUnsupported`` naming itself.
"""

from __future__ import annotations

import functools
import json
import math
import re
import weakref
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from affectllm.backends.base import Backend, GenerationConfig, Message
from affectllm.errors import InputError
from affectllm.prompting import ANSWER_CLOSE, format_answer, rationale_item
from affectllm.resources import data_path
from affectllm.schema import LINGUISTIC, Clip, Cue, Evidence

# The contract's text around the one label, taken from the writer of the contract so the two cannot drift:
# format_answer(["<label>"]) == ANSWER_PREFIX + "<label>" + '"], "rationale": []}</answer>'.
_MARK = "@LABEL@"
_TEMPLATE = format_answer([_MARK], [], task="closed")
ANSWER_PREFIX = _TEMPLATE[: _TEMPLATE.index(_MARK)]
_AFTER_LABEL = _TEMPLATE[_TEMPLATE.index(_MARK) + len(_MARK) :]
# What closes the label, ``"],``: scored with the label (so "sad" and "sadness" are different answers), and the
# rationale is generated after it. It ends before a space, where tokenizers split: ending at ``"]`` would
# score a token the model never writes (Gemma writes ``"],`` as one token). The contract's next text
# (`` "rationale":``) is left to the model: it is all but certain after a closed list, and scoring it would
# cost three more single-token steps per candidate for no information (40 candidates: 120 steps a sample).
LABEL_CLOSE = _AFTER_LABEL[: _AFTER_LABEL.index(" ")]
# What is written for the model after the chosen labels, up to the rationale list (``"], "rationale":``), so
# the rationale it generates next sits in the contract whatever it would have written there. It ends before
# `` [``, where Gemma's ``' [{"'`` token starts.
ANSWER_HEAD_CLOSE = _AFTER_LABEL[: _AFTER_LABEL.index(" [")]
# The contract's text around cited evidence ids, from the same writer: ``' [{"id": "'`` opens the first
# rationale item up to its id, ``'}, {"id": "'`` closes an item and opens the next up to its id, and ``'",'``
# closes an id (one Gemma token, as ``"],`` is). Each piece ends where tokenizers split, so the text written
# for the model tokenizes as the model's own would.
_ID = "@ID@"
_CITED = format_answer([_MARK], [{"id": _ID, "cue": ""}, {"id": _ID, "cue": ""}], task="closed")
_AFTER_HEAD = _CITED[_CITED.index(ANSWER_HEAD_CLOSE, _CITED.index(_MARK)) + len(ANSWER_HEAD_CLOSE) :]
FIRST_ID_OPEN = _AFTER_HEAD[: _AFTER_HEAD.index(_ID)]
_AFTER_FIRST_ID = _AFTER_HEAD[_AFTER_HEAD.index(_ID) + len(_ID) :]
ID_CLOSE = _AFTER_FIRST_ID[: _AFTER_FIRST_ID.index(" ")]
_BEFORE_NEXT_ID = _AFTER_FIRST_ID[: _AFTER_FIRST_ID.index(_ID)]
NEXT_ITEM = _BEFORE_NEXT_ID[_BEFORE_NEXT_ID.rindex("}") :]
ITEM_OPEN = NEXT_ITEM[NEXT_ITEM.index("{") :]  # '{"id": "'
ITEM_CLOSE = "}"
_CUE = "@CUE@"
# How many escaped quotes a cue's text may hold before it is closed regardless.
_CUE_QUOTES = 4
# What closes the last item, the rationale list and the answer object.
_OBJECT = _CITED[: _CITED.rindex(ANSWER_CLOSE)]
ANSWER_BODY_CLOSE = _OBJECT[_OBJECT.rindex("}", 0, _OBJECT.rindex("]")) :]
# Rationale items whose id is chosen among the prompt's; a model that wants more is closed after these.
MAX_CITED_ITEMS = 4

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
    minus ``prior`` (equal to ``scores`` without calibration); ``mean_logprobs``: the per-token mean of
    ``scores`` (for inspection: labels of different token lengths); ``prior``: what was subtracted, the
    content-free scores or a :class:`LabelPrior`'s negated offsets, or ``None``. ``answer_text`` is the full
    contract answer with the generated rationale. Labels whose
    scoring stopped early because they could not be chosen (``choose_emotions`` on llama.cpp) are absent.
    """

    answer_text: str
    label: str
    scores: dict[str, float]
    calibrated: dict[str, float]
    mean_logprobs: dict[str, float] = field(default_factory=dict)
    prior: dict[str, float] | None = None
    labels: list[str] = field(default_factory=list)  # every label the answer names, ``label`` first

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "labels": list(self.labels),
            "scores": _rounded(self.scores),
            "calibrated": _rounded(self.calibrated),
            "mean_logprobs": _rounded(self.mean_logprobs),
        }
        if self.prior is not None:
            out["prior"] = _rounded(self.prior)
        return out


@dataclass(frozen=True)
class LabelPrior:
    """Per-label offsets that make a closed-set choice follow a label distribution (``fit_label_prior``).

    ``offsets`` are added to each label's log-probability before the argmax. ``target``: the label shares the
    offsets were fitted to (the calibration rows' gold, add-one smoothed); ``before`` / ``after``: the shares
    of the argmax choices on those rows without and with the offsets; ``rows``: how many rows were scored.
    """

    offsets: dict[str, float]
    target: dict[str, float]
    before: dict[str, float]
    after: dict[str, float]
    rows: int

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.offsets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            # Unrounded: a resumed run must choose with exactly these offsets.
            "offsets": dict(self.offsets),
            "target": _rounded(self.target),
            "before": _rounded(self.before),
            "after": _rounded(self.after),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelPrior:
        return cls(
            offsets={str(k): float(v) for k, v in data["offsets"].items()},
            target={str(k): float(v) for k, v in data["target"].items()},
            before={str(k): float(v) for k, v in data.get("before", {}).items()},
            after={str(k): float(v) for k, v in data.get("after", {}).items()},
            rows=int(data["rows"]),
        )

    @classmethod
    def read(cls, path: str | Path) -> LabelPrior:
        """A prior saved as JSON, such as the ``label_prior.json`` ``affectllm eval run`` writes."""
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "label prior file not found (eval run writes OUT/label_prior.json)")
        try:
            prior = cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not JSON: {exc.msg}", line=exc.lineno) from None
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(path, f"not a label prior (needs rows, offsets and target): {exc!r}") from None
        if not prior.offsets:
            raise InputError(path, "the label prior has no labels")
        return prior


# The matching's softmax temperature (nats) and step count. Hard argmax shares are a step function of the
# offsets; a soft share at a low temperature is smooth, so a fixed-point iteration converges, and at 0.05 nats
# its shares are those of the argmax to within a row or two (a label's scores differ by tenths of a nat).
_MATCH_TEMPERATURE = 0.05
_MATCH_STEPS = 500


def _shares(labels: Sequence[str], chosen: Iterable[str], rows: int) -> dict[str, float]:
    counts = Counter(chosen)
    return {lab: counts[lab] / rows for lab in labels}


def _argmax(scores: dict[str, float], offsets: dict[str, float]) -> str:
    return max(offsets, key=lambda lab: scores[lab] + offsets[lab])


def fit_label_prior(scores: Sequence[dict[str, float]], gold: Sequence[str]) -> LabelPrior:
    """Offsets under which the argmax choices on labelled rows occur as often as their gold labels do.

    ``scores``: each row's label log-probabilities (every label of the set, as ``ChoiceResult.scores``);
    ``gold``: each row's label. Why match the *choices*: a small model's argmax favours its likeliest labels
    beyond their probability (EmoryNLP dev, the embedded adapter: "neutral" for 45 % of rows, gold 34 %, and
    "powerful" never). Subtracting a content-free prior over-corrects (docs/training.md); adding log gold share
    minus log mean probability (the Bayes prior shift) fixes the probabilities but not the argmax, which then
    says "neutral" even more often. Matching the choices to the training split's label frequencies moves each
    decision boundary just as far as those frequencies ask. Gold shares are add-one smoothed, so a label absent
    from the rows keeps a small share instead of an infinite offset.
    """
    if not scores:
        raise ValueError("fitting a label prior needs scored rows")
    if len(scores) != len(gold):
        raise ValueError("fit_label_prior needs one gold label per scored row")
    labels = list(scores[0])
    unknown = sorted({g for g in gold if g not in labels})
    if unknown:
        raise ValueError(f"gold labels outside the label set: {', '.join(unknown)}")
    if any(set(row) != set(labels) for row in scores):
        raise ValueError("every row needs a score for every label")
    n = len(scores)
    counts = Counter(gold)
    target = {lab: (counts[lab] + 1) / (n + len(labels)) for lab in labels}
    offsets = dict.fromkeys(labels, 0.0)
    t = _MATCH_TEMPERATURE
    for _ in range(_MATCH_STEPS):
        soft = dict.fromkeys(labels, 0.0)
        for row in scores:
            z = {lab: (row[lab] + offsets[lab]) / t for lab in labels}
            top = max(z.values())
            weights = {lab: math.exp(v - top) for lab, v in z.items()}
            total = sum(weights.values())
            for lab in labels:
                soft[lab] += weights[lab] / total / n
        # A label chosen too rarely gets a larger offset, in proportion to how far off its share is (in log).
        for lab in labels:
            offsets[lab] += 0.5 * t * (math.log(target[lab]) - math.log(max(soft[lab], 1e-12)))
    zero = dict.fromkeys(labels, 0.0)
    return LabelPrior(
        offsets=offsets,
        target=target,
        before=_shares(labels, (_argmax(row, zero) for row in scores), n),
        after=_shares(labels, (_argmax(row, offsets) for row in scores), n),
        rows=n,
    )


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


def _score_batch(
    backend: Backend,
    batch: Sequence[Sequence[Message]],
    labels: list[str],
    calibrate: bool | LabelPrior,
    content_free: Sequence[Sequence[Message]] | None,
    prune_margin: float | None = None,
) -> tuple[list[str], list[ChoiceResult]]:
    """The prompts (ending in ``ANSWER_PREFIX``) and each conversation's label scores; ``label`` is the best.

    ``prune_margin`` (uncalibrated scores only): the caller keeps only labels within this many nats of the
    best, so a backend that can (``continuation_logprobs_pruned``) stops scoring the others, which are then
    absent from ``scores``."""
    priors: list[dict[str, float] | None] = [None] * len(batch)
    if isinstance(calibrate, LabelPrior):
        if set(calibrate.labels) != set(labels):
            raise ValueError(
                f"the label prior was fitted for {', '.join(calibrate.labels)}, not for {', '.join(labels)}"
            )
        # A fitted prior is subtracted like the content-free one: calibrated = scores - prior.
        priors = [{lab: -calibrate.offsets[lab] for lab in labels}] * len(batch)
    elif calibrate:
        # Before the samples: a sequential backend's cache then ends on the sample's prompt.
        for i, messages in enumerate(batch):
            neutral = content_free[i] if content_free is not None else content_free_messages(messages)
            prior_prompt = backend.prompt_text(neutral) + ANSWER_PREFIX
            priors[i] = dict(zip(labels, _prior(backend, prior_prompt, tuple(labels)), strict=True))
    prompts = [backend.prompt_text(m) + ANSWER_PREFIX for m in batch]
    continuations = [label_continuation(lab) for lab in labels]
    scored: list[list[list[float] | None]]
    if prune_margin is not None and calibrate is False and hasattr(backend, "continuation_logprobs_pruned"):
        scored = [backend.continuation_logprobs_pruned(p, continuations, prune_margin) for p in prompts]
    else:
        scored = list(score_continuations(backend, prompts, continuations))
    results: list[ChoiceResult] = []
    for per_label, prior in zip(scored, priors, strict=True):
        kept = [(lab, t) for lab, t in zip(labels, per_label, strict=True) if t is not None]
        sums = {lab: sum(t) for lab, t in kept}
        means = {lab: sum(t) / len(t) for lab, t in kept}
        calibrated = dict(sums) if prior is None else {lab: sums[lab] - prior[lab] for lab in sums}
        # Ties go to the earlier label of the set, so the choice is deterministic.
        best = max(calibrated, key=lambda lab: calibrated[lab])
        results.append(ChoiceResult("", best, sums, calibrated, means, prior, labels=[best]))
    return prompts, results


def _write_answers(
    backend: Backend,
    prompts: list[str],
    results: list[ChoiceResult],
    generation: GenerationConfig,
    explain: bool,
    cite: Sequence[Sequence[Evidence]] | None = None,
) -> None:
    """Fill ``answer_text``: the chosen labels written into the contract, then (``explain``) the rationale the
    model generates greedily after them, as it would after writing those labels itself (``write_rationales``,
    whose ``cite`` this is)."""
    if not explain:
        for result in results:
            result.answer_text = format_answer(result.labels, [], task="ov")
        return
    # The list as json.dumps writes it (``", "`` between the labels), so the text is the contract's own.
    heads = ['", "'.join(_json_body(lab) for lab in r.labels) + ANSWER_HEAD_CLOSE for r in results]
    cite = [[] for _ in results] if cite is None else cite
    texts = [p + h for p, h in zip(prompts, heads, strict=True)]
    tails = write_rationales(backend, texts, cite, generation)
    for result, head, tail in zip(results, heads, tails, strict=True):
        result.answer_text = ANSWER_PREFIX + head + tail


def write_rationales(
    backend: Backend,
    texts: Sequence[str],
    cite: Sequence[Sequence[Evidence]],
    generation: GenerationConfig,
) -> list[str]:
    """The rest of each answer after ``texts`` (raw prompt text and the answer up to ``"rationale":``).

    Where ``cite`` (per text, the evidence lines its prompt shows) is empty, the model writes the rest greedily
    up to ``</answer>`` (engines drop the stop string; the parser reads an answer cut there as a complete one).
    Otherwise each rationale item is written in the contract's structure, and the model makes every choice in
    it: which line the item cites (by likelihood, among the prompt's ids), the cue text (generated up to its
    closing quote), and whether another item follows (by likelihood of the two ways the item can close, at most
    ``MAX_CITED_ITEMS``). The item's modality and time are the cited line's, as in the training targets that
    ``format_answer`` writes. Why: left free, the model cites ids it saw in training rather than in the
    prompt (every EmoDB answer cited "L1", a transcript line speech prompts do not have), and on unfamiliar
    evidence it can nest objects inside an item until the tokens run out.
    """
    if len(cite) != len(texts):
        raise ValueError("cite needs one list of evidence lines per text")
    config = GenerationConfig(
        max_new_tokens=generation.max_new_tokens,
        temperature=0.0,
        seed=generation.seed,
        stop=list(dict.fromkeys([*generation.stop, ANSWER_CLOSE])),
        repetition_penalty=generation.repetition_penalty,
    )
    tails = [""] * len(texts)
    free = [i for i, lines in enumerate(cite) if not lines]
    if free:
        for i, tail in zip(free, backend.complete([texts[i] for i in free], config), strict=True):
            tails[i] = tail
    for i, lines in enumerate(cite):
        if lines:
            tails[i] = _cited_items(backend, texts[i], list(lines), config)
    return tails


def _likeliest(backend: Backend, text: str, options: Sequence[str]) -> int:
    """The index of the option the model finds most likely after ``text`` (ties: the earlier one)."""
    if len(options) == 1:
        return 0
    scored = score_continuations(backend, [text], options)[0]
    return max(range(len(options)), key=lambda k: sum(scored[k]))


def _cited_items(backend: Backend, text: str, lines: list[Evidence], config: GenerationConfig) -> str:
    """The rationale list (from ``FIRST_ID_OPEN``) and the answer's close, one cited item at a time."""
    cues = {e.id.upper(): e.cue for e in lines}
    cue_config = replace(config, stop=[*config.stop, '"'])
    out = FIRST_ID_OPEN
    for item in range(MAX_CITED_ITEMS):
        chosen = lines[_likeliest(backend, text + out, [e.id + ID_CLOSE for e in lines])].id
        # The item as format_answer writes it, around a placeholder for the model's cue text.
        rendered = json.dumps(rationale_item({"id": chosen, "cue": _CUE}, cues), ensure_ascii=False)
        before_cue, after_cue = rendered.split(_CUE)
        out += before_cue[len(ITEM_OPEN) :]
        out += _cue_text(backend, text + out, cue_config)
        # The item's remaining fields, up to the text where the two ways to go on part: '"},' (another item)
        # or '"}]' (the last); splitting before the quote keeps the tokens the model writes there.
        rest = after_cue[: -len(ITEM_CLOSE)]
        quote = '"' if rest.endswith('"') else ""
        out += rest[: len(rest) - len(quote)]
        another = quote + NEXT_ITEM[: NEXT_ITEM.index(" ")]
        last = quote + ANSWER_BODY_CLOSE[: ANSWER_BODY_CLOSE.index("]") + 1]
        if item + 1 == MAX_CITED_ITEMS or _likeliest(backend, text + out, [last, another]) == 0:
            return out + quote + ANSWER_BODY_CLOSE
        out += quote + NEXT_ITEM
    return out  # not reached: the last item returns


def _cue_text(backend: Backend, text: str, config: GenerationConfig) -> str:
    """The cue's text as the model writes it inside the JSON string, up to its closing quote (an escaped
    quote ``\\"`` is part of the text: generation goes on after it)."""
    written = ""
    for turn in range(_CUE_QUOTES):
        piece = backend.complete([text + written], config)[0]
        if turn and piece == "\\":
            break  # escaped quotes one after another: the 270M model's loop; the quote it opened closes it
        written += piece
        escaped = (len(written) - len(written.rstrip("\\"))) % 2 == 1
        if not escaped:
            break
        written += '"'
    try:
        json.loads(f'"{written}"')
    except json.JSONDecodeError:  # a raw newline or a bad escape: the same words as a valid JSON string
        written = json.dumps(written.replace("\\", ""), ensure_ascii=False)[1:-1]
    return written


# A generated answer stopped at ANSWER_HEAD_CLOSE: its emotion list is written and still open.
_OPEN_EMOTION_LIST = re.compile(re.escape(ANSWER_PREFIX[: -len('["')]) + r'\[(?:"[^"\\]*", )*"[^"\\]*\Z')


def generate_cited(
    backend: Backend,
    batch: Sequence[Sequence[Message]],
    cite: Sequence[Sequence[Evidence]],
    generation: GenerationConfig,
) -> list[str]:
    """Generated answers whose rationale items cite lines of ``cite``: the model writes the answer up to its
    emotion list, then ``write_rationales`` continues it (freely where ``cite`` has no lines). An answer that
    does not reach the contract's rationale (no contract, a ``<think>`` cut short) stays as the model wrote
    it."""
    head_config = replace(generation, stop=[*generation.stop, ANSWER_HEAD_CLOSE])
    texts = backend.generate(batch, head_config)
    ready = [i for i, text in enumerate(texts) if _OPEN_EMOTION_LIST.search(text)]
    if ready:
        prompts = [backend.prompt_text(batch[i]) + texts[i] + ANSWER_HEAD_CLOSE for i in ready]
        tails = write_rationales(backend, prompts, [cite[i] for i in ready], generation)
        for i, tail in zip(ready, tails, strict=True):
            texts[i] += ANSWER_HEAD_CLOSE + tail
    return texts


def _per_conversation(
    backend: Backend, batch: Sequence[Sequence[Message]], content_free: Sequence[Sequence[Message]] | None
) -> bool:
    """Whether to go conversation by conversation: a backend that keeps one sequence's KV cache
    (``Backend.sequential``) then continues the rationale on the cache the scoring left instead of evaluating
    the prompt again."""
    if content_free is not None and len(content_free) != len(batch):
        raise ValueError("content_free needs one conversation per conversation in the batch")
    return len(batch) > 1 and bool(getattr(backend, "sequential", False))


def choose_labels(
    backend: Backend,
    batch: Sequence[Sequence[Message]],
    labels: Sequence[str],
    generation: GenerationConfig,
    calibrate: bool | LabelPrior = True,
    content_free: Sequence[Sequence[Message]] | None = None,
    explain: bool = True,
    cite: Sequence[Sequence[Evidence]] | None = None,
) -> list[ChoiceResult]:
    """``choose_label`` for many conversations: one scoring call and one generation call for the batch (or one
    conversation at a time on a sequential backend). ``cite``: per conversation, the evidence lines its
    prompt shows; every rationale item then cites one of them (``write_rationales``)."""
    labels = list(dict.fromkeys(str(lab) for lab in labels))
    if not labels:
        raise ValueError("choosing a label needs the label set")
    if _per_conversation(backend, batch, content_free):
        out = []
        for i, messages in enumerate(batch):
            own = None if content_free is None else [content_free[i]]
            ids = None if cite is None else [cite[i]]
            out += choose_labels(backend, [messages], labels, generation, calibrate, own, explain, ids)
        return out
    if not batch:
        return []
    prompts, results = _score_batch(backend, batch, labels, calibrate, content_free)
    _write_answers(backend, prompts, results, generation, explain, cite)
    return results


def likely_set(scores: dict[str, float], max_emotions: int, min_ratio: float) -> list[str]:
    """The labels whose probability is at least ``min_ratio`` times the best one's, best first, at most
    ``max_emotions``; the best label always. Ties keep the candidates' order."""
    if not scores:
        return []
    order = sorted(scores, key=lambda lab: -scores[lab])  # sorted() is stable: ties keep the given order
    best = scores[order[0]]
    # p / p_best >= min_ratio  <=>  log p - log p_best >= log min_ratio
    floor = math.log(min_ratio) if min_ratio > 0 else -math.inf
    return [lab for lab in order if scores[lab] - best >= floor][:max_emotions]


def choose_emotions(
    backend: Backend,
    batch: Sequence[Sequence[Message]],
    candidates: Sequence[str] | None,
    generation: GenerationConfig,
    max_emotions: int = 4,
    min_ratio: float = 0.3,
    calibrate: bool = False,
    explain: bool = True,
    cite: Sequence[Sequence[Evidence]] | None = None,
) -> list[ChoiceResult]:
    """Open-vocabulary emotions by likelihood: every candidate word is scored as the answer (as for a closed
    set), and the answer names the ones whose probability is close to the best one's (:func:`likely_set`).

    Why: the embedded 270M model, generating freely, names one emotion per clip and repeats its favourite
    one ("angry" for half of OV-MERD), while the gold names three on average. Its probabilities over a
    vocabulary still rank the plausible emotions, so several can be read from one scored pass. The
    candidates (default :func:`default_candidates`) bound the vocabulary; give a larger list for more words.
    ``calibrate`` is off by default because on OV-MERD dev the content-free prior removed useful signal
    (docs/training.md, stage 5c). The rationale is generated after the chosen list (``explain``), its items
    citing lines of ``cite`` as in ``choose_labels``. Without calibration, words that cannot reach
    ``min_ratio`` are not scored to the end where the backend can stop early (llama.cpp), and are absent from
    ``scores``.
    """
    words = list(dict.fromkeys(str(c) for c in (candidates or default_candidates())))
    if not words:
        raise ValueError("choosing emotions needs candidate words")
    if max_emotions < 1:
        raise ValueError("max_emotions must be at least 1")
    if _per_conversation(backend, batch, None):
        out = []
        for i, messages in enumerate(batch):
            ids = None if cite is None else [cite[i]]
            out += choose_emotions(
                backend, [messages], words, generation, max_emotions, min_ratio, calibrate, explain, ids
            )
        return out
    if not batch:
        return []
    # A word below min_ratio of the best cannot be named, so its scoring may stop early (exact, see
    # LlamaCppBackend.continuation_logprobs_pruned); its score is then absent.
    margin = -math.log(min_ratio) if min_ratio > 0 else None
    prompts, results = _score_batch(backend, batch, words, calibrate, None, prune_margin=margin)
    for result in results:
        result.labels = likely_set(result.calibrated, max_emotions, min_ratio)
    _write_answers(backend, prompts, results, generation, explain, cite)
    return results


@functools.cache
def default_candidates() -> tuple[str, ...]:
    """The packaged candidate vocabulary for likelihood decoding of open-vocabulary answers
    (``affectllm/data/ov_candidates.json``; where its words come from is written in the file)."""
    data = json.loads(data_path("ov_candidates.json").read_text(encoding="utf-8"))
    return tuple(data["words"])


def choose_label(
    backend: Backend,
    messages: Sequence[Message],
    labels: Sequence[str],
    generation: GenerationConfig,
    calibrate: bool | LabelPrior = True,
    content_free: Sequence[Message] | None = None,
    explain: bool = True,
    cite: Sequence[Evidence] | None = None,
) -> ChoiceResult:
    """Pick the label of a closed set that the model finds most likely as its answer to ``messages``.

    ``calibrate=True`` subtracts the label scores on a content-free prompt (``content_free``, default
    ``content_free_messages(messages)``); the prior is cached per backend and content-free prompt, so a run over
    a dataset pays for it once. A :class:`LabelPrior` adds its fitted offsets instead; ``False``: raw scores.
    ``explain`` continues the answer greedily after the chosen label to write the rationale (up to
    ``generation.max_new_tokens``, stopping at ``</answer>``); without it the answer has an empty rationale.
    ``cite`` (the evidence lines the prompt shows) makes each rationale item cite one of them. Raises
    ``ScoringUnsupported`` for a backend without log-probabilities.
    """
    return choose_labels(
        backend,
        [messages],
        labels,
        generation,
        calibrate=calibrate,
        content_free=None if content_free is None else [content_free],
        explain=explain,
        cite=None if cite is None else [cite],
    )[0]


__all__ = [
    "ANSWER_PREFIX",
    "ChoiceResult",
    "LabelPrior",
    "choose_emotions",
    "choose_label",
    "choose_labels",
    "content_free_clip",
    "content_free_messages",
    "default_candidates",
    "fit_label_prior",
    "label_continuation",
    "likely_set",
    "score_continuations",
]
