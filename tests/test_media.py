"""Media decoding with PyAV: every supported container/codec/rate comes out as 16 kHz mono float32, and every
kind of bad file fails with an InputError that names the file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from affectllm.errors import InputError  # noqa: E402
from affectllm.media import AudioData, load_audio, probe, sample_frames  # noqa: E402


def _tone(sr: int, seconds: float, channels: int = 1, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    # Different right channel so a down-mix is observable.
    return np.stack([mono * (1.0 if c == 0 else 0.5) for c in range(channels)])


def write_audio(
    path: Path, sr: int, seconds: float = 1.0, channels: int = 1, codec: str | None = None
) -> Path:
    """Encode a tone with PyAV (no external tools)."""
    data = _tone(sr, seconds, channels)
    codec = (
        codec
        or {".wav": "pcm_s16le", ".flac": "flac", ".ogg": "libopus", ".mp3": "libmp3lame", ".m4a": "aac"}[
            path.suffix
        ]
    )
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=sr, layout=layout)
        fmt = stream.codec_context.format.name if stream.codec_context.format else "s16"
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
        frame.sample_rate = sr
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=sr)
        for f in resampler.resample(frame):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def write_video(path: Path, seconds: float = 2.0, with_audio: bool = True, fps: int = 10) -> Path:
    """A small H.264 (+AAC) video made with PyAV: a moving gradient and a tone."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264" if path.suffix in (".mp4", ".mkv", ".mov") else "mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        as_ = out.add_stream("aac", rate=16000, layout="mono") if with_audio else None
        for i in range(int(seconds * fps)):
            img = np.full((48, 64, 3), (i * 10) % 255, dtype=np.uint8)
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        if as_ is not None:
            frame = av.AudioFrame.from_ndarray(_tone(16000, seconds), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for f in av.AudioResampler(format="fltp", layout="mono", rate=16000).resample(frame):
                for packet in as_.encode(f):
                    out.mux(packet)
            for packet in as_.encode(None):
                out.mux(packet)
    return path


@pytest.mark.parametrize("sr", [8000, 44100, 96000])
def test_wav_rates_resample_to_16k(tmp_path, sr):
    path = write_audio(tmp_path / f"tone_{sr}.wav", sr, seconds=1.0)
    info = probe(path)
    assert info.has_audio and not info.has_video and info.sample_rate == sr
    audio = load_audio(path)
    assert audio.sample_rate == 16000 and audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.duration == pytest.approx(1.0, abs=0.02)
    # The tone survives resampling: amplitude kept, dominant frequency 220 Hz.
    assert np.max(np.abs(audio.samples)) == pytest.approx(0.3, abs=0.03)
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert np.fft.rfftfreq(len(audio.samples), 1 / 16000)[np.argmax(spectrum)] == pytest.approx(220, abs=3)


def test_stereo_is_downmixed(tmp_path):
    path = write_audio(tmp_path / "stereo.wav", 44100, channels=2)
    assert probe(path).channels == 2
    audio = load_audio(path)
    # Left 0.3, right 0.15 in phase: the mono mix is their mean.
    assert np.max(np.abs(audio.samples)) == pytest.approx(0.225, abs=0.02)


@pytest.mark.parametrize("suffix", [".flac", ".ogg", ".mp3", ".m4a"])
def test_compressed_formats(tmp_path, suffix):
    sr = 44100 if suffix != ".ogg" else 48000
    try:
        path = write_audio(tmp_path / f"tone{suffix}", sr, seconds=1.0)
    except (av.error.FFmpegError, ValueError) as exc:  # an FFmpeg build without that encoder
        pytest.skip(f"cannot encode {suffix}: {exc}")
    audio = load_audio(path)
    assert audio.sample_rate == 16000
    assert audio.duration == pytest.approx(1.0, abs=0.1)  # codec priming/padding
    assert 0.2 < np.max(np.abs(audio.samples)) < 0.4


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi", ".mov"])
def test_video_audio_track_and_frames(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", seconds=2.0)
    info = probe(path)
    assert info.has_audio and info.has_video
    assert (info.width, info.height) == (64, 48)
    assert info.duration == pytest.approx(2.0, abs=0.2)
    audio = load_audio(path)
    assert audio.duration == pytest.approx(2.0, abs=0.15)
    frames = sample_frames(path, num_frames=4)
    assert len(frames) == 4
    assert [f.time for f in frames] == sorted(f.time for f in frames)
    assert frames[0].image.size == (64, 48)
    # Different times decode different frames (the gradient changes every frame).
    assert np.asarray(frames[0].image).mean() != np.asarray(frames[-1].image).mean()
    every = sample_frames(path, every_s=0.5, max_side=32)
    # Containers round the duration differently (mkv: 2.0x s), so the last target may or may not exist.
    assert len(every) in (4, 5) and max(every[0].image.size) == 32
    assert [f.time for f in every[:4]] == pytest.approx([0.0, 0.5, 1.0, 1.5], abs=0.11)


def test_webm_via_ffmpeg(tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    path = tmp_path / "clip.webm"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=10:duration=1",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=300:duration=1",
            "-shortest",
            "-c:v",
            "libvpx",
            "-c:a",
            "libopus",
            str(path),
        ],
        check=True,
    )
    assert load_audio(path).duration == pytest.approx(1.0, abs=0.1)
    assert len(sample_frames(path, num_frames=2)) == 2


def test_video_without_audio_says_so(tmp_path):
    path = write_video(tmp_path / "silent_film.mp4", with_audio=False)
    info = probe(path)
    assert info.has_video and not info.has_audio
    with pytest.raises(InputError, match="video has no audio stream") as err:
        load_audio(path)
    assert "silent_film.mp4" in str(err.value)


def test_missing_empty_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_audio(tmp_path / "nope.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty file") as err:
        load_audio(empty)
    assert err.value.path == str(empty)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match=r"junk\.mp3"):
        load_audio(junk)
    with pytest.raises(InputError):
        probe(junk)


def test_zero_length_audio_stream(tmp_path):
    import wave

    path = tmp_path / "zero.wav"
    with wave.open(str(path), "wb") as w:  # a valid header and no samples
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    with pytest.raises(InputError, match="zero-length"):
        load_audio(path)


def test_truncated_file_is_an_input_error_or_shorter(tmp_path):
    good = write_audio(tmp_path / "tone.flac", 44100, seconds=2.0)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(good.read_bytes()[:200])  # header only, no complete frame
    with pytest.raises(InputError, match=r"cut\.flac"):
        load_audio(cut)


def test_silence_is_not_an_error(tmp_path):
    path = tmp_path / "silence.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    audio = load_audio(path)
    assert audio.duration == pytest.approx(1.0) and audio.peak_dbfs() == float("-inf")


def test_size_and_duration_limits(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "long.wav", 16000, seconds=3.0)
    with pytest.raises(InputError, match="over the 2 s limit"):
        load_audio(path, max_duration=2)
    with pytest.raises(InputError, match="MiB limit"):
        load_audio(path, max_bytes=1000)
    monkeypatch.setenv("AFFECTLLM_MAX_MEDIA_SECONDS", "1")
    with pytest.raises(InputError, match="AFFECTLLM_MAX_MEDIA_SECONDS"):
        load_audio(path)
    assert load_audio(path, max_duration=None).duration == pytest.approx(3.0)


def test_audio_only_file_has_no_frames(tmp_path):
    path = write_audio(tmp_path / "tone.wav", 16000)
    with pytest.raises(InputError, match="no video stream"):
        sample_frames(path)


def test_from_array_resamples_and_downmixes():
    stereo = np.stack([np.ones(8000), np.zeros(8000)]).astype(np.float32) * 0.5
    audio = AudioData.from_array(stereo, 8000, target_sr=16000)
    assert audio.sample_rate == 16000 and audio.duration == pytest.approx(1.0, abs=0.01)
    assert audio.samples[4000:12000].mean() == pytest.approx(0.25, abs=0.01)
    assert len(audio.segment(0.25, 0.5)) == 4000


def test_shared_ravdess_file_decodes(shared_data):
    path = next((shared_data / "audio" / "ravdess").glob("*.wav"))
    info = probe(path)
    audio = load_audio(path)
    assert info.has_audio and audio.sample_rate == 16000
    assert audio.duration == pytest.approx(info.duration, abs=0.05)
    assert 0.05 < np.max(np.abs(audio.samples)) <= 1.0
