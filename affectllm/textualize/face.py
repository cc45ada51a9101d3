"""Facial action units from OpenFace 2.x or py-feat CSVs → time-stamped, FACS-named evidence cues.

Reading: OpenFace ``FeatureExtraction``/``FaceLandmarkVidMulti`` CSVs (``", "``-separated headers, ``face_id``
for several faces, ``success``/``confidence`` per frame, ``AUxx_r`` intensities 0-5 and ``AUxx_c`` presence,
``pose_R*`` and ``gaze_angle_*``), and py-feat ``Fex`` CSVs (``AUxx`` scores 0-1, ``FaceScore``, optional
``Identity``). Only the needed columns are parsed, so 700-column OpenFace files load quickly.

Summarising is vectorised over frames × AUs with numpy (a majority filter against frame-to-frame flicker, then
run-length episodes with gap merging), so a 10,000-frame file takes milliseconds, not a Python loop per frame.
Per face: AU episodes with onset / apex / offset and a FACS intensity band, co-activations from
:mod:`affectllm.textualize.facs` phrased as evidence, blink rate, head-pose and gaze episodes and summaries.
The primary face is the one tracked in the most frames; other faces get one summary cue each unless asked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from affectllm.errors import MAX_TIME_S, InputError, require
from affectllm.schema import FACIAL, Cue
from affectllm.textualize import facs

DEFAULT_CONFIDENCE = 0.8  # OpenFace frames below this tracking confidence are treated as missing
DEFAULT_FPS = 30.0  # only used when a CSV has neither timestamps nor usable frame times
BLINK_AU = 45

_OPENFACE_AU = re.compile(r"^AU(\d{2})_([rc])$")
_PYFEAT_AU = re.compile(r"^AU(\d{2})$")
_META = {"frame", "face_id", "timestamp", "confidence", "success", "approx_time", "FaceScore", "Identity"}
_POSE = ("pose_Rx", "pose_Ry", "pose_Rz")
_GAZE_ANGLE = ("gaze_angle_x", "gaze_angle_y")
_GAZE_VECTORS = tuple(f"gaze_{eye}_{axis}" for eye in (0, 1) for axis in "xyz")


@dataclass
class AUFrames:
    """All frames of one AU CSV in a tool-neutral layout (rows = CSV rows, in file order)."""

    path: Path
    kind: str  # "openface" | "pyfeat"
    face_id: np.ndarray
    time: np.ndarray
    confidence: np.ndarray
    success: np.ndarray
    aus: tuple[int, ...]
    intensity: np.ndarray  # (frames, AUs): OpenFace 0-5 or py-feat 0-1 score; NaN where the CSV has none
    presence: np.ndarray  # (frames, AUs): OpenFace AUxx_c 0/1; NaN where the CSV has none
    pose: np.ndarray | None = (
        None  # (frames, 3) radians: pitch Rx, yaw Ry, roll Rz (OpenFace, camera-relative)
    )
    gaze: np.ndarray | None = None  # (frames, 2) radians: gaze_angle_x, gaze_angle_y
    time_source: str = "timestamp"

    def __len__(self) -> int:
        return len(self.time)


@dataclass
class AUEpisode:
    au: int
    onset: float
    apex: float
    offset: float
    peak: float | None
    mean: float | None
    band: str | None
    confidence: float | None
    score: float = 0.0  # salience used to rank episodes: duration × peak


@dataclass
class Episode:
    """A span in which a condition held (a co-activation, a head-pose or gaze direction)."""

    label: str
    evidence: str
    onset: float
    offset: float
    value: float | None = None
    unit: str | None = None


@dataclass
class FaceSummary:
    face_id: int
    frames: int
    tracked_frames: int
    start: float
    end: float
    tracked_seconds: float
    confidence: float | None
    au_episodes: list[AUEpisode] = field(default_factory=list)
    episode_counts: dict[int, int] = field(default_factory=dict)
    active_seconds: dict[int, float] = field(default_factory=dict)
    coactivations: list[Episode] = field(default_factory=list)
    pose_episodes: list[Episode] = field(default_factory=list)
    gaze_episodes: list[Episode] = field(default_factory=list)
    blinks: int | None = None
    pose_summary: dict[str, float] | None = None
    gaze_toward_camera: float | None = None


# -------------------------------------------------------------------------------------------------- reading


def read_au_csv(path: str | Path, fps: float | None = None) -> AUFrames:
    """Parse an OpenFace 2.x or py-feat AU CSV. Raises InputError naming the file for unusable input."""
    pd = require("pandas", "audio", "Reading AU CSVs")

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "AU CSV not found")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (no header, no frames)")
    try:
        header = [c.strip() for c in pd.read_csv(path, nrows=0, skipinitialspace=True).columns]
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a readable CSV ({exc})") from None

    openface_cols = [c for c in header if _OPENFACE_AU.match(c)]
    pyfeat_cols = [c for c in header if _PYFEAT_AU.match(c)]
    if openface_cols:
        kind, au_cols = "openface", openface_cols
    elif pyfeat_cols:
        kind, au_cols = "pyfeat", pyfeat_cols
    else:
        raise InputError(
            path, "no action-unit columns (expected OpenFace AUxx_r / AUxx_c or py-feat AUxx columns)"
        )
    wanted = set(au_cols) | _META | set(_POSE) | set(_GAZE_ANGLE) | set(_GAZE_VECTORS)
    try:
        df = pd.read_csv(path, skipinitialspace=True, usecols=lambda c: c.strip() in wanted)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, f"malformed CSV ({exc})") from None
    df.columns = [c.strip() for c in df.columns]
    if df.empty:
        raise InputError(path, "no frames (the CSV has a header only)")
    for col in df.columns:
        if col != "Identity":
            df[col] = pd.to_numeric(df[col], errors="coerce")

    n = len(df)
    _check_values(path, df)
    time, time_source = _frame_times(df, fps)
    _check_column(path, df, f"time ({time_source})", time, 0.0, MAX_TIME_S, allow_nan=False)
    if "face_id" in df:
        face_id = df["face_id"].fillna(-1).to_numpy(dtype=np.int64)
    elif "Identity" in df:
        face_id = pd.factorize(df["Identity"].astype(str))[0].astype(np.int64)
    elif "frame" in df and df["frame"].duplicated().any():
        # Several faces per frame without identities: keep each frame's detection order (py-feat sorts
        # detections consistently only within a shot, which is the best this file can offer).
        face_id = df.groupby("frame").cumcount().to_numpy(dtype=np.int64)
    else:
        face_id = np.zeros(n, dtype=np.int64)

    aus = sorted({int((_OPENFACE_AU.match(c) or _PYFEAT_AU.match(c)).group(1)) for c in au_cols})
    intensity = np.full((n, len(aus)), np.nan)
    presence = np.full((n, len(aus)), np.nan)
    for j, au in enumerate(aus):
        if kind == "openface":
            if f"AU{au:02d}_r" in df:
                intensity[:, j] = df[f"AU{au:02d}_r"].to_numpy(dtype=float)
            if f"AU{au:02d}_c" in df:
                presence[:, j] = df[f"AU{au:02d}_c"].to_numpy(dtype=float)
        else:
            intensity[:, j] = df[f"AU{au:02d}"].to_numpy(dtype=float)

    if kind == "openface":
        confidence = df["confidence"].to_numpy(dtype=float) if "confidence" in df else np.ones(n)
        success = (df["success"].to_numpy(dtype=float) == 1) if "success" in df else np.ones(n, dtype=bool)
    else:
        confidence = df["FaceScore"].to_numpy(dtype=float) if "FaceScore" in df else np.ones(n)
        success = np.isfinite(intensity).any(axis=1)
    confidence = np.nan_to_num(confidence, nan=0.0)

    pose = None
    if kind == "openface" and all(c in df for c in _POSE):
        pose = df[list(_POSE)].to_numpy(dtype=float)
    gaze = None
    if all(c in df for c in _GAZE_ANGLE):
        gaze = df[list(_GAZE_ANGLE)].to_numpy(dtype=float)
    elif all(c in df for c in _GAZE_VECTORS):
        # Older OpenFace CSVs carry only per-eye gaze vectors; OpenFace's own gaze_angle is the angle of the
        # mean of both eyes' vectors (x right, y down, z away from the camera).
        v = df[list(_GAZE_VECTORS)].to_numpy(dtype=float)
        mean = (v[:, 0:3] + v[:, 3:6]) / 2.0
        gaze = np.column_stack([np.arctan2(mean[:, 0], -mean[:, 2]), np.arctan2(mean[:, 1], -mean[:, 2])])

    return AUFrames(
        path=path,
        kind=kind,
        face_id=face_id,
        time=time,
        confidence=confidence,
        success=success,
        aus=tuple(aus),
        intensity=intensity,
        presence=presence,
        pose=pose,
        gaze=gaze,
        time_source=time_source,
    )


# Plausible ranges per column kind (NaN is allowed where OpenFace / py-feat write it for a missed face).
_ANGLE_LIMIT = 2 * np.pi  # radians


def _check_values(path: Path, df) -> None:
    """Reject the first row whose numbers are infinite or out of range, naming the file, line and column."""
    for col in df.columns:
        if col == "Identity":
            continue
        if _OPENFACE_AU.match(col) or _PYFEAT_AU.match(col):
            low, high = (0.0, 1.0) if col.endswith("_c") else (0.0, 5.0)
        elif col in ("confidence", "FaceScore"):
            low, high = 0.0, 1.0
        elif col in _POSE or col in _GAZE_ANGLE:
            low, high = -_ANGLE_LIMIT, _ANGLE_LIMIT
        elif col in ("timestamp", "approx_time"):
            low, high = 0.0, MAX_TIME_S
        elif col in ("frame", "face_id"):
            low, high = -1.0, 1e9
        else:
            low, high = -1e9, 1e9  # translations (mm), gaze vectors, success flags: finite is what matters
        values = df[col].to_numpy(dtype=float)
        # A time column with a hole is corrupt (an all-empty one is simply absent: frame numbers are used).
        allow_nan = col not in ("timestamp", "approx_time") or bool(np.isnan(values).all())
        _check_column(path, df, col, values, low, high, allow_nan=allow_nan)


def _check_column(
    path: Path, df, name: str, values: np.ndarray, low: float, high: float, allow_nan: bool
) -> None:
    bad = np.isinf(values) | (np.isfinite(values) & ((values < low) | (values > high)))
    if not allow_nan:
        bad |= np.isnan(values)
    if bad.any():
        row = int(np.argmax(bad))
        # Line 1 is the header; pandas' index counts data rows from 0.
        raise InputError(
            path,
            f"{name} is {float(values[row]):g}; expected a finite number in [{low:g}, {high:g}]",
            line=int(df.index[row]) + 2,
        )


def _frame_times(df, fps: float | None) -> tuple[np.ndarray, str]:
    n = len(df)
    if "timestamp" in df and df["timestamp"].notna().all():
        ts = df["timestamp"].to_numpy(dtype=float)
        # A CSV from still images has every timestamp 0; fall back to frame numbers then.
        if n == 1 or np.ptp(ts) > 0:
            return ts, "timestamp"
    if "approx_time" in df and df["approx_time"].notna().all():
        return df["approx_time"].to_numpy(dtype=float), "approx_time"
    rate = fps or DEFAULT_FPS
    if "frame" in df and df["frame"].notna().all():
        frames = df["frame"].to_numpy(dtype=float)
        return (frames - frames.min()) / rate, f"frame/{rate:g}fps"
    return np.arange(n, dtype=float) / rate, f"row/{rate:g}fps"


# ---------------------------------------------------------------------------------------------- summarising


def _majority_filter(mask: np.ndarray, window: int) -> np.ndarray:
    """Column-wise sliding majority vote (a binary median filter) over ``window`` frames (odd)."""
    if window <= 1 or mask.shape[0] < 2:
        return mask
    half = window // 2
    padded = np.pad(mask.astype(np.int32), ((half, half), (0, 0)), mode="edge")
    csum = np.cumsum(np.pad(padded, ((1, 0), (0, 0))), axis=0)
    window_sum = csum[window:] - csum[:-window]
    return window_sum > half


def _runs(
    mask: np.ndarray, time: np.ndarray, dt: float, min_duration: np.ndarray, max_gap: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episodes in every column of a frames × conditions mask, as (column, start row, end row exclusive).

    Runs separated by at most ``max_gap[col]`` seconds of inactivity are merged, and episodes shorter than
    ``min_duration[col]`` dropped. Output is sorted by column, then time.
    """
    if mask.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    edges = np.diff(mask.T.astype(np.int8), axis=1, prepend=0, append=0)
    col, start = np.nonzero(edges == 1)
    _, end = np.nonzero(edges == -1)
    if not len(col):
        return col, start, end
    gap = time[start[1:]] - time[end[:-1] - 1] - dt
    merge = (col[1:] == col[:-1]) & (gap <= max_gap[col[1:]] + 1e-9)
    first = np.concatenate([[True], ~merge])
    last = np.concatenate([~merge, [True]])
    col, start, end = col[first], start[first], end[last]
    duration = time[end - 1] - time[start] + dt
    keep = duration >= min_duration[col] - 1e-9
    return col[keep], start[keep], end[keep]


def _segment_reduce(values: np.ndarray, col: np.ndarray, start: np.ndarray, end: np.ndarray):
    """Per-episode nan-max, nan-mean and finite count of a frames × columns array, without a Python loop."""
    n = values.shape[0]
    flat = np.append(values.T.ravel(), np.nan)
    idx = np.empty(2 * len(col), dtype=np.int64)
    idx[0::2] = col * n + start
    idx[1::2] = col * n + end
    finite = np.isfinite(flat)
    peak = np.fmax.reduceat(flat, idx)[0::2]
    total = np.add.reduceat(np.where(finite, flat, 0.0), idx)[0::2]
    count = np.add.reduceat(finite.astype(np.int64), idx)[0::2]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return peak, mean, count


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def summarise_face(
    frames: AUFrames,
    rows: np.ndarray,
    confidence_threshold: float = DEFAULT_CONFIDENCE,
    smooth_seconds: float = 0.2,
    min_duration: float = 0.2,
    max_gap: float = 0.3,
    presence_threshold: float = 1.0,
    max_episodes_per_au: int = 3,
    pose_threshold_deg: float = 15.0,
    gaze_threshold_deg: float = 15.0,
    min_pose_duration: float = 0.5,
) -> FaceSummary:
    """Summarise one face (the CSV rows ``rows``). See :func:`summarise_faces` for the options."""
    order = rows[np.argsort(frames.time[rows], kind="stable")]
    time = frames.time[order]
    conf = frames.confidence[order]
    valid = frames.success[order] & (conf >= confidence_threshold)
    intensity = frames.intensity[order]
    presence = frames.presence[order]
    valid &= np.isfinite(intensity).any(axis=1) | np.isfinite(presence).any(axis=1)
    diffs = np.diff(time)
    diffs = diffs[diffs > 0]
    dt = float(np.median(diffs)) if len(diffs) else 1.0 / DEFAULT_FPS
    n_valid = int(valid.sum())
    summary = FaceSummary(
        face_id=int(frames.face_id[order[0]]),
        frames=len(order),
        tracked_frames=n_valid,
        start=float(time[0]),
        end=float(time[-1]),
        tracked_seconds=n_valid * dt,
        confidence=_finite_or_none(conf[valid].mean()) if n_valid else None,
    )
    if not n_valid:
        return summary

    # Which AU is on in which frame. OpenFace's presence classifier and intensity regressor are separate
    # models that disagree near threshold; requiring both (presence, and intensity at least trace level)
    # removes most single-model false alarms. Presence-only AUs (AU28) use the classifier alone.
    if frames.kind == "openface":
        has_r = np.isfinite(intensity)
        has_c = np.isfinite(presence)
        on_r = np.where(has_r, np.nan_to_num(intensity) >= facs.INTENSITY_CUTS[0], True)
        on_c = np.where(has_c, np.nan_to_num(presence) >= 0.5, True)
        only_r = has_r & ~has_c
        on_r = np.where(only_r, np.nan_to_num(intensity) >= presence_threshold, on_r)
        active = on_r & on_c & (has_r | has_c)
    else:
        active = np.nan_to_num(intensity) >= 0.5
    active &= valid[:, None]
    window = max(1, round(smooth_seconds / dt))
    window += 1 - window % 2  # odd, so the vote has a centre frame
    blink_col = frames.aus.index(BLINK_AU) if BLINK_AU in frames.aus else None
    smoothed = _majority_filter(active, window)
    if blink_col is not None:
        # Blinks last ~100-400 ms: a flicker filter tuned for expressions would erase them.
        smoothed[:, blink_col] = _majority_filter(active[:, [blink_col]], 3)[:, 0]

    k = len(frames.aus)
    min_dur = np.full(k, min_duration)
    gaps = np.full(k, max_gap)
    if blink_col is not None:
        min_dur[blink_col] = 0.0
        gaps[blink_col] = 0.0
    col, start, end = _runs(smoothed, time, dt, min_dur, gaps)
    masked_intensity = np.where(valid[:, None], intensity, np.nan)
    peak, mean, _ = _segment_reduce(masked_intensity, col, start, end)
    duration = time[end - 1] - time[start] + dt
    score = duration * np.where(np.isfinite(peak), np.maximum(peak, 1e-3), 1.0)

    for j, au in enumerate(frames.aus):
        sel = np.flatnonzero(col == j)
        if not len(sel):
            continue
        summary.episode_counts[au] = len(sel)
        summary.active_seconds[au] = float(duration[sel].sum())
        if au == BLINK_AU:
            summary.blinks = len(sel)
            continue
        best = sel[np.argsort(-score[sel], kind="stable")[:max_episodes_per_au]]
        for e in best:
            s, t = start[e], end[e]
            segment = masked_intensity[s:t, j]
            apex_row = s + int(np.nanargmax(segment)) if np.isfinite(segment).any() else s
            seg_valid = valid[s:t]
            pk = _finite_or_none(peak[e])
            summary.au_episodes.append(
                AUEpisode(
                    au=au,
                    onset=float(time[s]),
                    apex=float(time[apex_row]),
                    offset=float(time[t - 1]),
                    peak=pk,
                    mean=_finite_or_none(mean[e]),
                    band=facs.intensity_band(pk) if frames.kind == "openface" and pk is not None else None,
                    confidence=_finite_or_none(conf[s:t][seg_valid].mean()) if seg_valid.any() else None,
                    score=float(score[e]),
                )
            )
    if blink_col is not None and summary.blinks is None:
        summary.blinks = 0
    summary.au_episodes.sort(key=lambda ep: -ep.score)

    summary.coactivations = _coactivations(
        frames.aus, smoothed, time, dt, min_duration, max_gap, max_episodes_per_au
    )
    if frames.pose is not None:
        summary.pose_episodes, summary.pose_summary = _pose(
            frames.pose[order], valid, time, dt, pose_threshold_deg, min_pose_duration, max_gap, window
        )
    if frames.gaze is not None:
        summary.gaze_episodes, summary.gaze_toward_camera = _gaze(
            frames.gaze[order], valid, time, dt, gaze_threshold_deg, min_pose_duration, max_gap, window
        )
    return summary


def _coactivations(
    aus: tuple[int, ...],
    active: np.ndarray,
    time: np.ndarray,
    dt: float,
    min_duration: float,
    max_gap: float,
    max_per_pattern: int,
) -> list[Episode]:
    index = {au: j for j, au in enumerate(aus)}
    patterns = sorted(
        (p for p in facs.CO_ACTIVATIONS if all(a in index for a in p.aus)), key=lambda p: -len(p.aus)
    )
    if not patterns:
        return []
    masks = np.stack([active[:, [index[a] for a in p.aus]].all(axis=1) for p in patterns], axis=1)
    # Report a smaller pattern only where no larger pattern containing it already explains the frames.
    explained = np.zeros_like(masks)
    for i, p in enumerate(patterns):
        for q in range(i):
            if set(p.aus) < set(patterns[q].aus):
                explained[:, i] |= masks[:, q]
    masks &= ~explained
    k = len(patterns)
    col, start, end = _runs(masks, time, dt, np.full(k, min_duration), np.full(k, max_gap))
    duration = time[end - 1] - time[start] + dt
    out = []
    for c in np.unique(col):
        sel = np.flatnonzero(col == c)
        p = patterns[c]
        for e in sel[np.argsort(-duration[sel], kind="stable")[:max_per_pattern]]:
            onset, offset = float(time[start[e]]), float(time[end[e] - 1])
            out.append(Episode(p.label, p.evidence, onset, offset, round(float(duration[e]), 2), "s"))
    out.sort(key=lambda ep: -(ep.value or 0))
    return out


_POSE_CONDITIONS = (
    (0, 1, "head tilted down", "pitch"),
    (0, -1, "head tilted up", "pitch"),
    (1, 1, "head turned to the person's right", "yaw"),
    (1, -1, "head turned to the person's left", "yaw"),
    (2, 0, "head tilted sideways", "roll"),
)
# OpenFace convention: positive gaze_angle_x = looking left, positive gaze_angle_y = looking down.
_GAZE_CONDITIONS = (
    (0, 1, "gaze averted left", "horizontal"),
    (0, -1, "gaze averted right", "horizontal"),
    (1, 1, "gaze directed down", "vertical"),
    (1, -1, "gaze directed up", "vertical"),
)


def _angle_episodes(
    angles: np.ndarray,
    valid: np.ndarray,
    time: np.ndarray,
    dt: float,
    conditions,
    threshold_deg: float,
    min_duration: float,
    max_gap: float,
    window: int,
    what: str,
) -> tuple[list[Episode], np.ndarray]:
    """Episodes of each condition, and the tracked frames' finite angles in degrees (for summaries)."""
    deg = np.degrees(angles)
    ok = valid & np.isfinite(deg).all(axis=1)
    masks = np.stack(
        [
            ok & ((np.abs(deg[:, axis]) if sign == 0 else sign * deg[:, axis]) > threshold_deg)
            for axis, sign, _, _ in conditions
        ],
        axis=1,
    )
    masks = _majority_filter(masks, window)
    k = len(conditions)
    col, start, end = _runs(masks, time, dt, np.full(k, min_duration), np.full(k, max_gap))
    out = []
    for c, s, e in zip(col, start, end, strict=True):
        axis, _, label, axis_name = conditions[c]
        seg = deg[s:e, axis][ok[s:e]]
        value = round(float(np.mean(seg)), 1) if len(seg) else None
        evidence = (
            f"{label} ({what} {axis_name} {value:+.0f}° relative to the camera)"
            if value is not None
            else label
        )
        out.append(Episode(label, evidence, float(time[s]), float(time[e - 1]), value, "deg"))
    return out, deg[ok]


def _pose(pose, valid, time, dt, threshold, min_duration, max_gap, window):
    episodes, deg = _angle_episodes(
        pose, valid, time, dt, _POSE_CONDITIONS, threshold, min_duration, max_gap, window, "head"
    )
    if not len(deg):
        return episodes, None
    mean = deg.mean(axis=0)
    spread = float(np.sqrt((deg.std(axis=0) ** 2).mean()))
    return episodes, {"pitch": float(mean[0]), "yaw": float(mean[1]), "roll": float(mean[2]), "sd": spread}


def _gaze(gaze, valid, time, dt, threshold, min_duration, max_gap, window):
    episodes, deg = _angle_episodes(
        gaze, valid, time, dt, _GAZE_CONDITIONS, threshold, min_duration, max_gap, window, "gaze"
    )
    toward = float((np.hypot(deg[:, 0], deg[:, 1]) <= threshold).mean()) if len(deg) else None
    return episodes, toward


def summarise_faces(frames: AUFrames, **options) -> list[FaceSummary]:
    """One :class:`FaceSummary` per face id, primary face (most tracked frames) first.

    Options: ``confidence_threshold`` (0.8; frames below it, or with ``success`` 0, count as untracked),
    ``smooth_seconds`` (0.2; majority-vote window against flicker), ``min_duration`` (0.2 s; shorter
    episodes are dropped, except blinks), ``max_gap`` (0.3 s; shorter inactive gaps are bridged),
    ``presence_threshold`` (1.0; intensity needed when a CSV has AUxx_r but no AUxx_c),
    ``max_episodes_per_au`` (3, the most salient by duration × peak), ``pose_threshold_deg`` and
    ``gaze_threshold_deg`` (15°), ``min_pose_duration`` (0.5 s).
    """
    ids, inverse = np.unique(frames.face_id, return_inverse=True)
    groups = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[groups], np.arange(len(ids) + 1))
    summaries = [
        summarise_face(frames, groups[bounds[i] : bounds[i + 1]], **options)
        for i in range(len(ids))
        if ids[i] >= 0
    ]
    summaries.sort(key=lambda s: (-s.tracked_frames, -s.frames, s.face_id))
    return summaries


# ------------------------------------------------------------------------------------------------------ cues


def _blink_band(rate: float) -> str:
    # Spontaneous blink rate: ~17/min at rest and ~26/min in conversation, ~4.5/min when reading
    # (Bentivoglio et al. 1997); below 10 or above 35 per minute is unusual.
    if rate < 10:
        return "low"
    if rate > 35:
        return "high"
    return "typical"


def face_summary_cues(
    summary: FaceSummary, source: str, kind: str = "openface", prefix: str = ""
) -> list[Cue]:
    """Cues for one face, most salient first (co-activations, AU episodes, blink rate, head and gaze)."""
    cues: list[Cue] = []
    if not summary.tracked_frames:
        return [
            Cue(
                FACIAL,
                f"{prefix}face tracking",
                value="no face tracked",
                start=summary.start,
                end=summary.end,
                source=source,
                detail=f"no face tracked (none of {summary.frames} frames passed the success and confidence checks)",
            )
        ]
    for ep in summary.coactivations:
        cues.append(
            Cue(
                FACIAL,
                f"{prefix}{ep.label}",
                value=ep.value,
                unit="s",
                start=ep.onset,
                end=ep.offset,
                source=source,
                detail=f"{ep.evidence}, {ep.value:.1f} s",
            )
        )
    for ep in summary.au_episodes:
        count = summary.episode_counts.get(ep.au, 1)
        timing = f"onset {ep.onset:.1f}s, apex {ep.apex:.1f}s, offset {ep.offset:.1f}s"
        if kind == "openface" and ep.peak is not None:
            strength = f"{facs.band_phrase(ep.band)}, peak {ep.peak:.2f}"
            value, unit = round(ep.peak, 3), "intensity 0-5"
        elif ep.peak is not None:
            strength = f"present, peak score {ep.peak:.2f}"
            value, unit = round(ep.peak, 3), "score 0-1"
        else:
            strength = "present"
            value, unit = None, None
        more = f"; {count} episodes in all" if count > 1 else ""
        cues.append(
            Cue(
                FACIAL,
                f"{prefix}{facs.au_label(ep.au)}",
                value=value,
                unit=unit,
                band=ep.band,
                start=ep.onset,
                end=ep.offset,
                source=source,
                confidence=None if ep.confidence is None else round(ep.confidence, 3),
                detail=f"{strength} ({timing}{more})",
            )
        )
    if not summary.au_episodes and not summary.coactivations:
        cues.append(
            Cue(
                FACIAL,
                f"{prefix}facial activity",
                value="none",
                start=summary.start,
                end=summary.end,
                source=source,
                detail=f"no action unit active over {summary.tracked_seconds:.1f} s of tracked face",
            )
        )
    if summary.blinks is not None and summary.tracked_seconds >= 2.0:
        rate = summary.blinks / summary.tracked_seconds * 60.0
        cues.append(
            Cue(
                FACIAL,
                f"{prefix}blink rate",
                value=round(rate, 1),
                unit="per min",
                band=_blink_band(rate),
                source=source,
                detail=f"{_blink_band(rate)} ({summary.blinks} blinks in {summary.tracked_seconds:.1f} s, "
                f"{rate:.0f}/min)",
            )
        )
    for ep in summary.pose_episodes + summary.gaze_episodes:
        cues.append(
            Cue(
                FACIAL,
                f"{prefix}{ep.label}",
                value=ep.value,
                unit=ep.unit,
                start=ep.onset,
                end=ep.offset,
                source=source,
                detail=ep.evidence,
            )
        )
    if summary.pose_summary:
        p = summary.pose_summary
        movement = "small" if p["sd"] < 3 else "moderate" if p["sd"] < 8 else "large"
        cues.append(
            Cue(
                FACIAL,
                f"{prefix}head movement",
                value=round(p["sd"], 1),
                unit="deg SD",
                band=movement,
                source=source,
                detail=f"{movement} (SD {p['sd']:.1f}°; mean pitch {p['pitch']:+.0f}°, yaw {p['yaw']:+.0f}°, "
                f"roll {p['roll']:+.0f}° relative to the camera)",
            )
        )
    if summary.gaze_toward_camera is not None:
        share = summary.gaze_toward_camera
        band = "mostly" if share >= 0.7 else "partly" if share >= 0.3 else "rarely"
        cues.append(
            Cue(
                FACIAL,
                f"{prefix}gaze toward camera",
                value=round(share, 3),
                unit="fraction",
                band=band,
                source=source,
                detail=f"{band} toward the camera ({share:.0%} of tracked time)",
            )
        )
    return cues


def _secondary_cue(summary: FaceSummary, source: str, kind: str) -> Cue:
    if not summary.tracked_frames:
        detail = f"not tracked in any of its {summary.frames} frames"
    else:
        ranked = sorted(summary.active_seconds.items(), key=lambda kv: -kv[1])
        ranked = [(au, s) for au, s in ranked if au != BLINK_AU][:3]
        parts = []
        for au, seconds in ranked:
            peaks = [ep.peak for ep in summary.au_episodes if ep.au == au and ep.peak is not None]
            band = facs.intensity_band(max(peaks)) if peaks and kind == "openface" else None
            parts.append(
                f"{facs.au_label(au)}" + (f" up to {band}" if band else "") + f" for {seconds:.1f} s"
            )
        active = "; most active: " + ", ".join(parts) if parts else "; no action unit active"
        detail = f"tracked {summary.tracked_seconds:.1f} s ({summary.tracked_frames} frames){active}"
    return Cue(
        FACIAL,
        f"other face {summary.face_id}",
        value=summary.tracked_frames,
        unit="frames",
        start=summary.start,
        end=summary.end,
        source=source,
        detail=detail,
    )


def face_cues_from_csv(
    path: str | Path,
    confidence_threshold: float = DEFAULT_CONFIDENCE,
    all_faces: bool = False,
    fps: float | None = None,
    max_au_cues: int = 12,
    signals: dict | None = None,
    **options,
) -> list[Cue]:
    """Evidence cues for the faces in an OpenFace 2.x or py-feat AU CSV.

    The primary face (most tracked frames) gets full cues; other faces one summary cue each, or full cues
    prefixed ``face N:`` with ``all_faces=True``. A file whose frames all failed tracking yields one explicit
    "no face tracked" cue; a file with no AU columns, no frames or unreadable content raises InputError.
    ``max_au_cues`` caps the AU-episode cues per face (the most salient are kept). ``signals``, when given,
    receives the primary face's intensity series of the AUs its cues name, under ``"au"``
    (:func:`au_signals`), for the cue timeline. Other options: see :func:`summarise_faces`.
    """
    frames = read_au_csv(path, fps=fps)
    summaries = summarise_faces(frames, confidence_threshold=confidence_threshold, **options)
    name = frames.path.name
    if not summaries:
        raise InputError(frames.path, "no face ids in the file")
    cues: list[Cue] = []
    for rank, summary in enumerate(summaries):
        source = f"{frames.kind}:{name}#face{summary.face_id}"
        summary.au_episodes = summary.au_episodes[:max_au_cues]
        if rank == 0:
            cues.extend(face_summary_cues(summary, source, frames.kind))
        elif all_faces:
            cues.extend(face_summary_cues(summary, source, frames.kind, prefix=f"face {summary.face_id}: "))
        else:
            cues.append(_secondary_cue(summary, source, frames.kind))
    if signals is not None and summaries[0].tracked_frames:
        aus = sorted({ep.au for ep in summaries[0].au_episodes})
        signals["au"] = au_signals(frames, summaries[0].face_id, aus, confidence_threshold)
    return cues


def au_signals(
    frames: AUFrames, face_id: int, aus: list[int], confidence_threshold: float = DEFAULT_CONFIDENCE
) -> dict:
    """One face's AU intensities (presence where a CSV has no intensity) on a regular grid of at most
    ``MAX_SIGNAL_POINTS`` bins, each bin's maximum over its tracked frames (so an apex is never averaged away):
    ``{"face_id", "scale", "step", "series": {"AU12": [values or None]}}`` (value i at ``(i + 0.5) * step``)."""
    from affectllm.textualize.prosody import regular_series

    rows = frames.face_id == face_id
    valid = rows & frames.success & (frames.confidence >= confidence_threshold)
    end = float(np.nanmax(frames.time[rows])) if rows.any() else 0.0
    series: dict[str, list] = {}
    step = None
    for au in aus:
        if au not in frames.aus:
            continue
        col = frames.aus.index(au)
        values = frames.intensity[:, col]
        if not np.isfinite(values[valid]).any():
            values = frames.presence[:, col]
        got = regular_series(frames.time, values.astype(float), end, "max", valid)
        series[f"AU{au:02d}"], step = got["values"], got["step"]
    scale = "intensity 0-5" if frames.kind == "openface" else "score 0-1"
    return {"face_id": int(face_id), "scale": scale, "step": step, "series": series}


# ------------------------------------------------------------------------------------- running OpenFace itself


def openface_binary(name: str = "FeatureExtraction") -> str | None:
    """The path of OpenFace's FeatureExtraction binary when it is on PATH (or given as a path)."""
    return shutil.which(name)


def run_openface(
    video: str | Path, out_dir: str | Path, binary: str = "FeatureExtraction", timeout: float | None = None
) -> Path:
    """Run OpenFace 2.x FeatureExtraction on a video (AUs, head pose, gaze) and return the CSV path.

    Needs the binary on PATH (OpenFace is not pip-installable); raises InputError when it is missing or
    fails. The resulting CSV is what :func:`face_cues_from_csv` reads.
    """
    exe = openface_binary(binary)
    if exe is None:
        raise InputError(video, f"OpenFace binary {binary!r} not found on PATH; pass an AU CSV instead")
    video = Path(video)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "-f", str(video), "-out_dir", str(out), "-aus", "-pose", "-gaze", "-q"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise InputError(video, f"OpenFace did not finish within {timeout} s") from None
    csv = out / f"{video.stem}.csv"
    if proc.returncode != 0 or not csv.is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        raise InputError(
            video, f"OpenFace FeatureExtraction failed (exit {proc.returncode}): {' '.join(tail)}"
        )
    return csv
