"""A scripted backend: replies come from a list or a function, no model and no torch.

For tests of everything around the model (the reasoner, the chat REPL, the CLI, batch jobs) that must assert
exact outputs, and for users who want to dry-run a pipeline. It records every conversation it was sent.

    get_backend("mock", replies=["<answer>{...}</answer>", "Because [L1]."])
    get_backend("mock", reply=lambda messages: ...)
    affectllm chat clip.txt --backend mock --model 'replies.jsonl'     # one JSON string per line

Replies are used in order and the last one repeats; stop strings apply as on a real engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from affectllm.backends.base import Backend, GenerationConfig, Message, apply_stops
from affectllm.errors import InputError


def _read_replies(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "mock replies file not found (one JSON string per line)")
    replies = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not a JSON string: {exc.msg}", line=lineno) from None
        if not isinstance(value, str):
            raise InputError(path, "each line must be a JSON string (one reply)", line=lineno)
        replies.append(value)
    if not replies:
        raise InputError(path, "no replies")
    return replies


class MockBackend(Backend):
    """Answers from a script: ``replies`` (in order, the last repeats) or ``reply(messages) -> str``;
    ``model`` may name a JSONL file of replies (how the CLI passes a script)."""

    name = "mock"

    def __init__(
        self,
        model: str | None = None,
        replies: Sequence[str] | None = None,
        reply: Callable[[Sequence[Message]], str] | None = None,
        adapter: str | None = None,
        supports_images: bool = False,
        supports_audio: bool = False,
    ) -> None:
        if replies is None and reply is None:
            if not model:
                raise InputError(None, "the mock backend needs replies=[...], reply=callable or --model FILE")
            replies = _read_replies(model)
        self.replies = list(replies or [])
        self.reply = reply
        self.model_id = str(model or "mock")
        self.adapter = None if adapter in (None, "none") else adapter
        self.supports_images = supports_images
        self.supports_audio = supports_audio
        self.sent: list[list[Message]] = []
        self._next = 0

    def _answer(self, messages: Sequence[Message]) -> str:
        self.sent.append(list(messages))
        if self.reply is not None:
            return self.reply(messages)
        text = self.replies[min(self._next, len(self.replies) - 1)]
        self._next += 1
        return text

    def generate(self, batch: Sequence[Sequence[Message]], config: GenerationConfig) -> list[str]:
        return [apply_stops(self._answer(messages), config.stop) for messages in batch]

    def stream(self, messages: Sequence[Message], config: GenerationConfig) -> Iterator[str]:
        text = self.generate([messages], config)[0]
        # Word by word, so consumers of a stream see several pieces as from a real engine.
        pieces = text.split(" ")
        for i, piece in enumerate(pieces):
            yield piece if i == len(pieces) - 1 else piece + " "
