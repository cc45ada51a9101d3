"""The reasoning step every user-facing command shares: Clip → messages → backend → parsed Prediction.

``EmotionReasoner`` ties one loaded backend to one task's prompt settings, so ``affectllm chat``, ``predict``
and ``eval run`` build prompts and parse answers the same way (and the same way training data is built).
``ChatSession`` keeps a conversation about one clip for follow-up questions, with streaming replies and a
saveable transcript. ``load_reasoner`` resolves the embedded default model and adapter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectllm.backends.base import Backend, GenerationConfig, Message
from affectllm.errors import InputError
from affectllm.schema import Clip, Prediction

DEFAULT_MAX_NEW_TOKENS = 384


def default_generation(
    task: str = "ov", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = 0.0
) -> GenerationConfig:
    """Greedy decoding that stops once a structured answer is closed (prose chat replies run to the limit).

    Stopping at ``</answer>`` matters for speed: a base model otherwise keeps writing further turns.
    """
    from affectllm.prompting import STOP_SEQUENCES, normalize_task

    stop = [] if normalize_task(task) == "chat" else list(STOP_SEQUENCES)
    return GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, stop=stop)


class EmotionReasoner:
    """Answer emotion questions about clips with one backend and one task's prompt settings.

    ``few_shot=None`` means "no examples": callers that run the *base* embedded model (``load_reasoner``
    decides) turn it on, because a base model only follows the answer contract after seeing it.
    ``modalities`` and ``max_cue_tokens`` select and cap the evidence shown, as in ``render_cues``.
    """

    def __init__(
        self,
        backend: Backend,
        task: str = "ov",
        generation: GenerationConfig | None = None,
        few_shot: bool | None = None,
        labels: Sequence[str] | None = None,
        modalities: Sequence[str] | None = None,
        max_cue_tokens: int | None = None,
        template: str | None = None,
        send_media: bool | None = None,
    ) -> None:
        if task == "closed" and not labels:
            raise InputError(None, "task 'closed' needs the label set (labels=[...])")
        self.backend = backend
        self.task = task
        self.generation = generation or default_generation(task)
        self.few_shot = bool(few_shot)
        self.labels = list(labels) if labels else None
        self.modalities = list(modalities) if modalities else None
        self.max_cue_tokens = max_cue_tokens
        self.template = template
        # Frames/audio only go to backbones that accept them; text-only models get the cue text alone.
        self.send_media = (
            bool(getattr(backend, "supports_images", False) or getattr(backend, "supports_audio", False))
            if send_media is None
            else send_media
        )

    # -- prompts ---------------------------------------------------------------------------------------
    def messages(
        self,
        clip: Clip,
        question: str | None = None,
        context: list[dict] | None = None,
        task: str | None = None,
    ) -> list[Message]:
        """The chat messages for one clip (the same builder training data uses)."""
        from affectllm.prompting import build_messages

        media = self._media(clip) if self.send_media else None
        return build_messages(
            clip,
            task=task or self.task,
            transcript=clip.transcript,
            context=context,
            labels=self.labels,
            few_shot=self.few_shot,
            modalities=self.modalities,
            max_cue_tokens=self.max_cue_tokens,
            media=media,
            template=self.template,
            question=question,
        )

    def _media(self, clip: Clip) -> dict[str, Any] | None:
        if not clip.media or not Path(clip.media).exists():
            return None
        media: dict[str, Any] = {"path": clip.media}
        if getattr(self.backend, "supports_images", False):
            media["video"] = clip.media
        if getattr(self.backend, "supports_audio", False):
            media["audio"] = clip.media
        return media

    def parse(self, text: str, clip: Clip | None = None) -> Prediction:
        from affectllm.parsing import parse_answer

        return parse_answer(text, clip=clip, labels=self.labels)

    # -- inference -------------------------------------------------------------------------------------
    def predict(
        self, clip: Clip, question: str | None = None, context: list[dict] | None = None
    ) -> Prediction:
        """One clip → one parsed Prediction (``raw`` keeps the model text)."""
        text = self.backend.generate([self.messages(clip, question, context)], self.generation)[0]
        return self.parse(text, clip)

    def predict_batch(
        self,
        clips: Sequence[Clip],
        batch_size: int = 8,
        questions: Sequence[str | None] | None = None,
        contexts: Sequence[list[dict] | None] | None = None,
        return_exceptions: bool = False,
    ) -> list[Prediction | Exception]:
        """Predictions for many clips, ``batch_size`` conversations per backend call.

        With ``return_exceptions=True`` a failing batch is retried one clip at a time and a clip that still
        fails yields its exception in place of a Prediction, so one bad item cannot sink the rest.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        n = len(clips)
        questions = list(questions) if questions is not None else [None] * n
        contexts = list(contexts) if contexts is not None else [None] * n
        if len(questions) != n or len(contexts) != n:
            raise ValueError("questions and contexts must have one entry per clip")
        out: list[Prediction | Exception] = []
        for start in range(0, n, batch_size):
            idx = range(start, min(n, start + batch_size))
            out.extend(self._run_batch([clips[i] for i in idx], [questions[i] for i in idx],
                                       [contexts[i] for i in idx], return_exceptions))  # fmt: skip
        return out

    def _run_batch(
        self,
        clips: list[Clip],
        questions: list[str | None],
        contexts: list[list[dict] | None],
        return_exceptions: bool,
    ) -> list[Prediction | Exception]:
        prompts: list[list[Message] | Exception] = []
        for clip, q, ctx in zip(clips, questions, contexts, strict=True):
            try:
                prompts.append(self.messages(clip, q, ctx))
            except Exception as exc:
                if not return_exceptions:
                    raise
                prompts.append(exc)
        ready = [i for i, p in enumerate(prompts) if not isinstance(p, Exception)]
        results: list[Prediction | Exception] = [
            p if isinstance(p, Exception) else Prediction() for p in prompts
        ]
        if not ready:
            return results
        try:
            texts = self.backend.generate([prompts[i] for i in ready], self.generation)  # type: ignore[misc]
        except Exception as exc:
            if not return_exceptions:
                raise
            if len(ready) == 1:
                results[ready[0]] = exc
                return results
            # Find the culprit: retry one conversation at a time.
            for i in ready:
                try:
                    text = self.backend.generate([prompts[i]], self.generation)[0]  # type: ignore[list-item]
                    results[i] = self.parse(text, clips[i])
                except Exception as item_exc:
                    results[i] = item_exc
            return results
        for i, text in zip(ready, texts, strict=True):
            results[i] = self.parse(text, clips[i])
        return results

    def chat(self, clip: Clip, context: list[dict] | None = None) -> ChatSession:
        """A conversation about ``clip`` that keeps its history for follow-up questions."""
        return ChatSession(self, clip, context)


@dataclass
class Turn:
    role: str
    content: str
    prediction: Prediction | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.prediction is not None:
            out["prediction"] = self.prediction.to_dict()
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        return out


@dataclass
class ChatSession:
    """A multi-turn conversation about one clip.

    The first turn carries the evidence (the task's prompt, with the person's question in place of the
    default one); later turns are plain user messages appended to the history, so the model sees the evidence
    and its earlier answers. Every assistant turn is parsed, so ``last_prediction`` always holds the newest
    emotions and cited cues.
    """

    reasoner: EmotionReasoner
    clip: Clip
    context: list[dict] | None = None
    history: list[Message] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)

    @property
    def last_prediction(self) -> Prediction | None:
        for turn in reversed(self.turns):
            if turn.prediction is not None:
                return turn.prediction
        return None

    def _next_messages(self, user_text: str | None) -> list[Message]:
        if not self.history:
            return self.reasoner.messages(self.clip, question=user_text, context=self.context)
        if not user_text or not user_text.strip():
            raise ValueError("a follow-up needs a question")
        return [*self.history, {"role": "user", "content": user_text}]

    def stream_reply(self, user_text: str | None = None) -> Iterator[str]:
        """Yield the reply in pieces as the backend decodes it; the turn is recorded when the stream ends.

        ``user_text=None`` on the first turn asks the task's default question (the full analysis).
        """
        messages = self._next_messages(user_text)
        started = time.perf_counter()
        pieces: list[str] = []
        for piece in self.reasoner.backend.stream(messages, self.reasoner.generation):
            pieces.append(piece)
            yield piece
        self._record(messages, user_text, "".join(pieces), time.perf_counter() - started)

    def ask(self, user_text: str | None = None) -> str:
        """The whole reply at once (one ``generate`` call)."""
        messages = self._next_messages(user_text)
        started = time.perf_counter()
        text = self.reasoner.backend.generate([messages], self.reasoner.generation)[0]
        self._record(messages, user_text, text, time.perf_counter() - started)
        return text

    def _record(self, messages: list[Message], user_text: str | None, reply: str, seconds: float) -> None:
        self.history = [*messages, {"role": "assistant", "content": reply}]
        question = user_text if user_text is not None else "(analysis of the clip)"
        self.turns.append(Turn("user", question))
        self.turns.append(Turn("assistant", reply, self.reasoner.parse(reply, self.clip), seconds))

    # -- transcript ------------------------------------------------------------------------------------
    def evidence_text(self) -> str:
        from affectllm.textualize.render import render_cues

        return render_cues(self.clip, modalities=self.reasoner.modalities)

    def to_dict(self) -> dict[str, Any]:
        backend = self.reasoner.backend
        return {
            "clip": self.clip.clip_id,
            "media": self.clip.media,
            "backend": getattr(backend, "name", type(backend).__name__),
            "model": model_name(backend),
            "task": self.reasoner.task,
            "transcript": self.clip.transcript,
            "evidence": self.evidence_text(),
            "cues": [c.to_dict() for c in self.clip.cues],
            "turns": [t.to_dict() for t in self.turns],
        }

    def to_markdown(self) -> str:
        lines = [f"# Conversation about `{self.clip.clip_id}`", ""]
        if self.clip.media:
            lines += [f"Media: `{self.clip.media}`", ""]
        if self.clip.transcript:
            lines += [f"Transcript: \u201c{self.clip.transcript}\u201d", ""]
        lines += ["## Evidence", "", "```", self.evidence_text(), "```", ""]
        for turn in self.turns:
            if turn.role == "user":
                lines += [f"**You:** {turn.content}", ""]
                continue
            lines += ["**Model:**", "", turn.content.strip(), ""]
            pred = turn.prediction
            if pred is not None and pred.emotions:
                lines += [f"*Emotions:* {', '.join(pred.emotions)}", ""]
            if pred is not None and pred.rationale:
                cited = [
                    f"{r.cue_id + ': ' if r.cue_id else ''}{r.cue}" + (f" ({r.time})" if r.time else "")
                    for r in pred.rationale
                ]
                lines += ["*Evidence cited:* " + "; ".join(cited), ""]
        return "\n".join(lines).rstrip() + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the transcript: Markdown for ``.md``/``.markdown``, JSON otherwise."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in (".md", ".markdown"):
            path.write_text(self.to_markdown(), encoding="utf-8")
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def model_name(backend: Backend) -> str | None:
    """A printable name for the loaded model (with its adapter, if any)."""
    name = getattr(backend, "model_id", None) or getattr(backend, "model", None)
    adapter = getattr(backend, "adapter", None)
    if name is None:
        return None
    return f"{name} + {adapter}" if adapter else str(name)


def load_reasoner(
    backend: str | None = None,
    model: str | None = None,
    adapter: str | None = None,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    task: str = "ov",
    generation: GenerationConfig | None = None,
    few_shot: bool | None = None,
    labels: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    max_cue_tokens: int | None = None,
    **backend_options: Any,
) -> EmotionReasoner:
    """Load a backend (defaults from ``affectllm.models``) and wrap it in an EmotionReasoner.

    With no model named, the embedded Gemma 3 270M is used with the project's adapter when one is installed;
    the bare base model gets few-shot examples so it follows the answer contract.
    """
    from affectllm import models
    from affectllm.backends import get_backend

    name = backend or models.default_backend()
    options: dict[str, Any] = dict(backend_options)
    # With no model named, the backends resolve the embedded Gemma and its shipped adapter themselves.
    if adapter is not None:
        options["adapter"] = adapter
    if name == "openai":
        options["base_url"] = base_url
        options["api_key_env"] = api_key_env
    elif base_url is not None:
        raise InputError(None, f"--base-url only applies to --backend openai, not {name!r}")
    loaded = get_backend(name, model=model, **options)
    if few_shot is None:
        # Only the bare embedded base model needs examples; a served model's nature is unknown here.
        few_shot = (
            name != "openai" and models.is_default_model(model) and getattr(loaded, "adapter", None) is None
        )
    return EmotionReasoner(
        loaded,
        task=task,
        generation=generation,
        few_shot=few_shot,
        labels=labels,
        modalities=modalities,
        max_cue_tokens=max_cue_tokens,
    )
