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


class Backend(abc.ABC):
    """A loaded model. ``generate`` takes a batch (backends batch where they can); ``stream`` yields text
    pieces as they are decoded (backends that cannot stream yield the whole answer once)."""

    name: str = "base"
    #: whether messages may carry image/audio parts (text-only backbones get the cue text alone)
    supports_images: bool = False
    supports_audio: bool = False

    @abc.abstractmethod
    def generate(self, batch: Sequence[Sequence[Message]], config: GenerationConfig) -> list[str]:
        """One completion per conversation in ``batch``."""

    def stream(self, messages: Sequence[Message], config: GenerationConfig) -> Iterator[str]:
        yield self.generate([messages], config)[0]

    def close(self) -> None:
        """Release model memory / connections."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
