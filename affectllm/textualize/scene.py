"""Scene captions → time-stamped visual-scene cues.

Captions come from a sidecar file (``<stem>.captions.json`` or ``<stem>.captions.txt``) or from a captioner
run on key frames sampled from the video (:func:`affectllm.media.sample_frames`):

- ``openai``: any OpenAI-compatible vision endpoint (OpenAI, or a VLM served locally by vLLM / llama.cpp /
  Ollama) — each frame is sent as a base64 image content part;
- ``transformers``: a local image-captioning model named by the user (BLIP, GIT, ViT-GPT2, a chat VLM).

Consecutive captions that say the same thing (cosine similarity of MiniLM sentence embeddings at or above
``merge_threshold``) are merged into one cue spanning their combined time.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from affectllm.errors import MAX_TIME_S, InputError, MissingExtraError, check_number
from affectllm.registry import Registry
from affectllm.schema import SCENE, Cue

DEFAULT_MERGE_THRESHOLD = 0.85
DEFAULT_PROMPT = (
    "Describe in one short sentence what is visible in this video frame: the setting, the people, their "
    "posture, gestures and actions. Describe only what is visible; do not name emotions."
)
# Environment variables that configure the OpenAI-compatible captioner when no argument is given.
ENV_BASE_URL = "AFFECTLLM_CAPTION_BASE_URL"
ENV_MODEL = "AFFECTLLM_CAPTION_MODEL"
ENV_API_KEY = "AFFECTLLM_CAPTION_API_KEY"


@dataclass
class Caption:
    text: str
    start: float | None = None
    end: float | None = None


# ----------------------------------------------------------------------------------------- sidecar captions

_TIME = r"\d+(?::\d{1,2}){0,2}(?:[.,]\d+)?"
_TIMED_LINE = re.compile(rf"^\[\s*({_TIME})\s*(?:(?:-|–|-->|to)\s*({_TIME})\s*)?\]\s*(.*)$")


def parse_time(text: str) -> float:
    """Seconds from ``"12.5"``, ``"01:02.5"`` or ``"1:02:03,5"``."""
    parts = text.strip().replace(",", ".").split(":")
    if not parts or len(parts) > 3 or any(p == "" for p in parts):
        raise ValueError(f"not a time: {text!r}")
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + float(part)
    return seconds


def _time_field(value: Any, path: Path, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return check_number(value, f"{where}: time", 0.0, MAX_TIME_S, path)
    if isinstance(value, str):
        try:
            seconds = parse_time(value)
        except ValueError:
            pass
        else:
            return check_number(seconds, f"{where}: time {value!r} =", 0.0, MAX_TIME_S, path)
    raise InputError(path, f"{where}: time {value!r} is neither seconds nor [hh:]mm:ss[.s]")


def read_captions(path: str | Path, what: str = "captions") -> list[Caption]:
    """Read a captions sidecar.

    JSON: a list of strings or of ``{"text", "start"?, "end"?}`` objects (``"time"`` is accepted for
    ``"start"``), optionally under a top-level ``"captions"`` key. Text: one caption per line, optionally
    prefixed by ``[mm:ss.s]`` or ``[mm:ss.s-mm:ss.s]``. A caption with a start but no end lasts until the
    next caption's start.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} file not found")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, f"{what} file is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(path, f"cannot read the {what} file ({exc.strerror or exc})") from None
    if path.suffix.lower() == ".json":
        captions = _captions_from_json(raw, path)
    else:
        captions = _captions_from_text(raw, path)
    if not captions:
        raise InputError(path, f"no {what} in the file")
    _fill_open_ends(captions)
    return captions


def _captions_from_json(raw: str, path: Path) -> list[Caption]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg})", line=exc.lineno) from None
    except RecursionError:
        raise InputError(path, "JSON nested too deeply") from None
    if isinstance(data, dict) and "captions" in data:
        data = data["captions"]
    if not isinstance(data, list):
        raise InputError(path, 'expected a list of captions (strings or {"start","end","text"} objects)')
    out = []
    for i, item in enumerate(data):
        where = f"caption {i}"
        if isinstance(item, str):
            text, start, end = item, None, None
        elif isinstance(item, dict):
            text = item.get("text", item.get("caption"))
            if not isinstance(text, str):
                raise InputError(path, f'{where}: missing "text"')
            start = _time_field(item.get("start", item.get("time")), path, where)
            end = _time_field(item.get("end"), path, where)
        else:
            raise InputError(path, f"{where}: expected a string or an object, got {type(item).__name__}")
        if start is not None and end is not None and end < start:
            raise InputError(path, f"{where}: end {end} is before start {start}")
        if text.strip():
            out.append(Caption(" ".join(text.split()), start, end))
    return out


def _captions_from_text(raw: str, path: Path) -> list[Caption]:
    out = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        match = _TIMED_LINE.match(line)
        if match:
            start = check_number(parse_time(match.group(1)), "start time", 0.0, MAX_TIME_S, path, lineno)
            end = None
            if match.group(2):
                end = check_number(parse_time(match.group(2)), "end time", 0.0, MAX_TIME_S, path, lineno)
            if end is not None and end < start:
                raise InputError(path, f"end time before start time in {line!r}", line=lineno)
            text = match.group(3).strip()
            if text:
                out.append(Caption(text, start, end))
        elif line.startswith("["):
            raise InputError(
                path, f"unreadable time stamp in {line!r} (expected [mm:ss.s] or [mm:ss-mm:ss])", lineno
            )
        else:
            out.append(Caption(line))
    return out


def _fill_open_ends(captions: list[Caption], duration: float | None = None) -> None:
    timed = sorted((c for c in captions if c.start is not None), key=lambda c: c.start)
    for current, following in itertools.pairwise(timed):
        if current.end is None:
            current.end = following.start
    if timed and timed[-1].end is None and duration is not None:
        timed[-1].end = max(duration, timed[-1].start)


# ------------------------------------------------------------------------------------------------- merging


def merge_near_duplicates(
    captions: Sequence[Caption], threshold: float = DEFAULT_MERGE_THRESHOLD, embedder: Any = None
) -> list[Caption]:
    """Merge runs of consecutive captions whose MiniLM embeddings are at least ``threshold`` similar.

    A merged caption keeps the first caption's text and spans from the earliest start to the latest end.
    Each caption is compared with the first of the run it would join, so a slow drift of descriptions does
    not chain into one span. Without the embedding extra, only exact (case- and space-insensitive) repeats
    are merged.
    """
    items = sorted(captions, key=lambda c: (c.start is None, c.start or 0.0))
    if len(items) < 2:
        return [Caption(c.text, c.start, c.end) for c in items]
    texts = [c.text for c in items]
    try:
        if embedder is None:
            from affectllm.embeddings import get_embedder

            embedder = get_embedder()
        vectors = embedder.encode(texts)
    except (ImportError, MissingExtraError):
        vectors = None

    def similar(i: int, j: int) -> bool:
        if vectors is None:
            return " ".join(texts[i].lower().split()) == " ".join(texts[j].lower().split())
        return float(vectors[i] @ vectors[j]) >= threshold

    merged: list[Caption] = []
    head = 0
    for i, cap in enumerate(items):
        if merged and similar(head, i):
            last = merged[-1]
            starts = [s for s in (last.start, cap.start) if s is not None]
            ends = [e for e in (last.end, cap.end, cap.start) if e is not None]
            last.start = min(starts) if starts else None
            last.end = max(ends) if ends else None
            continue
        head = i
        merged.append(Caption(cap.text, cap.start, cap.end))
    return merged


# ----------------------------------------------------------------------------------------------- captioners


class Captioner(Protocol):
    """Anything that turns images into one caption each."""

    name: str

    def caption(self, images: Sequence[Any]) -> list[str]: ...


def _image_data_url(image: Any, max_side: int = 768) -> str:
    image = image.convert("RGB")
    if max(image.size) > max_side:
        # Vision endpoints bill and batch by pixels; a caption needs no more than this.
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAICaptioner:
    """Captions frames with any OpenAI-compatible chat endpoint that accepts image content parts.

    ``base_url`` defaults to ``$AFFECTLLM_CAPTION_BASE_URL`` then ``$OPENAI_BASE_URL`` (else api.openai.com),
    ``model`` to ``$AFFECTLLM_CAPTION_MODEL``, the key to ``$AFFECTLLM_CAPTION_API_KEY`` then
    ``$OPENAI_API_KEY``; a local server that needs no key gets a placeholder.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        prompt: str = DEFAULT_PROMPT,
        max_tokens: int = 60,
        timeout: float = 120.0,
    ) -> None:
        self.model = model or os.environ.get(ENV_MODEL)
        if not self.model:
            raise InputError(None, f"the openai captioner needs a model: --caption-model or ${ENV_MODEL}")
        self.base_url = base_url or os.environ.get(ENV_BASE_URL) or os.environ.get("OPENAI_BASE_URL")
        self.api_key = (
            api_key or os.environ.get(ENV_API_KEY) or os.environ.get("OPENAI_API_KEY") or "not-needed"
        )
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.name = f"openai:{self.model}"
        self._client = None

    def _get_client(self):
        if self._client is None:
            openai = _require("openai", "openai", "the OpenAI-compatible captioner")
            self._client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout)
        return self._client

    def caption(self, images: Sequence[Any]) -> list[str]:
        client = self._get_client()
        out = []
        for image in images:
            response = client.chat.completions.create(
                model=self.model,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": self.prompt},
                            {"type": "image_url", "image_url": {"url": _image_data_url(image)}},
                        ],
                    }
                ],
                max_tokens=self.max_tokens,
                temperature=0.0,
            )
            text = response.choices[0].message.content if response.choices else None
            out.append(" ".join((text or "").split()))
        return out


class TransformersCaptioner:
    """Captions frames with a local transformers model (a path or a hub name the user has cached).

    Models that ship a multimodal processor (BLIP, GIT, chat VLMs) run through the ``image-text-to-text``
    pipeline; encoder-decoder captioners with only an image processor and a tokenizer (ViT-GPT2 style
    ``VisionEncoderDecoderModel``) are run directly with ``generate``.
    """

    def __init__(
        self,
        model: str,
        prompt: str | None = None,
        max_new_tokens: int = 30,
        device: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if not model:
            raise InputError(None, "the transformers captioner needs a model: --caption-model NAME_OR_PATH")
        self.model_name = model
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.trust_remote_code = trust_remote_code
        self.name = f"transformers:{model}"
        self._runner = None

    def _load(self):
        transformers = _require("transformers", "transformers", "the transformers captioner")
        from transformers.processing_utils import ProcessorMixin

        try:
            processor = transformers.AutoProcessor.from_pretrained(
                self.model_name, trust_remote_code=self.trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise InputError(self.model_name, f"cannot load a captioning model here ({exc})") from None
        if isinstance(processor, ProcessorMixin):
            pipe = transformers.pipeline(
                "image-text-to-text",
                model=self.model_name,
                device=self.device,
                trust_remote_code=self.trust_remote_code,
            )
            chat = getattr(processor, "chat_template", None) is not None
            return ("pipeline", pipe, chat)
        model = transformers.AutoModelForImageTextToText.from_pretrained(
            self.model_name, trust_remote_code=self.trust_remote_code
        )
        if self.device:
            model = model.to(self.device)
        model.eval()
        image_processor = transformers.AutoImageProcessor.from_pretrained(self.model_name)
        tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_name)
        return ("generate", (model, image_processor, tokenizer), False)

    def caption(self, images: Sequence[Any]) -> list[str]:
        if self._runner is None:
            self._runner = self._load()
        mode, runner, chat = self._runner
        images = [im.convert("RGB") for im in images]
        if mode == "generate":
            import torch

            model, image_processor, tokenizer = runner
            inputs = image_processor(images=images, return_tensors="pt").to(model.device)
            with torch.inference_mode():
                ids = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        elif chat:
            prompt = self.prompt or DEFAULT_PROMPT
            texts = []
            for image in images:
                messages = [
                    {
                        "role": "user",
                        "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}],
                    }
                ]
                result = runner(text=messages, max_new_tokens=self.max_new_tokens, return_full_text=False)
                texts.append(_generated_text(result))
        else:
            texts = []
            for image in images:
                kwargs = {"text": self.prompt} if self.prompt else {}
                result = runner(images=image, max_new_tokens=self.max_new_tokens, **kwargs)
                texts.append(_generated_text(result))
        return [" ".join(t.split()) for t in texts]


def _generated_text(result: Any) -> str:
    while isinstance(result, list) and result:
        result = result[0]
    if isinstance(result, dict):
        text = result.get("generated_text", "")
        if isinstance(text, list):  # chat output: the message list with the assistant turn last
            last = text[-1] if text else {}
            text = last.get("content", "") if isinstance(last, dict) else str(last)
        return str(text)
    return str(result or "")


def _require(module: str, extra: str, purpose: str):
    from affectllm.errors import require

    return require(module, extra, purpose)


CAPTIONERS: Registry[type] = Registry(
    "captioner", {"openai": OpenAICaptioner, "transformers": TransformersCaptioner}
)


def get_captioner(
    name: str, model: str | None = None, base_url: str | None = None, **options: Any
) -> Captioner:
    """A captioner by name: ``"openai"`` (``model``, ``base_url``, ``api_key``, ``prompt``, ``max_tokens``) or
    ``"transformers"`` (``model``, ``prompt``, ``max_new_tokens``, ``device``); an unknown name raises
    :class:`~affectllm.registry.UnknownNameError` listing the known ones."""
    cls = CAPTIONERS.get(name)
    if base_url:
        if cls is not OpenAICaptioner:
            raise InputError(None, "--base-url applies to the openai captioner only")
        options["base_url"] = base_url
    # A local model has no default name to fall back on; the constructor reports the empty one.
    return cls(model=model if cls is OpenAICaptioner else (model or ""), **options)


def caption_frames(media: str | Path, captioner: Captioner, num_frames: int = 8) -> list[Caption]:
    """Sample ``num_frames`` key frames from a video and caption each (spans meet half-way between frames)."""
    from affectllm.media import probe, sample_frames

    frames = sample_frames(media, num_frames=num_frames)
    if not frames:
        raise InputError(media, "no video frames could be decoded for captioning")
    texts = captioner.caption([f.image for f in frames])
    if len(texts) != len(frames):
        raise InputError(
            media, f"captioner {captioner.name} returned {len(texts)} captions for {len(frames)} frames"
        )
    try:
        duration = probe(media).duration
    except Exception:  # a missing duration only shortens the last caption's span
        duration = None
    # Each frame stands for the stretch of video nearer to it than to its neighbours.
    times = [float(f.time) for f in frames]
    captions = []
    for i, text in enumerate(texts):
        start = 0.0 if i == 0 else (times[i - 1] + times[i]) / 2
        end = (times[i] + times[i + 1]) / 2 if i + 1 < len(times) else max(duration or times[i], times[i])
        if text:
            captions.append(Caption(text, round(start, 3), round(end, 3)))
    return captions


def scene_cues(
    captions: str | Path | Sequence[Caption | str] | None = None,
    media: str | Path | None = None,
    captioner: Captioner | str | None = None,
    num_frames: int = 8,
    merge_threshold: float | None = DEFAULT_MERGE_THRESHOLD,
    embedder: Any = None,
    caption_model: str | None = None,
    base_url: str | None = None,
    duration: float | None = None,
) -> list[Cue]:
    """Visual-scene cues from a captions sidecar / list, or from a captioner run on ``media``.

    ``captioner`` is a :class:`Captioner` or a name for :func:`get_captioner` (with ``caption_model`` and
    ``base_url``). ``merge_threshold=None`` keeps every caption.
    """
    if captions is not None:
        if isinstance(captions, (str, Path)):
            items = read_captions(captions)
            source = f"captions:{Path(captions).name}"
        else:
            items = [c if isinstance(c, Caption) else Caption(str(c)) for c in captions]
            source = "captions"
        _fill_open_ends(items, duration)
    elif captioner is not None and media is not None:
        if isinstance(captioner, str):
            captioner = get_captioner(captioner, model=caption_model, base_url=base_url)
        items = caption_frames(media, captioner, num_frames=num_frames)
        source = f"captioner:{captioner.name}"
    else:
        return []
    if merge_threshold is not None:
        items = merge_near_duplicates(items, threshold=merge_threshold, embedder=embedder)
    return [
        Cue(SCENE, "scene", value=c.text, start=c.start, end=c.end, source=source) for c in items if c.text
    ]
