"""A chat session about a video decodes the clip's key frames once and attaches the same frames to every turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from affectllm.backends.mock import MockBackend
from affectllm.reasoner import EmotionReasoner
from affectllm.schema import Clip

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "surprise_joy.mp4"


def _image_parts(conversation: list[dict]) -> int:
    return sum(
        1
        for message in conversation
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image"
    )


def test_chat_session_samples_frames_once_for_all_turns(monkeypatch) -> None:
    pytest.importorskip("av")
    from affectllm import media

    calls: list[str] = []
    sample_frames = media.sample_frames

    def counting_sample_frames(path, *args, **kwargs):
        calls.append(str(path))
        return sample_frames(path, *args, **kwargs)

    monkeypatch.setattr(media, "sample_frames", counting_sample_frames)
    backend = MockBackend(
        replies=['<answer>{"emotions": ["surprised"], "rationale": []}</answer>', "Because of L1 [L1]."],
        supports_images=True,
    )
    reasoner = EmotionReasoner(backend, num_frames=2)
    session = reasoner.chat(Clip("c1", [], media=str(EXAMPLE), transcript="No way, you did this for me?"))
    session.ask()
    session.ask("Why do you think so?")
    session.ask("Was the speaker happy?")

    assert calls == [str(EXAMPLE)]
    assert [_image_parts(conversation) for conversation in backend.sent] == [2, 2, 2]
