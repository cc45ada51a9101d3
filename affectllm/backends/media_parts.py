"""Convert the builder's neutral media parts into the OpenAI chat format (used by the OpenAI and vLLM backends).

``affectllm.prompting`` writes parts the way transformers processors read them: ``{"type": "image", "path" |
"url" | "image": ...}`` and ``{"type": "audio", "path" | "audio": ..., "sampling_rate": ...}``. OpenAI-style
servers want ``image_url`` (an http(s) or ``data:`` URL) and ``input_audio`` (base64 WAV/MP3).
"""

from __future__ import annotations

import base64
import io
import mimetypes
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from affectllm.backends.base import Message
from affectllm.errors import InputError


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_url(part: dict[str, Any]) -> str:
    """An http(s) or data URL for an image part."""
    if part.get("url"):
        return str(part["url"])
    if part.get("path"):
        path = Path(part["path"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(path, f"cannot read image: {exc}") from exc
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        return _data_url(data, mime)
    image = part.get("image")
    if image is None:
        raise ValueError("image part has no path, url or image")
    if isinstance(image, (str, Path)):
        return image_url({"path": image} if not str(image).startswith(("http", "data:")) else {"url": image})
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")  # a PIL image
    return _data_url(buffer.getvalue(), "image/png")


def wav_bytes(samples: Any, sampling_rate: int) -> bytes:
    """16-bit PCM WAV of a float waveform in [-1, 1] (mono, or the first channel)."""
    import numpy as np

    x = np.asarray(samples, dtype=np.float32)
    if x.ndim > 1:
        x = x.reshape(x.shape[0], -1)[:, 0] if x.shape[0] > x.shape[-1] else x[0]
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sampling_rate))
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()


def audio_payload(part: dict[str, Any]) -> tuple[str, str]:
    """(base64 data, format) for an audio part."""
    if part.get("path"):
        path = Path(part["path"])
        suffix = path.suffix.lower().lstrip(".")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(path, f"cannot read audio: {exc}") from exc
        if suffix not in ("wav", "mp3"):
            raise InputError(
                path, "OpenAI-style audio input takes WAV or MP3; convert it or pass the waveform"
            )
        return base64.b64encode(data).decode("ascii"), suffix
    if part.get("audio") is None:
        raise ValueError("audio part has no path or waveform")
    data = wav_bytes(part["audio"], int(part.get("sampling_rate", 16000)))
    return base64.b64encode(data).decode("ascii"), "wav"


def openai_content(content: Any) -> Any:
    """One message's content in the OpenAI chat format."""
    if isinstance(content, str) or content is None:
        return content or ""
    parts: list[dict[str, Any]] = []
    for p in content:
        kind = p.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": p.get("text", "")})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": image_url(p)}})
        elif kind == "audio":
            data, fmt = audio_payload(p)
            parts.append({"type": "input_audio", "input_audio": {"data": data, "format": fmt}})
        elif kind in ("image_url", "input_audio", "audio_url", "video_url"):
            parts.append(dict(p))  # already OpenAI-style
    return parts


def openai_messages(messages: Sequence[Message], images: bool = True, audio: bool = True) -> list[Message]:
    """Messages in the OpenAI format; media kinds the model cannot take are dropped, and text-only
    content collapses back to a plain string (some servers reject part lists for text models)."""
    out: list[Message] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            kept = [
                p
                for p in content
                if not (p.get("type") == "image" and not images)
                and not (p.get("type") == "audio" and not audio)
            ]
            if all(p.get("type") == "text" for p in kept):
                content = "\n".join(str(p.get("text", "")) for p in kept)
            else:
                content = openai_content(kept)
        out.append({"role": m["role"], "content": content if content is not None else ""})
    return out
