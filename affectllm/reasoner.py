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
from typing import TYPE_CHECKING, Any

from affectllm.backends.base import Backend, GenerationConfig, Message
from affectllm.errors import InputError
from affectllm.prompting import ANSWER_CLOSE, ANSWER_OPEN
from affectllm.schema import Clip, Media, Prediction
from affectllm.settings import PromptSettings

if TYPE_CHECKING:
    from affectllm.choice import LabelPrior

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
    """Answer emotion questions about clips with one backend and one set of prompt settings.

    ``settings`` (a frozen :class:`~affectllm.settings.PromptSettings`) decides the messages exactly as the
    training data builders do; ``snap_labels`` maps a closed-set answer onto the label set (tasks that score the
    model's own word turn it off). Frames and audio go only to backbones that accept them. ``cite_evidence``:
    structured answers cite only evidence ids their prompt shows, each id chosen by likelihood
    (``affectllm.choice.write_rationales``) wherever the backend can score; False leaves the rationale free.
    """

    def __init__(
        self,
        backend: Backend,
        settings: PromptSettings | None = None,
        generation: GenerationConfig | None = None,
        snap_labels: bool = True,
        send_media: bool | None = None,
        num_frames: int = 4,
        cite_evidence: bool = True,
    ) -> None:
        self.backend = backend
        self.cite_evidence = cite_evidence
        self.settings = settings or PromptSettings()
        self.generation = generation or default_generation(self.settings.task)
        self.snap_labels = snap_labels
        self.num_frames = num_frames
        # Fitted offsets for ``calibration: label_prior`` (``fit_label_prior``); None until fitted.
        self.label_prior: LabelPrior | None = None
        self.send_media = (
            bool(getattr(backend, "supports_images", False) or getattr(backend, "supports_audio", False))
            if send_media is None
            else send_media
        )

    @property
    def task(self) -> str:
        return self.settings.task

    @property
    def labels(self) -> list[str] | None:
        return list(self.settings.labels) or None

    # -- prompts ---------------------------------------------------------------------------------------
    def messages(self, clip: Clip, question: str | None = None, media: Media | None = None) -> list[Message]:
        """The chat messages for one clip (the builder training data uses, with the same settings object);
        ``media`` given (a chat session's, decoded once) is attached instead of decoding the clip again."""
        from affectllm.prompting import build_messages

        if media is None and self.send_media:
            media = self.media(clip)
        return build_messages(clip, self.settings, question=question, media=media)

    def media(self, clip: Clip) -> Media | None:
        """Key frames and audio of the clip's media file, for the kinds of input the backend accepts."""
        if not clip.media or not Path(clip.media).is_file():
            return None
        from affectllm import media as decode

        images = getattr(self.backend, "supports_images", False) and decode.probe(clip.media).has_video
        frames = decode.sample_frames(clip.media, num_frames=self.num_frames, max_side=448) if images else []
        audio = decode.load_audio(clip.media) if getattr(self.backend, "supports_audio", False) else None
        return Media(frames=tuple(frames), audio=audio) or None

    def parse(self, text: str, clip: Clip | None = None) -> Prediction:
        from affectllm.parsing import parse_answer

        return parse_answer(text, clip=clip, labels=self.labels if self.snap_labels else None)

    # -- inference -------------------------------------------------------------------------------------
    def predict(self, clip: Clip, question: str | None = None) -> Prediction:
        """One clip → one parsed Prediction (``raw`` keeps the model text)."""
        return self._answer([clip], [self.messages(clip, question)])[0]

    @property
    def decoding(self) -> str:
        """How answers are chosen: ``likelihood`` or ``generate`` (``auto`` left unresolved reads as generate)."""
        decoding = self.settings.decoding
        return (
            "likelihood"
            if decoding == "likelihood" and self.settings.task in ("ov", "closed")
            else "generate"
        )

    def _answer(self, clips: Sequence[Clip], conversations: list[list[Message]]) -> list[Prediction]:
        from affectllm import choice
        from affectllm.prompting import shown_evidence

        settings = self.settings
        likelihood = self.decoding == "likelihood"
        text_only = all(isinstance(m.get("content"), str) for c in conversations for m in c)
        # Generated answers are continued by the citing writer only on in-process backends (Backend docs).
        writes_cited = likelihood or (
            settings.task != "chat" and text_only and self.backend.cites_by_likelihood
        )
        # What each prompt shows is all its rationale may cite.
        cite = (
            [shown_evidence(clip, settings) for clip in clips]
            if self.cite_evidence and writes_cited
            else None
        )
        if likelihood:
            if settings.task == "closed":
                choices = choice.choose_labels(
                    self.backend,
                    conversations,
                    list(settings.labels),
                    self.generation,
                    calibrate=self._closed_calibration(),
                    cite=cite,
                )
            else:
                choices = choice.choose_emotions(
                    self.backend,
                    conversations,
                    settings.candidates,
                    self.generation,
                    max_emotions=settings.max_emotions,
                    min_ratio=settings.min_ratio,
                    cite=cite,
                )
            out = []
            for clip, chosen in zip(clips, choices, strict=True):
                pred = self.parse(chosen.answer_text, clip)
                pred.label_scores = dict(chosen.calibrated or chosen.scores)
                out.append(pred)
            return out
        if cite is not None:
            texts = choice.generate_cited(self.backend, conversations, cite, self.generation)
        else:
            texts = self.backend.generate(conversations, self.generation)
        return [self.parse(text, clip) for clip, text in zip(clips, texts, strict=True)]

    def _closed_calibration(self) -> bool | LabelPrior:
        calibration = self.settings.calibration
        if calibration != "label_prior":
            return calibration == "content_free"
        if self.label_prior is None:
            raise InputError(
                None,
                "calibration 'label_prior' needs a prior fitted on labelled rows: `affectllm eval run` fits it "
                "on the task's training split; from Python call EmotionReasoner.fit_label_prior(clips, gold)",
            )
        return self.label_prior

    def fit_label_prior(self, clips: Sequence[Clip], gold: Sequence[str], batch_size: int = 8) -> LabelPrior:
        """Fit (and keep) the ``label_prior`` calibration of a closed label set on labelled clips of a training
        split: each clip's label scores without a rationale, then ``affectllm.choice.fit_label_prior``."""
        from affectllm import choice

        labels = list(self.settings.labels)
        if self.settings.task != "closed" or not labels:
            raise InputError(None, "a label prior needs a closed label set (task 'closed' with labels)")
        scores: list[dict[str, float]] = []
        for start in range(0, len(clips), batch_size):
            batch = [self.messages(clip) for clip in clips[start : start + batch_size]]
            results = choice.choose_labels(
                self.backend, batch, labels, self.generation, calibrate=False, explain=False
            )
            scores += [r.scores for r in results]
        self.label_prior = choice.fit_label_prior(scores, list(gold))
        return self.label_prior

    def predict_batch(
        self,
        clips: Sequence[Clip],
        batch_size: int = 8,
        questions: Sequence[str | None] | None = None,
        return_exceptions: bool = False,
    ) -> list[Prediction | Exception]:
        """Predictions for many clips, ``batch_size`` conversations per backend call.

        With ``return_exceptions=True`` a failing batch is retried one clip at a time and a clip that still
        fails yields its exception in place of a Prediction, so one bad item cannot sink the rest.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.settings.uses_label_prior:
            self._closed_calibration()  # an unfitted label prior is one error, not one per batch
        clips = list(clips)
        questions = list(questions) if questions is not None else [None] * len(clips)
        if len(questions) != len(clips):
            raise ValueError("questions must have one entry per clip")
        out: list[Prediction | Exception] = []
        for start in range(0, len(clips), batch_size):
            end = start + batch_size
            out.extend(self._run_batch(clips[start:end], questions[start:end], return_exceptions))
        return out

    def _run_batch(
        self, clips: list[Clip], questions: list[str | None], return_exceptions: bool
    ) -> list[Prediction | Exception]:
        prompts: list[list[Message] | Exception] = []
        for clip, q in zip(clips, questions, strict=True):
            try:
                prompts.append(self.messages(clip, q))
            except Exception as exc:
                if not return_exceptions:
                    raise
                prompts.append(exc)
        ready = [i for i, p in enumerate(prompts) if not isinstance(p, Exception)]
        results: list[Any] = list(prompts)  # a prompt that could not be built keeps its exception
        try:
            answers = self._answer([clips[i] for i in ready], [prompts[i] for i in ready]) if ready else []
        except Exception as exc:
            if not return_exceptions:
                raise
            # Find the culprit: retry one conversation at a time (a lone one is its own culprit).
            answers = (
                [exc] if len(ready) == 1 else [self._answer_or_error(clips[i], prompts[i]) for i in ready]
            )
        for i, answer in zip(ready, answers, strict=True):
            results[i] = answer
        return results

    def _answer_or_error(self, clip: Clip, messages: Any) -> Prediction | Exception:
        try:
            return self._answer([clip], [messages])[0]
        except Exception as exc:
            return exc

    def chat(self, clip: Clip) -> ChatSession:
        """A conversation about ``clip`` that keeps its history for follow-up questions."""
        return ChatSession(self, clip)


# The question a first turn without one asks, as the templates word it (kept in the follow-up history).
_DEFAULT_QUESTIONS = {
    "ov": "Which emotions does the speaker show, and which evidence supports them?",
    "closed": "Which label fits best?",
}


def follow_up_messages(
    clip: Clip,
    settings: PromptSettings,
    exchanges: list[Message],
    question: str,
    media: Media | None = None,
) -> list[Message]:
    """The messages of a follow-up question: the ``chat`` prompt over the same clip and evidence, with the
    conversation so far (``[user, assistant, ...]``, first user turn = the first question). Inference and the
    follow-up training rows both build them here."""
    from affectllm.prompting import build_messages

    chat = settings.replace(task="chat", template=None, labels=(), few_shot=0, question=None)
    return build_messages(clip, chat, history=exchanges, question=question, media=media)


@dataclass
class Turn:
    role: str
    content: str
    prediction: Prediction | None = None
    seconds: float | None = None
    # For a user turn: the question as the model saw it (the default question when the person asked none).
    asked: str | None = None

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

    The first turn asks the reasoner's task (for ``ov``/``closed`` the structured answer contract, with the
    person's question in place of the default one). Follow-up questions switch to the ``chat`` prompt: the
    same evidence, the conversation so far, and an instruction to answer in prose that cites evidence ids —
    the form the default adapter's follow-up training rows take (``affectllm.training.data``). Every assistant
    turn is parsed, so ``last_prediction`` always holds the newest emotions and cited cues.
    """

    reasoner: EmotionReasoner
    clip: Clip
    history: list[Message] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    _media: Media | None = field(default=None, init=False, repr=False)

    @property
    def last_prediction(self) -> Prediction | None:
        for turn in reversed(self.turns):
            if turn.prediction is not None:
                return turn.prediction
        return None

    def expects_structured_reply(self) -> bool:
        """Whether the next reply is the answer contract (the first turn of ov/closed) rather than prose."""
        return not self.turns and self.reasoner.settings.task != "chat"

    def _clip_media(self) -> Media:
        # Decoded once per conversation: every follow-up attaches the same frames and audio.
        if self._media is None:
            self._media = (self.reasoner.media(self.clip) if self.reasoner.send_media else None) or Media()
        return self._media

    def _exchanges(self) -> list[Message]:
        """The conversation so far without the evidence: ``[user, assistant, ...]``."""
        out: list[Message] = []
        for turn in self.turns:
            content = turn.content if turn.role == "assistant" or turn.asked is None else turn.asked
            out.append({"role": turn.role, "content": content})
        return out

    def _next(self, user_text: str | None) -> tuple[list[Message], GenerationConfig]:
        if not self.turns:
            return self.reasoner.messages(self.clip, user_text, self._clip_media()), self.reasoner.generation
        if not user_text or not user_text.strip():
            raise ValueError("a follow-up needs a question")
        messages = follow_up_messages(
            self.clip, self.reasoner.settings, self._exchanges(), user_text, self._clip_media()
        )
        first = self.reasoner.generation
        return messages, default_generation("chat", first.max_new_tokens, first.temperature)

    def stream_reply(self, user_text: str | None = None) -> Iterator[str]:
        """Yield the reply in pieces as the backend decodes it; the turn is recorded when the stream ends.

        ``user_text=None`` on the first turn asks the task's default question (the full analysis).
        """
        if not self.turns and self.reasoner.decoding == "likelihood":
            # The emotions come from one scoring pass, not a decoded stream: the answer arrives whole.
            yield self.ask(user_text)
            return
        messages, generation = self._next(user_text)
        started = time.perf_counter()
        pieces: list[str] = []
        for piece in self.reasoner.backend.stream(messages, generation):
            pieces.append(piece)
            yield piece
        self._record(messages, user_text, "".join(pieces), time.perf_counter() - started)

    def ask(self, user_text: str | None = None) -> str:
        """The whole reply at once (one ``generate`` call)."""
        messages, generation = self._next(user_text)
        started = time.perf_counter()
        if not self.turns:
            prediction = self.reasoner._answer([self.clip], [messages])[0]
            self._record(messages, user_text, prediction.raw, time.perf_counter() - started, prediction)
            return prediction.raw
        text = self.reasoner.backend.generate([messages], generation)[0]
        self._record(messages, user_text, text, time.perf_counter() - started)
        return text

    def _record(
        self,
        messages: list[Message],
        asked: str | None,
        reply: str,
        seconds: float,
        prediction: Prediction | None = None,
    ) -> None:
        structured = self.expects_structured_reply()
        if structured and ANSWER_OPEN in reply and ANSWER_CLOSE not in reply:
            # Engines drop the stop string; the conversation keeps the answer whole, as the model wrote it.
            reply = reply.rstrip() + ANSWER_CLOSE
        self.history = [*messages, {"role": "assistant", "content": reply}]
        if prediction is None:
            from affectllm.parsing import parse_answer

            # Prose follow-ups are never snapped onto a label set: they name what the person asked about.
            prediction = (
                self.reasoner.parse(reply, self.clip) if structured else parse_answer(reply, self.clip)
            )
        default_question = self.reasoner.settings.question or _DEFAULT_QUESTIONS.get(
            self.reasoner.settings.task
        )
        self.turns.append(
            Turn(
                "user",
                asked if asked is not None else "(analysis of the clip)",
                asked=asked or default_question,
            )
        )
        self.turns.append(Turn("assistant", reply, prediction, seconds))

    # -- transcript ------------------------------------------------------------------------------------
    def evidence_text(self) -> str:
        from affectllm.textualize.render import render_cues

        return render_cues(self.clip, modalities=self.reasoner.settings.modalities)

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
    settings: PromptSettings | None = None,
    generation: GenerationConfig | None = None,
    few_shot: int | bool | None = None,
    snap_labels: bool = True,
    task: Any = None,
    **backend_options: Any,
) -> EmotionReasoner:
    """Load a backend (defaults from ``affectllm.models``) and wrap it in an EmotionReasoner.

    ``task`` may be an evaluation task (a name, a YAML path or an ``affectllm.tasks.Task``): its prompt
    settings, decoding and parser policy are used, exactly as ``affectllm eval run`` uses them. Otherwise
    ``settings`` (default: open vocabulary) and ``generation`` apply. ``few_shot=None`` decides by the model:
    only the bare embedded base model gets the template's examples, because a base model follows the answer
    contract only after seeing it; a served model's nature is unknown here.
    """
    from affectllm import models
    from affectllm.backends import get_backend

    if task is not None:
        from affectllm.tasks import generation_config, load_task

        task = load_task(task) if isinstance(task, (str, Path)) else task
        settings = settings or task.prompt
        generation = generation or generation_config(task)
        snap_labels = task.parser_labels
    settings = settings or PromptSettings()
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
        bare_base = (
            name != "openai" and models.is_default_model(model) and getattr(loaded, "adapter", None) is None
        )
        few_shot = -1 if bare_base and settings.few_shot == 0 else settings.few_shot
    settings = settings.replace(few_shot=few_shot, decoding=resolve_decoding(settings, loaded, model))
    return EmotionReasoner(loaded, settings, generation or default_generation(settings.task), snap_labels)


def resolve_decoding(settings: PromptSettings, backend: Backend, model: str | None = None) -> str:
    """What ``decoding="auto"`` means for this model: ``likelihood`` for open-vocabulary answers of the embedded
    default model (with or without an adapter) on a backend that can score; ``generate`` otherwise.

    Why by model: the 270M default, generating, names one habitual emotion per clip; ranking its own
    probabilities over a candidate vocabulary names several and lifts EW-F on OV-MERD dev (docs/training.md,
    stage 5c). A larger served model writes its own open-vocabulary list, which a fixed candidate list would
    only narrow. Closed sets stay generated: a closed choice is as good as its calibration, and the one that
    pays (``label_prior``) needs labelled rows, so the tasks that have them ask for likelihood themselves.
    """
    from affectllm import models
    from affectllm.backends.base import Backend as BaseBackend

    if settings.decoding != "auto":
        return settings.decoding
    scores = type(backend).continuation_logprobs is not BaseBackend.continuation_logprobs
    embedded = models.is_default_model(model) and getattr(backend, "name", "") in ("llamacpp", "transformers")
    return "likelihood" if settings.task == "ov" and scores and embedded else "generate"
