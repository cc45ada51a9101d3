"""clip_from_row reads a transcript file as the textualize pipeline does: time-stamped lines keep their times."""

from __future__ import annotations

import pytest

from affectllm.clips import clip_from_row
from affectllm.errors import InputError
from affectllm.settings import ClipSettings


def test_a_timed_transcript_file_keeps_its_times(tmp_path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("[00:00.5] No way.\n[00:02.0] You remembered!\n", encoding="utf-8")
    clip = clip_from_row({"id": "c", "transcript": str(path)}, ClipSettings(source="transcript"))
    assert [(c.name, c.start) for c in clip.cues] == [("speech", 0.5), ("speech", 2.0)]
    assert clip.transcript == "No way. You remembered!"
    assert [e.id for e in clip.evidence()] == ["L1", "L2"]
    with pytest.raises(InputError, match="transcript file not found"):
        clip_from_row({"id": "c", "transcript": str(tmp_path / "gone.txt")})
