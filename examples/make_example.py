"""Regenerate the example clip that ships in ``examples/`` (used by the README's main command and the tests).

Everything is synthetic, so the clip carries no one's likeness or voice and can be redistributed:

- ``surprise_joy.mp4``: a drawn cartoon face (eyebrows up and mouth open, then a smile) muxed with speech from
  espeak-ng (an excited, high-pitched English voice),
- ``surprise_joy.openface.csv``: the action units an OpenFace 2.x ``FeatureExtraction -aus -pose -gaze`` run
  would write for that face (same columns and number format), synthesised from a surprise → happiness
  trajectory with small noise,
- ``surprise_joy.captions.json``: time-stamped scene captions as a captioner would produce them,
- ``surprise_joy.txt``: the transcript alone (for the transcript-only path).

Run from the repository root: ``python examples/make_example.py`` (needs espeak-ng, ffmpeg and Pillow).
The output is deterministic apart from the encoders' own byte layout.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

STEM = "surprise_joy"
TEXT = "No way, is this for me? You remembered my birthday! Thank you, I love it!"
FPS = 25
SIZE = (160, 120)

# OpenFace 2.x AU outputs: intensities (_r, 0-5) for 17 AUs, presence (_c, 0/1) for 18 (AU28 has no _r).
AU_R = ["01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45"]
AU_C = [
    "01",
    "02",
    "04",
    "05",
    "06",
    "07",
    "09",
    "10",
    "12",
    "14",
    "15",
    "17",
    "20",
    "23",
    "25",
    "26",
    "28",
    "45",
]


def _bump(t: float, start: float, peak: float, end: float) -> float:
    """A smooth 0→1→0 activation: rises from ``start`` to ``peak``, decays to zero at ``end``."""
    if t <= start or t >= end:
        return 0.0
    if t <= peak:
        return math.sin(0.5 * math.pi * (t - start) / (peak - start)) ** 2
    return math.cos(0.5 * math.pi * (t - peak) / (end - peak)) ** 2


def au_trajectory(t: float, duration: float) -> dict[str, float]:
    """Target AU intensities at time ``t``: surprise (AU1+2+5+26) first, then happiness (AU6+12+25)."""
    surprise = _bump(t, 0.1, 0.5, 1.4)
    joy = _bump(t, 1.1, 2.0, duration + 1.5)
    blink = 1.0 if any(abs(t - b) < 0.06 for b in (1.3, 2.9)) else 0.0
    return {
        "01": 2.6 * surprise,
        "02": 2.3 * surprise,
        "05": 1.9 * surprise,
        "26": 2.1 * surprise + 0.4 * joy,
        "06": 2.4 * joy,
        "12": 3.1 * joy,
        "25": 1.2 * surprise + 1.6 * joy,
        "07": 0.6 * joy,
        "10": 0.5 * joy,
        "45": 3.0 * blink,
    }


def write_openface_csv(path: Path, duration: float, seed: int = 7) -> None:
    rng = random.Random(seed)
    columns = ["frame", "face_id", "timestamp", "confidence", "success"]
    columns += ["gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z"]
    columns += ["gaze_angle_x", "gaze_angle_y"]
    columns += ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    columns += [f"AU{a}_r" for a in AU_R] + [f"AU{a}_c" for a in AU_C]
    rows = []
    for frame in range(1, int(duration * FPS) + 1):
        t = (frame - 1) / FPS
        target = au_trajectory(t, duration)
        # OpenFace intensities are noisy and floor at 0; presence is a separate classifier, here a
        # threshold with its own jitter so _c and _r disagree near onsets as they do in real output.
        r = {a: max(0.0, min(5.0, target.get(a, 0.0) + rng.gauss(0.0, 0.12))) for a in AU_R}
        c = {a: 1.0 if target.get(a, 0.0) + rng.gauss(0.0, 0.25) > 0.9 else 0.0 for a in AU_C}
        gx, gy = 0.05 + rng.gauss(0, 0.02), 0.12 + rng.gauss(0, 0.02)
        values = [frame, 0, round(t, 3), round(0.98 - abs(rng.gauss(0, 0.01)), 2), 1]
        values += [round(v, 6) for v in (gx, gy, -0.99, gx - 0.1, gy, -0.99)]
        values += [round(gx, 3), round(gy, 3)]
        values += [round(v, 1) for v in (12.4, 25.1, 402.7)]
        values += [round(0.08 - 0.1 * target.get("01", 0) / 2.6 + rng.gauss(0, 0.01), 3)]
        values += [round(rng.gauss(0.02, 0.01), 3), round(rng.gauss(-0.01, 0.01), 3)]
        values += [f"{r[a]:.2f}" for a in AU_R] + [f"{c[a]:.2f}" for a in AU_C]
        rows.append(", ".join(str(v) for v in values))
    # OpenFace separates header and values with ", " — kept so readers are tested on the real format.
    path.write_text(", ".join(columns) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")


def draw_frames(frames_dir: Path, duration: float) -> None:
    from PIL import Image, ImageDraw

    w, h = SIZE
    for i in range(int(duration * FPS)):
        t = i / FPS
        au = au_trajectory(t, duration)
        img = Image.new("RGB", SIZE, (74, 96, 128))
        d = ImageDraw.Draw(img)
        d.rectangle([0, 90, w, h], fill=(58, 70, 84))  # a desk edge in the foreground
        cx, cy = w // 2, 58
        d.ellipse([cx - 34, cy - 42, cx + 34, cy + 42], fill=(236, 200, 170))
        brow = 5 * au["01"] / 2.6
        eye_open = 0 if au["45"] > 1 else 3 + 2 * au["05"] / 1.9
        for ex in (cx - 13, cx + 13):
            d.line([ex - 7, cy - 16 - brow, ex + 7, cy - 17 - brow], fill=(70, 50, 40), width=2)
            d.ellipse([ex - 4, cy - 6 - eye_open, ex + 4, cy - 6 + eye_open], fill=(40, 30, 30))
        jaw, smile = au["26"] / 2.1, au["12"] / 3.1
        mouth_w = 8 + 10 * smile
        top = cy + 18 - 3 * smile
        d.chord(
            [cx - mouth_w, top - 4, cx + mouth_w, top + 4 + 12 * jaw + 6 * smile], 0, 180, fill=(150, 40, 50)
        )
        img.save(frames_dir / f"{i:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for tool in ("espeak-ng", "ffmpeg", "ffprobe"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed to regenerate the example clip")

    tmpdir = tempfile.TemporaryDirectory()
    wav = Path(tmpdir.name) / f"{STEM}.wav"
    # -s words/min, -p pitch 0-99: a fast, high voice reads as excited.
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "165", "-p", "70", "-w", str(wav), TEXT], check=True)
    # 16 kHz mono keeps the file small and is what the ASR/prosody front end resamples to anyway.
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-i",
            str(wav),
            "-ac",
            "1",
            "-ar",
            "16000",
            str(wav) + ".tmp.wav",
        ],
        check=True,
    )
    Path(str(wav) + ".tmp.wav").replace(wav)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(wav)],
        check=True,
        capture_output=True,
        text=True,
    )
    duration = float(probe.stdout.strip())

    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp)
        draw_frames(frames, duration)
        subprocess.run(
            [
                "ffmpeg", "-y", "-loglevel", "error", "-framerate", str(FPS), "-i", str(frames / "%04d.png"),
                "-i", str(wav), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "30", "-preset", "veryslow",
                "-c:a", "aac", "-b:a", "48k", "-shortest", "-movflags", "+faststart", str(out / f"{STEM}.mp4"),
            ],
            check=True,
        )  # fmt: skip

    tmpdir.cleanup()
    write_openface_csv(out / f"{STEM}.openface.csv", duration)
    captions = [
        {
            "start": 0.0,
            "end": 1.3,
            "caption": "a person at a desk raises their eyebrows with the mouth open wide",
        },
        {
            "start": 1.3,
            "end": round(duration, 2),
            "caption": "the person smiles broadly, cheeks raised, looking at the camera",
        },
    ]
    (out / f"{STEM}.captions.json").write_text(json.dumps(captions, indent=2) + "\n", encoding="utf-8")
    (out / f"{STEM}.txt").write_text(TEXT + "\n", encoding="utf-8")
    sizes = {p.name: p.stat().st_size for p in sorted(out.glob(f"{STEM}*"))}
    print(
        json.dumps({"duration_s": round(duration, 2), "bytes": sizes, "total": sum(sizes.values())}, indent=2)
    )


if __name__ == "__main__":
    main()
