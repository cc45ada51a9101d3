"""The one interface every backend implements: chat messages + sampling settings → text."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# OpenAI-style chat messages. ``content`` is a string, or a list of parts for multimodal backbones:
# {"type": "text", "text": ...}, {"type": "image", "path"|"image": ...}, {"type": "audio", "path"|"array": ...}.
Message = dict[str, Any]


@dataclass
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = 0
    stop: list[str] = field(default_factory=list)
    # A JSON schema the answer must follow, for backends that can constrain decoding (vLLM, OpenAI).
    json_schema: dict[str, Any] | None = None
    repetition_penalty: float | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def text_of(content: Any) -> str:
    """The text of a message's content, whether a string or a list of parts (non-text parts dropped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(
        str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
    )


def text_only(messages: Sequence[Message]) -> list[Message]:
    """Messages with every content flattened to text, for text-only backbones."""
    return [{**m, "content": text_of(m.get("content"))} for m in messages]


def has_media(messages: Sequence[Message]) -> bool:
    return any(
        isinstance(m.get("content"), list) and any(p.get("type") in ("image", "audio") for p in m["content"])
        for m in messages
    )


class StopTrimmer:
    """Applies stop strings to streamed text: yields only text that cannot be the start of a stop string,
    and ends at the first stop (engines without native stop strings behave like those with them)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.done = False

    def feed(self, piece: str) -> str:
        if self.done:
            return ""
        self.buffer += piece
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i != -1), default=-1)
        if cut != -1:
            out, self.buffer, self.done = self.buffer[:cut], "", True
            return out
        # Hold back the longest suffix that is a prefix of some stop string.
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buffer)), 0, -1):
                if self.buffer.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.buffer[: len(self.buffer) - hold]
        self.buffer = self.buffer[len(out) :]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.done else self.buffer), ""
        return out


def apply_stops(text: str, stops: Sequence[str]) -> str:
    """Cut ``text`` at the first stop string (the stop itself is dropped, as OpenAI-style engines do)."""
    trimmer = StopTrimmer(stops)
    return trimmer.feed(text) + trimmer.flush()


class ScoringUnsupported(NotImplementedError):
    """The backend (or the server behind it) cannot return log-probabilities of given continuations, so a
    closed label set cannot be chosen by likelihood there; free generation still works."""


def scoring_unsupported(backend: str, why: str) -> ScoringUnsupported:
    return ScoringUnsupported(
        f"the {backend} backend cannot score label candidates: {why}. "
        "Choose the emotions by free generation instead (decoding='generate')."
    )


def render_chat_template(
    template: str, messages: Sequence[Message], add_generation_prompt: bool = True
) -> str:
    """A Jinja chat template rendered in a sandbox, with an empty BOS: engines that take raw prompt text
    (llama.cpp, vLLM and llama.cpp servers) add BOS when they tokenize, and rendering it too would double it."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=text_only(messages), add_generation_prompt=add_generation_prompt, bos_token="", eos_token=""
    )


class Backend(abc.ABC):
    """A loaded model. ``generate`` takes a batch (backends batch where they can); ``stream`` yields text
    pieces as they are decoded (backends that cannot stream yield the whole answer once)."""

    name: str = "base"
    #: what was loaded (a path, hub id or served model name), for reports
    model_id: str = ""
    #: whether messages may carry image/audio parts (text-only backbones get the cue text alone)
    supports_images: bool = False
    supports_audio: bool = False
    #: decodes one sequence at a time and keeps the last prompt's KV cache (llama.cpp): callers that score a
    #: prompt and then continue it do both before the next prompt
    sequential: bool = False
    #: runs in this process, so scoring a few evidence ids and continuing raw text costs little: the reasoner
    #: then writes generated answers' rationales so they cite only lines their prompt shows
    #: (``affectllm.choice.generate_cited``; likelihood-decoded answers do so on every scoring backend)
    cites_by_likelihood: bool = False

    @abc.abstractmethod
    def generate(self, batch: Sequence[Sequence[Message]], config: GenerationConfig) -> list[str]:
        """One completion per conversation in ``batch``."""

    def stream(self, messages: Sequence[Message], config: GenerationConfig) -> Iterator[str]:
        yield self.generate([messages], config)[0]

    # Likelihood scoring (``affectllm.choice``): optional; backends that expose log-probabilities override
    # all three. The prompts are raw text as ``prompt_text`` renders it, so a caller can append an assistant
    # prefix (the start of the answer) that a chat template would otherwise close as a finished turn.

    def prompt_text(self, messages: Sequence[Message]) -> str:
        """The exact raw prompt string this backend feeds the model for ``messages`` (generation prompt on)."""
        raise scoring_unsupported(self.name, "it does not expose the raw prompt text it feeds the model")

    def continuation_logprobs(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[list[float]]]:
        """``out[p][c][t]``: the log-probability of token ``t`` of ``continuations[c]`` following raw prompt
        text ``prompts[p]`` (tokens of the continuation tokenized on its own, after the prompt's tokens)."""
        raise scoring_unsupported(self.name, "it does not return log-probabilities")

    def complete(self, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
        """Generation continuing raw prompt text (no chat template applied), one completion per prompt."""
        raise scoring_unsupported(self.name, "it cannot continue raw prompt text")

    def close(self) -> None:  # noqa: B027 - optional hook; most backends have something to release
        """Release model memory / connections."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
