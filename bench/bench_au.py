"""Benchmark: summarise 10,000 OpenFace AU frames (target < 0.5 s) against a per-frame Python loop.

    python bench/bench_au.py [--frames 10000] [--repeats 5]

Measures, in one process: (1) the vectorised summary (affectllm.textualize.face.summarise_faces) of
synthetic 30 fps frames with realistic flicker; (2) a naive per-frame Python loop doing the same work
(activity test, majority filter, run building with gap merging, per-episode peak) as the baseline;
(3) read + summarise + cues of the real ../shared/data OpenFace CSV repeated to >= the same frame count.
Prints seconds (best of --repeats) and the speed-up ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from affectllm.textualize.face import AUFrames, face_cues_from_csv, read_au_csv, summarise_faces

REPO = Path(__file__).resolve().parents[1]
REAL_CSV = REPO.parent / "shared" / "data" / "openface" / "act409_clip1_FaceLandmarkVidMulti_withFE.csv"
AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)


def synthetic_frames(n: int, fps: float = 30.0, seed: int = 0) -> AUFrames:
    """Slowly varying AU intensities (random episodes) plus per-frame noise, 2% failed frames."""
    rng = np.random.default_rng(seed)
    k = len(AUS)
    intensity = np.zeros((n, k))
    for j in range(k):
        for _ in range(max(1, n // 300)):
            start = rng.integers(0, n)
            length = rng.integers(5, 90)
            intensity[start : start + length, j] = rng.uniform(0.6, 4.5)
    intensity = np.clip(intensity + rng.normal(0, 0.25, size=(n, k)), 0, 5)
    presence = (intensity + rng.normal(0, 0.3, size=(n, k)) >= 1.0).astype(float)
    success = rng.random(n) > 0.02
    pose = rng.normal(0, 0.05, size=(n, 3))
    pose[n // 4 : n // 2, 0] += 0.4
    gaze = rng.normal(0, 0.05, size=(n, 2))
    return AUFrames(
        path=Path("synthetic.csv"),
        kind="openface",
        face_id=np.zeros(n, dtype=np.int64),
        time=np.arange(n) / fps,
        confidence=np.where(success, 0.95, 0.1),
        success=success,
        aus=AUS,
        intensity=intensity,
        presence=presence,
        pose=pose,
        gaze=gaze,
    )


def naive_summary(frames: AUFrames, confidence_threshold=0.8, window=7, min_duration=0.2, max_gap=0.3):
    """The same AU-episode logic as summarise_faces, one frame and one AU at a time in plain Python."""
    n = len(frames.time)
    dt = float(frames.time[1] - frames.time[0])
    episodes = []
    for j, _au in enumerate(frames.aus):
        active = []
        for i in range(n):
            ok = frames.success[i] and frames.confidence[i] >= confidence_threshold
            r = frames.intensity[i, j]
            c = frames.presence[i, j]
            active.append(bool(ok and r >= 0.5 and c >= 0.5))
        half = window // 2
        smoothed = []
        for i in range(n):
            votes = 0
            for w in range(i - half, i + half + 1):
                votes += active[min(max(w, 0), n - 1)]
            smoothed.append(votes > half)
        runs = []
        i = 0
        while i < n:
            if smoothed[i]:
                s = i
                while i < n and smoothed[i]:
                    i += 1
                if runs and frames.time[s] - frames.time[runs[-1][1] - 1] - dt <= max_gap:
                    runs[-1][1] = i
                else:
                    runs.append([s, i])
            else:
                i += 1
        for s, e in runs:
            if frames.time[e - 1] - frames.time[s] + dt >= min_duration:
                peak = max(frames.intensity[t, j] for t in range(s, e))
                episodes.append((j, s, e, peak))
    return episodes


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    frames = synthetic_frames(args.frames)
    summaries = summarise_faces(frames)  # warm-up (imports, allocator)
    fast = best_of(lambda: summarise_faces(frames), args.repeats)
    naive = best_of(lambda: naive_summary(frames), 1)
    n_eps = sum(s.episode_counts.get(a, 0) for s in summaries for a in s.episode_counts)
    n_naive = len(naive_summary(frames))
    print(f"synthetic: {args.frames} frames x {len(AUS)} AUs")
    print(f"  vectorised summarise_faces : {fast * 1000:8.1f} ms   ({n_eps} AU episodes incl. blinks)")
    print(f"  naive per-frame Python loop: {naive * 1000:8.1f} ms   ({n_naive} AU episodes)")
    print(f"  speed-up: {naive / fast:.0f}x   target < 500 ms: {'PASS' if fast < 0.5 else 'FAIL'}")

    if REAL_CSV.is_file():
        lines = REAL_CSV.read_text().splitlines()
        header, body = lines[0], lines[1:]
        period = 31.0
        out_lines = [header]
        copy = 0
        while len(out_lines) - 1 < args.frames:
            for line in body:
                cells = line.split(", ")
                cells[2] = f"{float(cells[2]) + copy * period:.3f}"
                out_lines.append(", ".join(cells))
            copy += 1
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "real_repeated.openface.csv"
            path.write_text("\n".join(out_lines) + "\n")
            n_rows = len(out_lines) - 1
            read = best_of(lambda: read_au_csv(path), args.repeats)
            real = read_au_csv(path)
            summ = best_of(lambda: summarise_faces(real), args.repeats)
            total = best_of(lambda: face_cues_from_csv(path), args.repeats)
        print(f"real CSV repeated x{copy}: {n_rows} rows, 2 faces, {len(header.split(','))} columns")
        print(
            f"  read {read * 1000:.1f} ms + summarise {summ * 1000:.1f} ms; face_cues_from_csv total {total * 1000:.1f} ms"
        )
        print(f"  target < 500 ms for the summary: {'PASS' if summ < 0.5 else 'FAIL'}")
    else:
        print(f"(real CSV not found at {REAL_CSV}; skipped)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
