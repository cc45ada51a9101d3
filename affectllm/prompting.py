"""Prompt templates → chat messages, and the answer contract's target text.

One builder serves inference *and* training: ``build_messages`` is what backends see at prediction time and what
the SFT/GRPO data builders feed the trainer, and ``format_answer`` writes exactly the text ``parse_answer`` reads,
so a fine-tuned model is trained on the format it is later parsed with.

Templates live in ``prompts/`` (shipped in the wheel) as versioned YAML files with Jinja2 bodies; few-shot
examples in ``prompts/few_shot/``. See docs/prompts.md for the contract and the template variables.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectllm.errors import InputError
from affectllm.resources import asset_dir
from affectllm.schema import (
    CUE_ID_PATTERN,
    LINGUISTIC,
    Clip,
    Cue,
    Evidence,
    Media,
    RationaleItem,
    normalize_modality,
)
from affectllm.settings import PromptSettings
from affectllm.textualize.render import format_time, render_cues

# Tasks and the template each uses unless ``template=`` names another.
DEFAULT_TEMPLATES: dict[str, str] = {
    "ov": "ov_rationale.v3",
    "closed": "closed_set.v3",
    "chat": "chat_followup.v2",
}
TASK_ALIASES: dict[str, str] = {
    "ov": "ov",
    "open": "ov",
    "open-vocabulary": "ov",
    "ovmer": "ov",
    "closed": "closed",
    "closed-set": "closed",
    "closed_set": "closed",
    "classification": "closed",
    "chat": "chat",
    "followup": "chat",
}

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# The one-line statement of the contract that system prompts include (``{{ contract }}``).
CONTRACT_TEXT = (
    'one line: <answer>{"emotions": [...], "rationale": [{"id": ..., "cue": ..., "modality": ..., '
    '"time": ...}], "confidence": ...}</answer> where emotions lists the emotion words, each rationale item '
    "cites one evidence line by its id with a few words saying what it shows, and confidence is between 0 and 1."
)
# Closed-set variant: the same JSON, with exactly one label.
CLOSED_CONTRACT_TEXT = CONTRACT_TEXT.replace(
    "emotions lists the emotion words", "emotions holds the one label"
)

# Where a generation can stop once the answer is complete (engines drop the stop string; the parser accepts an
# answer block that is cut there).
STOP_SEQUENCES: list[str] = [ANSWER_CLOSE]

# A fallback transcript for base models that have no chat template (and for the plain-text prompt of engines
# that take a raw prompt). Few-shot turns keep the same roles, so a base model continues the pattern.
_ROLE_HEADERS = {"system": "### Instructions", "user": "### User", "assistant": "### Assistant"}


@dataclass
class PromptTemplate:
    """One versioned template file."""

    name: str
    version: int
    task: str
    system: str
    user: str
    description: str = ""
    few_shot_examples: int = 3
    path: Path | None = None

    @property
    def id(self) -> str:
        return f"{self.name}.v{self.version}"


@dataclass
class FewShotExample:
    """A hand-written example clip with its target answer (``prompts/few_shot/*.yaml``)."""

    example_id: str
    clip: Clip
    emotions: list[str]
    rationale: list[RationaleItem]
    closed_labels: list[str] = field(default_factory=list)
    context: list[dict[str, str]] = field(default_factory=list)
    confidence: float | None = None
    think: str | None = None


@functools.lru_cache(maxsize=1)
def _env():
    import jinja2

    # StrictUndefined: a typo in a template variable is an error, not a silently empty prompt.
    return jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )


@functools.lru_cache(maxsize=128)
def _compiled(source: str):
    # Compiling a template costs ~40 ms; data builders render thousands of prompts from a handful of sources.
    return _env().from_string(source)


def _prompts_dir() -> Path:
    return asset_dir("prompts")


def list_templates() -> list[str]:
    """Template ids (``name.vN``) shipped in ``prompts/``."""
    return sorted(p.name[: -len(".yaml")] for p in _prompts_dir().glob("*.v*.yaml"))


def _resolve_template_path(template: str) -> Path:
    candidate = Path(template)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    name = template[: -len(".yaml")] if template.endswith(".yaml") else template
    path = _prompts_dir() / f"{name}.yaml"
    if path.is_file():
        return path
    # A bare name ("ov_rationale") picks the newest version.
    versions = sorted(
        _prompts_dir().glob(f"{name}.v*.yaml"),
        key=lambda p: int(re.sub(r"\D", "", p.name.rsplit(".v", 1)[1]) or 0),
    )
    if versions:
        return versions[-1]
    raise InputError(template, f"no such prompt template; available: {', '.join(list_templates())}")


@functools.lru_cache(maxsize=64)
def _load_template_cached(path: str, mtime: float) -> PromptTemplate:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise InputError(path, f"invalid YAML: {exc}", None if line is None else line + 1) from exc
    if not isinstance(data, dict):
        raise InputError(path, "a prompt template must be a YAML mapping")
    missing = [k for k in ("name", "version", "task", "system", "user") if k not in data]
    if missing:
        raise InputError(path, f"prompt template is missing {', '.join(missing)}")
    task = TASK_ALIASES.get(str(data["task"]).lower())
    if task is None:
        raise InputError(path, f"unknown task {data['task']!r}; expected one of {sorted(DEFAULT_TEMPLATES)}")
    for key in ("system", "user"):
        try:
            _env().parse(str(data[key]))
        except Exception as exc:  # jinja2.TemplateSyntaxError
            raise InputError(path, f"{key}: invalid Jinja2: {exc}", getattr(exc, "lineno", None)) from exc
    return PromptTemplate(
        name=str(data["name"]),
        version=int(data["version"]),
        task=task,
        system=str(data["system"]),
        user=str(data["user"]),
        description=str(data.get("description", "")),
        few_shot_examples=int(data.get("few_shot_examples", 3)),
        path=Path(path),
    )


def load_template(template: str | None = None, task: str = "ov") -> PromptTemplate:
    """Load a template by id (``ov_rationale.v1``), bare name (newest version) or path to a YAML file."""
    task = normalize_task(task)
    path = _resolve_template_path(template or DEFAULT_TEMPLATES[task])
    return _load_template_cached(str(path), path.stat().st_mtime)


def normalize_task(task: str) -> str:
    key = str(task).strip().lower()
    if key not in TASK_ALIASES:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(DEFAULT_TEMPLATES)}")
    return TASK_ALIASES[key]


# ----------------------------------------------------------------------------------------------- few-shot


def _cue_from_yaml(path: Path, data: Any, index: int) -> Cue:
    if not isinstance(data, dict):
        raise InputError(path, f"cue {index + 1} must be a mapping")
    try:
        return Cue.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"cue {index + 1}: {exc}") from exc


def load_example(path: str | Path) -> FewShotExample:
    """Read one few-shot example file (see ``prompts/few_shot/README.md``)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read few-shot example: {exc}") from exc
    if not isinstance(data, dict) or "cues" not in data or "emotions" not in data:
        raise InputError(path, "a few-shot example needs at least 'cues' and 'emotions'")
    cues = [_cue_from_yaml(path, c, i) for i, c in enumerate(data["cues"] or [])]
    clip = Clip(str(data.get("id", path.stem)), cues, transcript=data.get("transcript"))
    rationale = [
        RationaleItem(
            cue=str(r.get("cue", "")), cue_id=r.get("id"), modality=r.get("modality"), time=r.get("time")
        )
        for r in data.get("rationale") or []
    ]
    return FewShotExample(
        example_id=clip.clip_id,
        clip=clip,
        emotions=[str(e) for e in data["emotions"]],
        rationale=rationale,
        closed_labels=[str(x) for x in data.get("closed_labels") or []],
        context=[dict(t) for t in data.get("context") or []],
        confidence=data.get("confidence"),
        think=data.get("think"),
    )


@functools.lru_cache(maxsize=8)
def _examples_in(directory: str) -> tuple[FewShotExample, ...]:
    return tuple(load_example(p) for p in sorted(Path(directory).glob("*.yaml")))


def load_examples(directory: str | Path | None = None) -> list[FewShotExample]:
    """All few-shot examples, in file-name order (``prompts/few_shot/`` unless another folder is given)."""
    return list(_examples_in(str(directory or _prompts_dir() / "few_shot")))


_WORD_RE = re.compile(r"\bau0*(\d+)|[a-z]+")
# Words every evidence block shares (headers, units, intensity letters): they say nothing about the emotion.
_EVIDENCE_STOPWORDS = frozenset(
    [
        "the",
        "and",
        "with",
        "from",
        "for",
        "this",
        "that",
        "vs",
        "speaker",
        "mean",
        "clip",
        "whole",
        "onset",
        "apex",
        "offset",
        "peak",
        "measured",
        "acoustic",
        "facial",
        "visual",
        "scene",
        "speech",
        "content",
        "voice",
        "prosody",
        "action",
        "units",
        "caption",
        "transcript",
    ]
)


def _evidence_features(clip: Clip) -> tuple[frozenset[str], frozenset[str]]:
    """(facial action units as "au12", other content words) of a clip's evidence and transcript."""
    text = (render_cues(clip) + " " + (clip.transcript or "")).lower()
    aus: set[str] = set()
    words: set[str] = set()
    for match in _WORD_RE.finditer(text):
        if match.group(1):
            aus.add(f"au{int(match.group(1))}")
        elif len(match.group(0)) > 2 and match.group(0) not in _EVIDENCE_STOPWORDS:
            words.add(match.group(0))
    return frozenset(aus), frozenset(words)


def example_similarity(example: FewShotExample, clip: Clip) -> float:
    """How much an example's evidence resembles the clip's, 0..2: the Jaccard overlap of their facial action
    units (the most emotion-specific cue) plus the share of the example's content words the clip also has
    (containment, because real evidence blocks are far longer than the hand-written examples)."""
    ex_aus, ex_words = _evidence_features(example.clip)
    aus, words = _evidence_features(clip)
    au_score = len(ex_aus & aus) / len(ex_aus | aus) if ex_aus and aus else 0.0
    word_score = len(ex_words & words) / len(ex_words) if ex_words else 0.0
    return au_score + word_score


def select_examples(
    task: str,
    labels: Sequence[str] | None = None,
    count: int = 3,
    directory: str | Path | None = None,
    clip: Clip | None = None,
) -> list[tuple[FewShotExample, list[str]]]:
    """The examples a task's prompt shows, each with its target emotions.

    For a closed label set an example is used only when one of its ``closed_labels`` is in the set, so the
    demonstration never teaches a label the task does not have.

    With ``clip``, the ``count`` examples whose evidence most resembles the clip's are chosen and ordered from
    least to most similar: a small base model leans on the demonstration nearest its answer, so that one should
    be the most relevant, and the examples (hence the answer) then change with the evidence instead of always
    being the same first files. Ties keep file order, so prompts are deterministic.
    """
    eligible: list[tuple[FewShotExample, list[str]]] = []
    folded = {label.casefold(): label for label in labels or []}
    for example in load_examples(directory):
        if task == "closed":
            label = next(
                (folded[c.casefold()] for c in example.closed_labels if c.casefold() in folded), None
            )
            if label is not None:
                eligible.append((example, [label]))
        else:
            eligible.append((example, list(example.emotions)))
    if clip is None:
        return eligible[:count]
    ranked = sorted(range(len(eligible)), key=lambda i: (-example_similarity(eligible[i][0], clip), i))[
        :count
    ]
    return [eligible[i] for i in reversed(ranked)]


# ------------------------------------------------------------------------------------------ answer contract


def rationale_item(item: RationaleItem | dict[str, Any], cues: dict[str, Cue]) -> dict[str, Any]:
    """One rationale item as the contract writes it (id, cue, modality, time); an item citing an id of
    ``cues`` (``{ID: Cue}``) gets that cue's modality and time where it gives none."""
    if isinstance(item, RationaleItem):
        cue_id, text, modality, time = item.cue_id, item.cue, item.modality, item.time
    else:
        cue_id = item.get("id", item.get("cue_id"))
        text, modality, time = item.get("cue", ""), item.get("modality"), item.get("time")
    cited = cues.get(str(cue_id).upper()) if cue_id else None
    if cited is not None:
        modality = modality or cited.modality
        time = time or format_time(cited.start, cited.end)
    if modality:
        try:
            modality = normalize_modality(str(modality))
        except ValueError:
            modality = str(modality)
    out: dict[str, Any] = {}
    if cue_id:
        out["id"] = str(cue_id)
    out["cue"] = str(text or "")
    out["modality"] = modality
    out["time"] = time
    return out


def format_answer(
    emotions: Sequence[str],
    rationale: Sequence[RationaleItem | dict[str, Any]] = (),
    task: str = "ov",
    confidence: float | None = None,
    think: str | None = None,
    clip: Clip | None = None,
) -> str:
    """The exact answer text of the contract (SFT targets and few-shot turns use it; ``parse_answer`` reads it).

    ``<think>…</think>`` comes first only when ``think`` is given. Rationale items that cite an id of ``clip``
    get their modality and time filled in from the cue. For ``task="chat"`` the answer is prose: the rationale
    ids are cited in brackets and the emotions close the reply on an ``Emotions:`` line.
    """
    task = normalize_task(task)
    cues = {e.id.upper(): e.cue for e in clip.evidence()} if clip is not None else {}
    items = [rationale_item(r, cues) for r in rationale]
    if task == "chat":
        sentences = [think.strip()] if think else []
        for it in items:
            ref = f" [{it['id']}]" if it.get("id") else ""
            sentences.append(f"{it['cue']}{ref}.")
        text = " ".join(s for s in sentences if s)
        if emotions:
            text = (text + "\n" if text else "") + "Emotions: " + ", ".join(emotions)
        return text
    payload: dict[str, Any] = {"emotions": [str(e) for e in emotions], "rationale": items}
    if confidence is not None:
        payload["confidence"] = round(float(confidence), 3)
    body = ANSWER_OPEN + json.dumps(payload, ensure_ascii=False) + ANSWER_CLOSE
    if think:
        return f"{THINK_OPEN}{think.strip()}{THINK_CLOSE}\n{body}"
    return body


def answer_json_schema(labels: Sequence[str] | None = None, max_emotions: int = 8) -> dict[str, Any]:
    """The JSON schema of the answer object inside ``<answer>``, for engines that constrain decoding (vLLM,
    OpenAI ``response_format``); with ``labels`` the one emotion must be a label of the set. Under constrained
    decoding the model emits the bare object, which ``parse_answer`` accepts as following the contract."""
    emotion: dict[str, Any] = {"type": "string"}
    if labels:
        emotion = {"type": "string", "enum": list(labels)}
    return {
        "type": "object",
        "properties": {
            "emotions": {
                "type": "array",
                "items": emotion,
                "minItems": 1,
                "maxItems": 1 if labels else max_emotions,
            },
            "rationale": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "pattern": f"^{CUE_ID_PATTERN}$"},
                        "cue": {"type": "string"},
                        "modality": {"type": "string"},
                        "time": {"type": "string"},
                    },
                    "required": ["id", "cue"],
                },
                "maxItems": 8,
            },
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["emotions", "rationale"],
    }


# ------------------------------------------------------------------------------------------------ messages


def _media_parts(media: Media | None) -> tuple[list[dict[str, Any]], str]:
    """Content parts for frames/audio (transformers-processor style; each backend converts them), plus a line
    telling the model what the parts are."""
    if not media:
        return [], ""
    parts: list[dict[str, Any]] = []
    notes: list[str] = []
    times: list[str] = []
    for img in media.frames:
        if hasattr(img, "image") and hasattr(img, "time"):  # affectllm.media.Frame
            times.append(f"{float(img.time):.1f}s")
            img = img.image
        if isinstance(img, (str, Path)):
            s = str(img)
            if s.startswith(("http://", "https://", "data:")):
                parts.append({"type": "image", "url": s})
            else:
                parts.append({"type": "image", "path": s})
        else:
            parts.append({"type": "image", "image": img})
    if media.frames:
        n = len(media.frames)
        notes.append(
            f"{n} key frame{'s' if n != 1 else ''} from the clip"
            + (f" (at {', '.join(times)})" if times else "")
            + " are attached."
        )
    audio = media.audio
    if audio is not None:
        if hasattr(audio, "samples") and hasattr(audio, "sample_rate"):  # affectllm.media.AudioData
            parts.append({"type": "audio", "audio": audio.samples, "sampling_rate": int(audio.sample_rate)})
        elif isinstance(audio, (str, Path)):
            parts.append({"type": "audio", "path": str(audio)})
        else:
            parts.append({"type": "audio", "audio": audio, "sampling_rate": int(media.sampling_rate)})
        notes.append("The clip's audio is attached.")
    return parts, " ".join(notes)


def _render_user(
    tpl: PromptTemplate,
    clip: Clip,
    settings: PromptSettings,
    question: str | None,
    media_note: str = "",
) -> str:
    cues = render_cues(clip, modalities=settings.modalities, max_tokens=settings.max_cue_tokens)
    shows_words = settings.modalities is None or LINGUISTIC in settings.modalities
    if media_note:
        cues = f"{cues}\n{media_note}"
    text = _compiled(tpl.user).render(
        clip_id=clip.clip_id,
        cues=cues,
        # Templates before v3 repeated the transcript after the evidence; v3 shows it once, as a citable line.
        transcript=(clip.transcript or "").strip() or None if shows_words else None,
        context=clip.context if shows_words else [],
        labels=list(settings.labels),
        question=question,
        speaker=clip.speaker if shows_words else None,
        task=tpl.task,
    )
    return text.strip()


def shown_evidence(clip: Clip, settings: PromptSettings) -> list[Evidence]:
    """The evidence lines a prompt built with ``settings`` shows (its modalities, within its cue budget): what
    a rationale may cite, and what the grounding metric and reward check citations against."""
    shown = set(
        render_cues(clip, modalities=settings.modalities, max_tokens=settings.max_cue_tokens).splitlines()
    )
    return [e for e in clip.evidence() if e.text in shown]


def build_messages(
    clip: Clip,
    settings: PromptSettings | None = None,
    *,
    question: str | None = None,
    history: list[dict[str, Any]] | None = None,
    media: Media | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Chat messages for one clip: a system turn, optional few-shot turns, and the user turn with the evidence.

    Every caller — chat, predict, eval run, the SFT/GRPO data builders, the benches — comes here with a clip from
    :func:`affectllm.clips.clip_from_row` and one :class:`~affectllm.settings.PromptSettings` (``options`` are
    that object's fields, for quick calls). What is shown comes from the clip: its evidence lines (the
    transcript is one of them, citable as ``L1``), its speaker and its dialogue context.

    - ``media`` attaches frames and audio as content parts for multimodal backbones.
    - ``question`` replaces the settings' and the template's default question; for ``task="chat"``,
      ``history`` holds the chat so far (``[{"role", "content"}]`` without the evidence), whose first user turn
      carries the evidence.
    """
    settings = (settings or PromptSettings()).replace(**options)
    tpl = load_template(settings.template, settings.task)
    if tpl.task == "closed" and not settings.labels:  # a closed-set template named under another task
        raise ValueError("task 'closed' needs the label set (labels=[...])")
    contract = CLOSED_CONTRACT_TEXT if tpl.task == "closed" else CONTRACT_TEXT
    system = _compiled(tpl.system).render(labels=list(settings.labels), contract=contract, task=tpl.task)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system.strip()}]

    n_shots = tpl.few_shot_examples if settings.few_shot < 0 else settings.few_shot
    if n_shots > 0:
        for example, target in select_examples(tpl.task, settings.labels, n_shots, clip=clip):
            shot = Clip(
                example.clip.clip_id,
                example.clip.cues,
                transcript=example.clip.transcript,
                context=example.context,
            )
            messages.append({"role": "user", "content": _render_user(tpl, shot, settings, None)})
            answer = format_answer(
                target, example.rationale, tpl.task, example.confidence, example.think, shot
            )
            messages.append({"role": "assistant", "content": answer})

    parts, note = _media_parts(media)
    history = [dict(m) for m in history or []]
    first_question = question or settings.question
    if tpl.task == "chat" and history:
        if history[0].get("role") != "user":
            raise ValueError("chat history must start with a user turn")
        first_question = str(history[0].get("content", ""))
    user = _render_user(tpl, clip, settings, first_question, note)
    messages.append({"role": "user", "content": [*parts, {"type": "text", "text": user}] if parts else user})
    if tpl.task == "chat" and history:
        messages.extend(history[1:])
        if question:
            messages.append({"role": "user", "content": question})
    elif history:
        messages.extend(history)
    return messages


def message_text(message: dict[str, Any]) -> str:
    """The text of a message whose content may be a list of parts (non-text parts are dropped)."""
    content = message.get("content", "")
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def build_prompt_text(
    messages: Sequence[dict[str, Any]], tokenizer: Any = None, add_generation_prompt: bool = True
) -> str:
    """One prompt string for engines that take raw text.

    With a tokenizer that has a chat template, that template is used; otherwise a plain "### Role" transcript,
    which base models without chat tokens continue reliably once few-shot turns show the pattern.
    """
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        plain = [{"role": m["role"], "content": message_text(m)} for m in messages]
        return tokenizer.apply_chat_template(
            plain, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    blocks = [
        f"{_ROLE_HEADERS.get(m['role'], '### ' + m['role'].title())}\n{message_text(m).strip()}"
        for m in messages
    ]
    if add_generation_prompt:
        blocks.append(_ROLE_HEADERS["assistant"] + "\n")
    return "\n\n".join(blocks)


__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "CONTRACT_TEXT",
    "DEFAULT_TEMPLATES",
    "STOP_SEQUENCES",
    "FewShotExample",
    "PromptTemplate",
    "answer_json_schema",
    "build_messages",
    "build_prompt_text",
    "example_similarity",
    "format_answer",
    "list_templates",
    "load_examples",
    "load_template",
    "message_text",
    "normalize_task",
    "rationale_item",
    "select_examples",
    "shown_evidence",
]
