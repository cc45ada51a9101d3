"""Decode media with PyAV (FFmpeg): probe a file, load its audio as 16 kHz mono float32, sample video frames.

Everything that reads a media file goes through here, so every textualizer sees the same samples and every bad
file fails the same way: an :class:`~affectllm.errors.InputError` that names the file and says what is wrong
(missing, empty, corrupt, no audio stream, too large).

Size limits protect a batch job from a stray multi-hour recording: by default a file may be at most
``DEFAULT_MAX_BYTES`` (4 GiB) and its audio at most ``DEFAULT_MAX_DURATION_S`` (2 hours). Pass ``max_bytes`` /
``max_duration`` (``None`` or ``0`` = unlimited) or set ``AFFECTLLM_MAX_MEDIA_BYTES`` /
``AFFECTLLM_MAX_MEDIA_SECONDS`` to change them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from affectllm.errors import InputError, require

if TYPE_CHECKING:  # PIL is only needed by callers that sample frames.
    from PIL import Image

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_MAX_BYTES = 4 * 1024**3
DEFAULT_MAX_DURATION_S = 2 * 3600.0
# More channels than any real recording format carries (22.2 is 24): a larger count is a corrupt header.
MAX_CHANNELS = 64

# Sentinel so that an explicit ``max_bytes=None`` (unlimited) differs from "use the default/env".
_DEFAULT: Any = object()


@dataclass
class MediaInfo:
    """What a container holds, read from its headers (no full decode)."""

    path: str
    has_audio: bool
    has_video: bool
    duration: float | None
    sample_rate: int | None = None
    channels: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    audio_codec: str | None = None
    video_codec: str | None = None
    size_bytes: int = 0


@dataclass
class AudioData:
    """Decoded audio: float32 mono samples in [-1, 1] at ``sample_rate``; ``source`` is the file it came from."""

    samples: np.ndarray
    sample_rate: int
    duration: float
    source: str | None = None

    @classmethod
    def from_array(
        cls, samples: np.ndarray, sample_rate: int, source: str | None = None, target_sr: int | None = None
    ) -> AudioData:
        """Wrap an in-memory signal (``(n,)`` mono or ``(channels, n)``); down-mix and resample if asked."""
        data = np.asarray(samples, dtype=np.float32)
        if data.ndim == 2:
            data = data.mean(axis=0) if data.shape[0] <= data.shape[1] else data.mean(axis=1)
        if data.ndim != 1:
            raise ValueError(f"expected mono (n,) or (channels, n) samples, got shape {data.shape}")
        if target_sr and target_sr != sample_rate:
            data = _resample_array(data, sample_rate, target_sr)
            sample_rate = target_sr
        data = np.ascontiguousarray(data, dtype=np.float32)
        return cls(data, int(sample_rate), len(data) / float(sample_rate), source)

    def segment(self, start: float | None, end: float | None) -> np.ndarray:
        """Samples between two times in seconds (clamped to the signal)."""
        lo = 0 if start is None else max(0, round(start * self.sample_rate))
        hi = len(self.samples) if end is None else min(len(self.samples), round(end * self.sample_rate))
        return self.samples[lo : max(lo, hi)]

    def peak_dbfs(self) -> float:
        """Peak level in dB re full scale (``-inf`` for digital silence)."""
        peak = float(np.max(np.abs(self.samples))) if len(self.samples) else 0.0
        return 20.0 * np.log10(peak) if peak > 0 else float("-inf")


@dataclass
class Frame:
    """One decoded video frame at ``time`` seconds."""

    time: float
    image: Image.Image


def _av():
    return require("av", "audio", "Decoding media")


def _limit(value: Any, env: str, default: float) -> float | None:
    if value is _DEFAULT:
        raw = os.environ.get(env)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError as exc:
            raise InputError(None, f"{env}={raw!r} is not a number") from exc
    if value is None or value <= 0:
        return None
    return float(value)


def _check_file(path: str | Path, max_bytes: Any) -> tuple[Path, int]:
    p = Path(path)
    # stat, never open, before knowing what the path is: opening a FIFO blocks until a writer appears and a
    # device such as /dev/zero never ends.
    try:
        info = p.stat()
    except FileNotFoundError:
        raise InputError(p, "file not found") from None
    except OSError as exc:
        raise InputError(p, f"cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(p, "is a directory, not a media file")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else "a device or socket"
        raise InputError(p, f"is {kind}, not a media file")
    if not os.access(p, os.R_OK):
        raise InputError(p, "cannot read (permission denied)")
    size = info.st_size
    if size == 0:
        raise InputError(p, "empty file (0 bytes)")
    limit = _limit(max_bytes, "AFFECTLLM_MAX_MEDIA_BYTES", DEFAULT_MAX_BYTES)
    if limit is not None and size > limit:
        raise InputError(
            p,
            f"file is {size / 1024**2:.0f} MiB, over the {limit / 1024**2:.0f} MiB limit "
            "(pass max_bytes=None or set AFFECTLLM_MAX_MEDIA_BYTES to raise it)",
        )
    return p, size


def _open(p: Path):
    av = _av()
    try:
        return av.open(str(p), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:  # InvalidData, unknown format, truncated, ...
        raise InputError(
            p, f"cannot decode media: corrupt or unsupported format ({_ffmpeg_reason(exc)})"
        ) from exc


def _ffmpeg_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _stream_duration(stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _container_duration(container) -> float | None:
    if container.duration is not None:
        return container.duration / 1_000_000.0  # AV_TIME_BASE units
    return None


def probe(path: str | Path, max_bytes: Any = _DEFAULT) -> MediaInfo:
    """Read a file's streams and duration from its headers. InputError when missing, empty or unreadable."""
    p, size = _check_file(path, max_bytes)
    with _open(p) as container:
        audio = container.streams.audio[0] if container.streams.audio else None
        # Cover art in mp3/m4a is a one-frame "video" stream flagged as an attached picture; it is not video.
        videos = [s for s in container.streams.video if not _is_attached_picture(s)]
        video = videos[0] if videos else None
        duration = _container_duration(container)
        if duration is None:
            durations = [d for d in (_stream_duration(s) for s in (audio, video) if s is not None) if d]
            duration = max(durations) if durations else None
        fps = None
        if video is not None:
            rate = video.average_rate or video.guessed_rate or video.base_rate
            fps = float(rate) if rate else None
        return MediaInfo(
            path=str(p),
            has_audio=audio is not None,
            has_video=video is not None,
            duration=duration,
            sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            channels=audio.codec_context.channels if audio is not None else None,
            fps=fps,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            video_codec=video.codec_context.name if video is not None else None,
            size_bytes=size,
        )


def _is_attached_picture(stream) -> bool:
    disposition = getattr(stream, "disposition", None)
    if disposition is None:
        return False
    try:
        return bool(disposition & _av().stream.Disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


def load_audio(
    path: str | Path,
    target_sr: int = DEFAULT_SAMPLE_RATE,
    max_bytes: Any = _DEFAULT,
    max_duration: Any = _DEFAULT,
) -> AudioData:
    """Decode the first audio stream of any FFmpeg-readable file to float32 mono at ``target_sr``.

    FFmpeg's resampler (libswresample, via ``av.AudioResampler``) converts the rate and the channels are then
    averaged, so 8 kHz telephone audio, 96 kHz studio audio, stereo and 5.1 all come out the same way.
    Raises InputError for a missing, empty, corrupt or over-long file and for a video without an audio stream.
    Silence is *not* an error: the samples come back and the textualizers report "no speech".
    """
    av = _av()
    p, _ = _check_file(path, max_bytes)
    duration_limit = _limit(max_duration, "AFFECTLLM_MAX_MEDIA_SECONDS", DEFAULT_MAX_DURATION_S)
    with _open(p) as container:
        if not container.streams.audio:
            if any(not _is_attached_picture(s) for s in container.streams.video):
                raise InputError(
                    p, "video has no audio stream (nothing to transcribe or analyse acoustically)"
                )
            raise InputError(p, "no audio stream found")
        stream = container.streams.audio[0]
        declared = _stream_duration(stream) or _container_duration(container)
        if duration_limit is not None and declared is not None and declared > duration_limit:
            raise InputError(p, _too_long(declared, duration_limit))
        channels = stream.codec_context.channels
        if not 1 <= (channels or 0) <= MAX_CHANNELS:
            raise InputError(p, f"audio stream declares {channels} channels (expected 1 to {MAX_CHANNELS})")
        if not stream.codec_context.sample_rate or stream.codec_context.sample_rate <= 0:
            raise InputError(p, "audio stream declares no sample rate")
        # Resample to packed float and average the channels ourselves: libswresample's stereo->mono matrix
        # adds the channels at -3 dB each, which lifts in-phase speech by up to +3 dB and can exceed full
        # scale. Packed, not planar: PyAV's to_ndarray() on a planar frame of 8 or more channels reads past
        # its plane pointers and segfaults the process; a packed frame is one plane whatever the layout.
        resampler = av.AudioResampler(format="flt", rate=int(target_sr))
        chunks: list[np.ndarray] = []
        decoded = 0
        # Headers can lie (or be absent in raw streams), so the limit is also enforced while decoding.
        max_samples = None if duration_limit is None else int(duration_limit * target_sr) + target_sr
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = _mono(out)
                    chunks.append(chunk)
                    decoded += len(chunk)
                if max_samples is not None and decoded > max_samples:
                    raise InputError(p, _too_long(decoded / target_sr, duration_limit))
            for out in resampler.resample(None):  # flush the resampler's delay line
                chunks.append(_mono(out))
        except (av.error.FFmpegError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(p, f"audio stream is corrupt or undecodable ({_ffmpeg_reason(exc)})") from exc
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if len(samples) == 0:
        raise InputError(p, "audio stream is empty (zero-length audio, nothing decoded)")
    if not np.all(np.isfinite(samples)):
        raise InputError(p, "decoded audio contains NaN or infinite samples")
    return AudioData(np.ascontiguousarray(samples), int(target_sr), len(samples) / float(target_sr), str(p))


def _mono(frame) -> np.ndarray:
    """A packed float frame, ``(1, samples * channels)`` interleaved, averaged down to mono."""
    channels = frame.layout.nb_channels
    data = frame.to_ndarray().reshape(-1)
    if channels == 1:
        return data.astype(np.float32, copy=False)
    return data[: len(data) - len(data) % channels].reshape(-1, channels).mean(axis=1, dtype=np.float32)


def _too_long(duration: float, limit: float) -> str:
    return (
        f"audio is {duration:.0f} s long, over the {limit:.0f} s limit "
        "(pass max_duration=None or set AFFECTLLM_MAX_MEDIA_SECONDS to raise it)"
    )


def _resample_array(samples: np.ndarray, source_sr: int, target_sr: int) -> np.ndarray:
    """Resample an in-memory mono signal with the same FFmpeg resampler ``load_audio`` uses."""
    av = _av()
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = int(source_sr)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=int(target_sr))
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def sample_frames(
    path: str | Path,
    num_frames: int = 8,
    every_s: float | None = None,
    max_side: int | None = None,
    max_bytes: Any = _DEFAULT,
) -> list[Frame]:
    """Pick frames for captioning: ``num_frames`` spread evenly (bin centres), or one every ``every_s`` seconds.

    Each target time is reached by seeking to the preceding key frame and decoding forward, so long videos
    cost a few GOPs per frame rather than a full decode. ``max_side`` shrinks frames (keeping the aspect
    ratio) for captioners that do not need full resolution.
    """
    av = _av()
    if every_s is None and num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    if every_s is not None and every_s <= 0:
        raise ValueError("every_s must be > 0")
    p, _ = _check_file(path, max_bytes)
    frames: list[Frame] = []
    with _open(p) as container:
        videos = [s for s in container.streams.video if not _is_attached_picture(s)]
        if not videos:
            raise InputError(p, "no video stream to sample frames from")
        stream = videos[0]
        stream.thread_type = "AUTO"
        duration = _stream_duration(stream) or _container_duration(container)
        try:
            if not duration:
                # Unknown length (some raw/streamed files): decode once and keep every n-th frame.
                all_frames = [(f.time or 0.0, f) for f in container.decode(stream)]
                if not all_frames:
                    raise InputError(p, "video stream has no decodable frames")
                step = len(all_frames) / (num_frames if every_s is None else max(1, len(all_frames)))
                picks = sorted(
                    {min(len(all_frames) - 1, int(i * step + step / 2)) for i in range(num_frames)}
                )
                return [Frame(all_frames[i][0], _to_image(all_frames[i][1], max_side)) for i in picks]
            if every_s is not None:
                targets = list(np.arange(0.0, duration, every_s))
            else:
                targets = [(i + 0.5) * duration / num_frames for i in range(num_frames)]
            start_time = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
            for t in targets:
                frame = _frame_at(container, stream, start_time + t)
                if frame is not None and not (
                    frames and abs(frames[-1].time - (float(frame.time) - start_time)) < 1e-3
                ):
                    frames.append(Frame(round(float(frame.time) - start_time, 3), _to_image(frame, max_side)))
        except (av.error.FFmpegError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(p, f"video stream is corrupt or undecodable ({_ffmpeg_reason(exc)})") from exc
    if not frames:
        raise InputError(p, "video stream has no decodable frames")
    return frames


def _frame_at(container, stream, t: float):
    container.seek(int(t / stream.time_base), stream=stream, backward=True, any_frame=False)
    last = None
    for frame in container.decode(stream):
        if frame.time is None:
            continue
        last = frame
        if frame.time + 1e-3 >= t:
            return frame
    return last  # t is past the last frame: use the last one


def _to_image(frame, max_side: int | None) -> Image.Image:
    image = frame.to_image()
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side))
    return image
