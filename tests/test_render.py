"""The cue renderer: stable ids and order, modality toggles, the token budget, line formats."""

from __future__ import annotations

from affectllm.schema import Clip, Cue
from affectllm.textualize.render import (
    approx_tokens,
    assign_ids,
    cue_line,
    format_time,
    ordered_cues,
    render_cues,
)


def sample_cues() -> list[Cue]:
    return [
        Cue(
            "facial",
            "AU12 lip corner puller",
            2.31,
            "intensity 0-5",
            "B",
            0.4,
            1.8,
            detail="slight (B), peak 2.31",
        ),
        Cue("acoustic", "pitch", 245.0, "Hz", "high", 0.0, 2.0),
        Cue("linguistic", "speech", "I can't believe it", start=0.2, end=1.9),
        Cue("facial", "AU04 brow lowerer", 1.1, "intensity 0-5", "A", 0.1, 0.9),
        Cue("visual-scene", "scene", "A kitchen at night."),
        Cue("facial", "head movement", 2.0, "deg SD", "small"),
    ]


def test_ids_follow_modality_then_time_and_are_deterministic():
    ids = [(cid, c.name) for cid, c in assign_ids(sample_cues())]
    assert ids == [
        ("A1", "pitch"),
        ("F1", "head movement"),  # whole-clip cues first
        ("F2", "AU04 brow lowerer"),
        ("F3", "AU12 lip corner puller"),
        ("S1", "scene"),
        ("L1", "speech"),
    ]
    assert assign_ids(list(reversed(sample_cues()))) == assign_ids(sample_cues())
    assert next(iter(ordered_cues(sample_cues()))).name == "pitch"


def test_cue_line_formats():
    cues = sample_cues()
    assert cue_line("F3", cues[0]) == "F3 [0.4-1.8s] AU12 lip corner puller: slight (B), peak 2.31"
    assert cue_line("A1", cues[1]) == "A1 [0.0-2.0s] pitch: high (245 Hz)"
    assert cue_line("L1", cues[2]) == 'L1 [0.2-1.9s] speech: "I can\'t believe it"'
    assert cue_line("S1", cues[4]) == "S1 [whole clip] scene: A kitchen at night."
    assert cue_line("X1", Cue("facial", "AU28 lip suck")) == "X1 [whole clip] AU28 lip suck: present"
    assert format_time(1.0, 1.02) == "1.0s" and format_time(3.0, None) == "3.0s"


def test_headers_and_modality_toggle():
    text = render_cues(Clip("c", sample_cues()))
    assert text.splitlines()[0] == "Acoustic (voice and prosody):"
    assert text.index("Facial action units:") < text.index("Visual scene:") < text.index("Speech content:")
    only_face = render_cues(sample_cues(), modalities=["face"])
    assert only_face.splitlines() == [
        "Facial action units:",
        "F1 [whole clip] head movement: small (2.00 deg SD)",
        "F2 [0.1-0.9s] AU04 brow lowerer: A (1.10 intensity 0-5)",
        "F3 [0.4-1.8s] AU12 lip corner puller: slight (B), peak 2.31",
    ]
    assert render_cues([]) == "No evidence was extracted for this clip."
    assert "F1" not in render_cues(sample_cues(), with_headers=False).split("\n")[0]


def test_budget_keeps_every_modality_and_ids_stable():
    cues = sample_cues() + [
        Cue("facial", f"AU{n:02d} extra", 1.0, None, "A", n / 10, n / 10 + 0.5) for n in range(20, 40)
    ]
    full = render_cues(cues)
    tight = render_cues(cues, max_tokens=90)
    assert approx_tokens(tight) <= 90
    assert "lower-priority cues omitted" in tight
    for header in ("Acoustic", "Facial", "Visual scene", "Speech content"):
        assert header in tight
    # A kept cue keeps the id it has in the full rendering.
    for line in tight.splitlines():
        if line[:1] in "AFSL" and line[1:2].isdigit():
            assert line in full.splitlines()
    assert render_cues(cues, max_tokens=10_000) == full
