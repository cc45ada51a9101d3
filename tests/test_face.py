"""Facial action units: OpenFace / py-feat CSV reading, episodes, co-activations, pose and gaze, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from affectllm.errors import InputError
from affectllm.textualize import facs
from affectllm.textualize.face import face_cues_from_csv, read_au_csv, run_openface, summarise_faces
from affectllm.textualize.render import render_cues

OPENFACE_R = [1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45]
OPENFACE_C = [*OPENFACE_R[:-1], 28, 45]
EMOTION_WORDS = ("happ", "joy", "sad", "anger", "angry", "fear", "disgust", "surprise", "contempt", "smil")


def write_openface(
    path: Path,
    n: int = 60,
    fps: float = 10.0,
    active: dict[int, tuple[range, float]] | None = None,
    faces: dict[int, int] | None = None,
    success: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    pose: np.ndarray | None = None,
    gaze: np.ndarray | None = None,
    intensity_profile: dict[int, np.ndarray] | None = None,
) -> Path:
    """An OpenFace 2.x FeatureExtraction CSV (", " separators, as the tool writes them)."""
    faces = faces or {0: n}
    header = ["frame", "face_id", "timestamp", "confidence", "success"]
    if gaze is not None:
        header += ["gaze_angle_x", "gaze_angle_y"]
    if pose is not None:
        header += ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    header += [f"AU{a:02d}_r" for a in OPENFACE_R] + [f"AU{a:02d}_c" for a in OPENFACE_C]
    lines = [", ".join(header)]
    for face, count in faces.items():
        for i in range(count):
            r = {a: 0.0 for a in OPENFACE_R}
            c = {a: 0.0 for a in OPENFACE_C}
            for au, (frames, value) in (active or {}).items():
                if i in frames:
                    r[au] = value
                    c[au] = 1.0
            for au, profile in (intensity_profile or {}).items():
                r[au] = float(profile[i])
                c[au] = 1.0 if profile[i] >= 0.5 else 0.0
            ok = 1 if success is None else int(success[i])
            conf = 0.98 if confidence is None else float(confidence[i])
            row = [str(i + 1), str(face), f"{i / fps:.3f}", f"{conf:.2f}", str(ok)]
            if gaze is not None:
                row += [f"{gaze[i, 0]:.3f}", f"{gaze[i, 1]:.3f}"]
            if pose is not None:
                row += ["0.0", "0.0", "500.0", f"{pose[i, 0]:.3f}", f"{pose[i, 1]:.3f}", f"{pose[i, 2]:.3f}"]
            row += [f"{r[a]:.2f}" for a in OPENFACE_R] + [f"{c[a]:.1f}" for a in OPENFACE_C]
            lines.append(", ".join(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def au_cues(cues, au: int):
    return [c for c in cues if c.name == facs.au_label(au)]


# ------------------------------------------------------------------------------------------------ FACS table


def test_facs_names_and_intensity_cutoffs():
    assert facs.au_label(12) == "AU12 lip corner puller"
    assert facs.au_name(1) == "inner brow raiser" and facs.au_name(45) == "blink"
    assert facs.au_name(28) == "lip suck" and facs.au_name(43) == "eyes closed"
    cases = {
        0.0: None,
        0.49: None,
        0.5: "A",
        1.49: "A",
        1.5: "B",
        2.5: "C",
        3.49: "C",
        3.5: "D",
        4.5: "E",
        5.0: "E",
    }
    for value, band in cases.items():
        assert facs.intensity_band(value) == band, value
    assert facs.intensity_band(float("nan")) is None
    codes = facs.intensity_codes(np.array([0.2, 0.7, 2.0, 3.0, 4.0, 4.9, np.nan]))
    assert codes.tolist() == [0, 1, 2, 3, 4, 5, 0]


def test_coactivation_table_is_evidence_not_labels():
    labels = {p.label for p in facs.CO_ACTIVATIONS}
    assert {
        "AU6+AU12",
        "AU1+AU4+AU15",
        "AU4+AU5+AU7+AU23",
        "AU9+AU15",
        "AU1+AU2+AU5+AU26",
        "AU12+AU14",
    } <= labels
    for pattern in facs.CO_ACTIVATIONS:
        assert all(a in facs.AU_TABLE for a in pattern.aus)
        assert not any(w in pattern.evidence.lower() for w in EMOTION_WORDS), pattern.evidence


# ------------------------------------------------------------------------------------ synthetic OpenFace CSVs


def test_exact_onset_apex_offset_and_band(tmp_path):
    profile = np.zeros(60)
    profile[10:20] = [0.8, 1.2, 1.8, 2.4, 3.0, 2.6, 2.0, 1.4, 1.0, 0.7]
    csv = write_openface(tmp_path / "a.csv", intensity_profile={12: profile})
    cues = face_cues_from_csv(csv)
    [cue] = au_cues(cues, 12)
    assert cue.start == pytest.approx(1.0) and cue.end == pytest.approx(1.9)
    assert cue.band == "C" and cue.value == pytest.approx(3.0)
    assert "apex 1.4s" in cue.detail and "onset 1.0s" in cue.detail and "offset 1.9s" in cue.detail
    assert "marked (C)" in cue.detail
    assert cue.source == "openface:a.csv#face0"
    assert cue.confidence == pytest.approx(0.98)


def test_flicker_is_smoothed_and_blips_dropped(tmp_path):
    profile = np.zeros(80)
    profile[10:30] = 2.0
    profile[19] = 0.0  # one-frame dropout inside the episode
    profile[50] = 2.0  # an isolated one-frame blip
    csv = write_openface(tmp_path / "f.csv", n=80, intensity_profile={4: profile})
    [cue] = au_cues(face_cues_from_csv(csv), 4)
    assert cue.start == pytest.approx(1.0) and cue.end == pytest.approx(2.9)
    assert "episodes in all" not in cue.detail


def test_separate_episodes_ranked_and_counted(tmp_path):
    profile = np.zeros(100)
    profile[5:10] = 1.0  # short and weak
    profile[30:60] = 3.8  # long and strong -> first
    profile[80:90] = 2.0
    csv = write_openface(tmp_path / "e.csv", n=100, intensity_profile={15: profile})
    cues = au_cues(face_cues_from_csv(csv), 15)
    assert [c.band for c in cues] == ["D", "B", "A"]
    assert all("3 episodes in all" in c.detail for c in cues)
    cues = au_cues(face_cues_from_csv(csv, max_episodes_per_au=1), 15)
    assert len(cues) == 1 and cues[0].start == pytest.approx(3.0)


def test_coactivation_reported_as_evidence(tmp_path):
    csv = write_openface(tmp_path / "d.csv", active={6: (range(10, 40), 2.2), 12: (range(15, 40), 2.8)})
    cues = face_cues_from_csv(csv)
    [duchenne] = [c for c in cues if c.name == "AU6+AU12"]
    assert "cheek raiser with lip corner puller" in duchenne.detail and "Duchenne" in duchenne.detail
    assert duchenne.start == pytest.approx(1.5) and duchenne.end == pytest.approx(3.9)
    assert duchenne.value == pytest.approx(2.5) and duchenne.unit == "s"
    for cue in cues:
        text = f"{cue.name} {cue.detail}".lower()
        assert not any(w in text for w in EMOTION_WORDS), text


def test_larger_pattern_subsumes_smaller(tmp_path):
    span = range(10, 40)
    csv = write_openface(
        tmp_path / "s.csv", active={1: (span, 2.0), 2: (span, 2.0), 5: (span, 2.0), 26: (span, 2.0)}
    )
    names = {c.name for c in face_cues_from_csv(csv)}
    assert "AU1+AU2+AU5+AU26" in names
    assert "AU1+AU2" not in names and "AU1+AU2+AU5" not in names


def test_failed_and_low_confidence_frames_are_ignored(tmp_path):
    n = 60
    success = np.ones(n, dtype=int)
    success[10:30] = 0
    confidence = np.full(n, 0.98)
    confidence[40:55] = 0.3
    csv = write_openface(
        tmp_path / "x.csv",
        n=n,
        success=success,
        confidence=confidence,
        active={9: (range(10, 30), 3.0), 10: (range(40, 55), 3.0), 17: (range(0, 8), 2.0)},
    )
    cues = face_cues_from_csv(csv)
    assert not au_cues(cues, 9) and not au_cues(cues, 10)
    assert len(au_cues(cues, 17)) == 1
    assert au_cues(face_cues_from_csv(csv, confidence_threshold=0.2), 10)


def test_all_frames_failed_gives_explicit_no_cue(tmp_path):
    csv = write_openface(tmp_path / "z.csv", n=30, success=np.zeros(30), active={12: (range(0, 30), 3.0)})
    [cue] = face_cues_from_csv(csv)
    assert cue.name == "face tracking" and cue.value == "no face tracked"
    assert "30" in cue.detail
    assert "no face tracked" in render_cues([cue])


def test_tracked_face_without_activity_says_so(tmp_path):
    csv = write_openface(tmp_path / "n.csv", n=40)
    cues = face_cues_from_csv(csv)
    assert [c.name for c in cues if c.name == "facial activity"] == ["facial activity"]


def test_primary_face_is_most_tracked(tmp_path):
    # face 0 has fewer rows than face 1; face 1 is the primary one.
    csv = write_openface(tmp_path / "m.csv", faces={0: 20, 1: 50}, active={12: (range(5, 18), 2.0)})
    cues = face_cues_from_csv(csv)
    primary = [c for c in cues if c.source.endswith("#face1")]
    other = [c for c in cues if c.source.endswith("#face0")]
    assert primary and len(other) == 1 and other[0].name == "other face 0"
    assert "AU12 lip corner puller" in other[0].detail
    full = face_cues_from_csv(csv, all_faces=True)
    assert any(c.name == "face 0: AU12 lip corner puller" for c in full)


def test_head_pose_and_gaze_episodes(tmp_path):
    n = 80
    pose = np.zeros((n, 3))
    pose[20:50, 0] = 0.45  # ~26° pitch: head down
    gaze = np.zeros((n, 2))
    gaze[60:80, 0] = 0.4  # ~23° gaze_angle_x: looking left
    csv = write_openface(tmp_path / "p.csv", n=n, pose=pose, gaze=gaze)
    cues = {c.name: c for c in face_cues_from_csv(csv)}
    down = cues["head tilted down"]
    assert down.start == pytest.approx(2.0) and down.end == pytest.approx(4.9)
    assert down.value == pytest.approx(math.degrees(0.45), abs=0.1) and down.unit == "deg"
    left = cues["gaze averted left"]
    assert left.start == pytest.approx(6.0) and left.end == pytest.approx(7.9)
    assert cues["gaze toward camera"].value == pytest.approx(0.75)
    assert cues["head movement"].band in {"small", "moderate", "large"}


def test_blink_rate(tmp_path):
    n = 300  # 30 s at 10 fps, a 0.2 s blink every 3 s
    profile = np.zeros(n)
    for start in range(10, n, 30):
        profile[start : start + 2] = 1.5
    csv = write_openface(tmp_path / "b.csv", n=n, intensity_profile={45: profile})
    [blink] = [c for c in face_cues_from_csv(csv) if c.name == "blink rate"]
    assert blink.value == pytest.approx(20.0) and blink.band == "typical"
    assert not au_cues(face_cues_from_csv(csv), 45)  # blinks are a rate, not AU episodes


def test_frames_without_timestamps_use_frame_numbers(tmp_path):
    csv = tmp_path / "t.csv"
    rows = ["frame, AU12_r, AU12_c"] + [
        f"{i}, {2.0 if 20 <= i < 50 else 0.0}, {1 if 20 <= i < 50 else 0}" for i in range(90)
    ]
    csv.write_text("\n".join(rows) + "\n")
    frames = read_au_csv(csv, fps=30)
    assert frames.time_source == "frame/30fps"
    [cue] = au_cues(face_cues_from_csv(csv, fps=30), 12)
    assert cue.start == pytest.approx(20 / 30) and cue.end == pytest.approx(49 / 30)


def test_pyfeat_csv(tmp_path):
    aus = [1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 17, 20, 23, 24, 25, 26, 28, 43]
    header = ["frame", "FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight", "FaceScore"]
    header += [f"AU{a:02d}" for a in aus] + ["anger", "happiness", "input"]
    lines = [",".join(header)]
    for i in range(60):
        scores = {a: 0.1 for a in aus}
        if 15 <= i < 45:
            scores[24] = 0.92
        lines.append(
            ",".join(
                [
                    str(i),
                    "10",
                    "10",
                    "50",
                    "60",
                    "0.99",
                    *[f"{scores[a]:.2f}" for a in aus],
                    "0.1",
                    "0.2",
                    "v.mp4",
                ]
            )
        )
    csv = tmp_path / "v.au.csv"
    csv.write_text("\n".join(lines) + "\n")
    frames = read_au_csv(csv, fps=30)
    assert frames.kind == "pyfeat" and 24 in frames.aus and 11 in frames.aus
    [cue] = au_cues(face_cues_from_csv(csv, fps=30), 24)
    assert cue.name == "AU24 lip pressor" and cue.unit == "score 0-1" and cue.band is None
    assert cue.value == pytest.approx(0.92) and cue.start == pytest.approx(0.5)
    assert cue.source == "pyfeat:v.au.csv#face0"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "empty file"),
        (
            "frame, face_id, timestamp, confidence, success, pose_Rx\n1, 0, 0.0, 0.9, 1, 0.1\n",
            "no action-unit columns",
        ),
        ("frame, timestamp, AU12_r, AU12_c\n", "header only"),
    ],
)
def test_bad_csv_raises_input_error_naming_file(tmp_path, content, problem):
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    with pytest.raises(InputError) as info:
        face_cues_from_csv(csv)
    assert problem in str(info.value) and "bad.csv" in str(info.value)


def test_missing_csv_and_missing_openface_binary(tmp_path):
    with pytest.raises(InputError, match="not found"):
        face_cues_from_csv(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="not found on PATH"):
        run_openface(tmp_path / "v.mp4", tmp_path / "out", binary="NoSuchOpenFaceFeatureExtraction")


# ------------------------------------------------------------------------------------------ real OpenFace CSVs


def test_real_multi_face_csv_with_failed_frames(shared_data):
    path = shared_data / "openface" / "act409_clip1_FaceLandmarkVidMulti_withFE.csv"
    frames = read_au_csv(path)
    assert frames.kind == "openface" and len(frames) == 698
    assert set(np.unique(frames.face_id)) == {0, 1}
    assert 28 in frames.aus and not np.isfinite(frames.intensity[:, frames.aus.index(28)]).any()
    summaries = summarise_faces(frames)
    assert [s.face_id for s in summaries] == [0, 1]
    assert summaries[0].tracked_frames > summaries[1].tracked_frames
    assert summaries[0].tracked_frames <= 354  # success=1 rows of face 0, fewer after the confidence cut

    cues = face_cues_from_csv(path)
    assert sum(c.name == "other face 1" for c in cues) == 1
    au = [c for c in cues if c.name.startswith("AU") and "+" not in c.name]
    assert au and all(c.band in facs.INTENSITY_LETTERS for c in au)
    assert all(0.0 <= c.start <= c.end <= 30.3 for c in cues if c.start is not None)
    text = render_cues(cues)
    assert text.startswith("Facial action units:") and "F1 " in text


def test_real_openface_csv_with_gaze_vectors(shared_data):
    path = shared_data / "openface" / "pyfeat_OpenFace_Test.csv"
    frames = read_au_csv(path)
    assert frames.kind == "openface" and len(frames) == 100
    assert frames.gaze is not None and frames.pose is not None  # gaze from per-eye vectors
    assert np.all(np.abs(frames.gaze) < 0.5)
    cues = {c.name: c for c in face_cues_from_csv(path)}
    assert "gaze toward camera" in cues and "head movement" in cues
    assert cues["head movement"].detail.startswith("small")
