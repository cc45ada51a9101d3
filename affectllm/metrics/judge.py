"""An optional LLM judge for rationales: clue overlap and label overlap, each scored 1-10.

EMER evaluates explanations by asking a strong LLM how many emotion clues, and how much of the emotional
state, a predicted description shares with the reference. This module does the same through any
OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp's server, ``affectllm serve``): fixed prompt texts
(``PROMPT_VERSION``), temperature 0, a strict reply format with a tolerant parser, and every per-sample
failure (network error, unreadable reply) recorded instead of stopping the run.

Nothing else in affectllm needs it; the embedding-based cue metrics in ``affectllm.metrics.rationale`` are the
offline default.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from affectllm.errors import InputError, require

PROMPT_VERSION = "judge-v1"

JUDGE_SYSTEM = (
    "You are a careful evaluator of explanations for emotion recognition in video clips. You compare a "
    "predicted description with a reference description written by a human annotator. Judge only what the "
    "two texts say; do not reward length or fluent wording. Reply with exactly one line: Score: <integer 1-10>."
)

CLUE_OVERLAP_PROMPT = """Compare the emotion CLUES in the two descriptions below: observable evidence such as \
facial expressions, gaze, gestures and posture, tone of voice, pitch, loudness and speaking rate, what is said, \
and the scene. Ignore the emotion labels themselves.

Score how much the predicted description's clues overlap with the reference's clues:
1 = no clue in common, or the predicted clues contradict the reference;
5 = about half of the reference clues appear in the prediction;
10 = every reference clue appears in the prediction and nothing contradicts it.

Reference description:
{reference}

Predicted description:
{prediction}

Reply with exactly one line: Score: <integer 1-10>"""

LABEL_OVERLAP_PROMPT = """Compare the EMOTIONAL STATES the two descriptions below attribute to the person \
(the emotion words and what they conclude), not the evidence.

Score how much the predicted emotional state overlaps with the reference emotional state:
1 = unrelated or opposite emotions;
5 = partly the same (for example a related emotion, or only one of several);
10 = the same emotional state.

Reference description:{reference_labels}
{reference}

Predicted description:{prediction_labels}
{prediction}

Reply with exactly one line: Score: <integer 1-10>"""

#: Where the judge's endpoint, model and key come from when not passed in.
BASE_URL_ENV = "AFFECTLLM_JUDGE_BASE_URL"
MODEL_ENV = "AFFECTLLM_JUDGE_MODEL"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"

_SCORE_PATTERNS = (
    re.compile(r"\bscore\b\s*(?:is|=|:)?\s*\**\s*\[*\s*(\d+(?:\.\d+)?)", re.I),
    re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"),
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:/\s*10|out of 10)\b", re.I),
)


def parse_score(text: str, low: float = 1.0, high: float = 10.0) -> float | None:
    """The judge's score from its reply, or ``None`` when the reply holds no unambiguous score in range.

    Reads ``Score: 7``, ``**Score:** 7``, ``[[7]]``, ``7/10``, ``7 out of 10``, a JSON object with a ``score``
    key, or a reply that is only a number. A bare number inside free text is not trusted (it may be a count).
    """
    if not text:
        return None
    stripped = text.strip()
    candidates: list[str] = []
    try:
        obj = json.loads(stripped)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, Mapping):
        for key in ("score", "Score", "rating"):
            if key in obj:
                candidates.append(str(obj[key]))
                break
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        candidates.append(str(obj))
    if not candidates:
        for pattern in _SCORE_PATTERNS:
            m = pattern.search(stripped)
            if m:
                candidates.append(m.group(1))
                break
    if not candidates and re.fullmatch(r"\d+(?:\.\d+)?\.?", stripped):
        candidates.append(stripped.rstrip("."))
    for candidate in candidates:
        try:
            value = float(candidate)
        except ValueError:
            continue
        if math.isfinite(value) and low <= value <= high:
            return value
    return None


def rationale_text(value: Any) -> str:
    """A rationale in any accepted form (text, list of strings, rationale items/dicts) as plain text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Mapping):
        if "rationale" in value:
            return rationale_text(value["rationale"])
        text = str(value.get("cue") or value.get("text") or "").strip()
        cue_id = value.get("cue_id") or value.get("id")
        return f"[{cue_id}] {text}".strip() if cue_id else text
    if hasattr(value, "cue"):  # RationaleItem
        return rationale_text({"cue": value.cue, "cue_id": getattr(value, "cue_id", None)})
    if isinstance(value, Sequence):
        return "\n".join(f"- {t}" for t in (rationale_text(v) for v in value) if t)
    return str(value)


@dataclass
class JudgeScore:
    """One sample's judgement; a score is ``None`` when it could not be obtained (see ``errors``)."""

    name: str
    clue_overlap: float | None = None
    label_overlap: float | None = None
    errors: list[str] = field(default_factory=list)
    calls: int = 0  # requests sent to the endpoint for this sample
    failed_calls: int = 0  # of which failed: transport/API errors and replies without a score
    replies: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Consecutive failed calls, from the start of a run, after which the judge stops sending requests.
GIVE_UP_AFTER = 4


class LLMJudge:
    """Scores predicted rationales against references through an OpenAI-compatible chat endpoint.

    ``base_url`` / ``model`` default to ``$AFFECTLLM_JUDGE_BASE_URL`` (else ``$OPENAI_BASE_URL``, else the
    OpenAI API) and ``$AFFECTLLM_JUDGE_MODEL``; the key is read from the environment variable ``api_key_env``.
    A local endpoint needs no key ("EMPTY" is sent).
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        timeout: float = 120.0,
        max_retries: int = 2,
        max_tokens: int = 16,
    ) -> None:
        openai = require("openai", "openai", "The LLM judge")
        self.base_url = base_url or os.environ.get(BASE_URL_ENV) or os.environ.get("OPENAI_BASE_URL") or None
        self.model = model or os.environ.get(MODEL_ENV)
        if not self.model:
            raise InputError(None, f"the LLM judge needs a model name: pass --model or set ${MODEL_ENV}")
        api_key = os.environ.get(api_key_env)
        if not api_key:
            if self.base_url is None:
                raise InputError(
                    None,
                    f"the LLM judge needs an API key in ${api_key_env}, or a --base-url of a local server",
                )
            api_key = "EMPTY"
        self.max_tokens = max_tokens
        self._client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key, timeout=timeout, max_retries=max_retries
        )

    def _ask(self, prompt: str) -> str:
        response = self._client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}],
            temperature=0.0,
            max_tokens=self.max_tokens,
        )
        if not response.choices:
            raise ValueError("the endpoint returned no choices")
        return response.choices[0].message.content or ""

    def score_one(
        self,
        name: str,
        prediction: Any,
        reference: Any,
        pred_labels: Sequence[str] | None = None,
        ref_labels: Sequence[str] | None = None,
    ) -> JudgeScore:
        """Judge one sample; never raises for endpoint or parsing failures (they land in ``errors``)."""
        result = JudgeScore(name)
        pred_text, ref_text = rationale_text(prediction), rationale_text(reference)
        if not pred_text:
            # Nothing to compare: the lowest score, without spending a call (and not an error).
            result.clue_overlap = result.label_overlap = 1.0
            return result
        prompts = {
            "clue_overlap": CLUE_OVERLAP_PROMPT.format(reference=ref_text, prediction=pred_text),
            "label_overlap": LABEL_OVERLAP_PROMPT.format(
                reference=ref_text,
                prediction=pred_text,
                reference_labels=_labels_line(ref_labels),
                prediction_labels=_labels_line(pred_labels),
            ),
        }
        for key, prompt in prompts.items():
            result.calls += 1
            try:
                reply = self._ask(prompt)
            except Exception as exc:  # any transport/API failure is a per-sample error, not a crash
                result.errors.append(f"{key}: {type(exc).__name__}: {str(exc)[:200]}")
                result.failed_calls += 1
                continue
            result.replies[key] = reply
            score = parse_score(reply)
            if score is None:
                result.errors.append(f"{key}: no score 1-10 in the reply {reply[:80]!r}")
                result.failed_calls += 1
            setattr(result, key, score)
        return result

    def score(
        self,
        pred: Mapping[str, Any],
        ref: Mapping[str, Any],
        pred_labels: Mapping[str, Sequence[str]] | None = None,
        ref_labels: Mapping[str, Sequence[str]] | None = None,
    ) -> dict[str, Any]:
        """Judge every reference sample. Means are over the samples that got a score; ``n_*`` say how many.

        When the first ``GIVE_UP_AFTER`` calls all fail (a dead or wrong endpoint), the remaining samples are
        not sent (each would wait through the client's retries) and are recorded as failed.
        """
        samples: list[JudgeScore] = []
        for name in ref:
            calls = sum(s.calls for s in samples)
            if calls >= GIVE_UP_AFTER and all(s.failed_calls == s.calls for s in samples):
                skipped = JudgeScore(name, errors=[f"not sent: the first {calls} judge calls all failed"])
                skipped.calls = skipped.failed_calls = 2
                samples.append(skipped)
                continue
            samples.append(
                self.score_one(
                    name,
                    pred.get(name),
                    ref[name],
                    None if pred_labels is None else pred_labels.get(name),
                    None if ref_labels is None else ref_labels.get(name),
                )
            )
        return summarize(samples, model=self.model, base_url=self.base_url)


def summarize(samples: Sequence[JudgeScore], **info: Any) -> dict[str, Any]:
    """Corpus means of judge scores (1-10) and the per-sample records, errors included."""
    out: dict[str, Any] = {}
    for key in ("clue_overlap", "label_overlap"):
        values = [getattr(s, key) for s in samples if getattr(s, key) is not None]
        out[key] = sum(values) / len(values) if values else None
        out[f"n_{key}"] = len(values)
    out.update(
        {
            "n": len(samples),
            "n_errors": sum(1 for s in samples if s.errors),
            "n_calls": sum(s.calls for s in samples),
            "n_failed_calls": sum(s.failed_calls for s in samples),
            "prompt_version": PROMPT_VERSION,
            **info,
            "samples": {s.name: s.to_dict() for s in samples},
        }
    )
    return out


def _labels_line(labels: Sequence[str] | None) -> str:
    return f" (labels: {', '.join(labels)})" if labels else ""
