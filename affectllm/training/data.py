"""Training rows from dataset rows, through the same prompt builder and answer contract as inference.

``affectllm.datasets`` converts a dataset's upstream files into plain rows (``id``, ``transcript``, ``labels`` /
``label``, ``context``, ``media``, ``rationale``, ...). This module turns them into:

- SFT rows ``{"prompt": [messages], "completion": [assistant message]}`` (trl's conversational
  prompt-completion format, so the loss covers the answer only): the prompt is
  :func:`affectllm.prompting.build_messages` and the answer :func:`affectllm.prompting.format_answer` — exactly
  what the model sees and the parser reads at inference.
- GRPO rows ``{"prompt", "labels", "label", "label_set", "evidence", ...}``: the prompt plus the columns the
  rewards read (gold labels for ``ew_f1``/``accuracy``, the clip's evidence lines for ``grounding``).

Nothing is downloaded: a source names a converter and a folder of upstream files. Dev and test splits are
refused (``allow_eval_splits`` exists for pipeline smoke tests only), and ids of ``holdout`` datasets are
removed from every source, because e.g. the OV-MERD evaluation clips are MER2023 *train* samples.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectllm.clips import clip_from_row, load_clips_jsonl
from affectllm.errors import InputError
from affectllm.prompting import build_messages, build_prompt_text, format_answer, shown_evidence
from affectllm.schema import LINGUISTIC, Clip, Cue, RationaleItem
from affectllm.settings import ClipSettings, PromptSettings

log = logging.getLogger(__name__)

# Splits that evaluation reads besides each dataset's declared test splits.
DEV_SPLITS = frozenset({"dev", "validation", "val"})

# Datasets whose rows are open-vocabulary by default (multi-label or free-form gold).
_OV_DATASETS = frozenset({"goemotions", "ovmerd", "emer", "emer-v2"})

# How many pieces of evidence a derived (template) rationale cites.
_DERIVED_CITATIONS = 3


@dataclass
class BuildReport:
    """What a builder kept and dropped, per source (written into the model card)."""

    kept: dict[str, int] = field(default_factory=dict)
    dropped_holdout: dict[str, int] = field(default_factory=dict)
    dropped_long: dict[str, int] = field(default_factory=dict)
    dropped_unusable: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, table: dict[str, int], source: str, n: int = 1) -> None:
        table[source] = table.get(source, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {
            "kept": dict(self.kept),
            "dropped_holdout": dict(self.dropped_holdout),
            "dropped_long": dict(self.dropped_long),
            "dropped_unusable": dict(self.dropped_unusable),
            "failures": list(self.failures[:50]),
            "total": sum(self.kept.values()),
        }


# ------------------------------------------------------------------------------------------------ sources


def source_dir(source: Any, root: Path) -> Path:
    """A source's data folder: ``data_dir`` (absolute, or under ``root``), or ``root/<dataset>``."""
    if source.data_dir:
        path = Path(source.data_dir).expanduser()
        return path if path.is_absolute() else root / path
    return root / source.dataset


def is_eval_split(dataset: str, split: str) -> bool:
    """Whether ``split`` of ``dataset`` is read by evaluation: a dev split, or a held-out test split (or a
    split containing one, such as OV-MERD's ``all``) as the dataset's converter declares it."""
    from affectllm.datasets import get_dataset

    return split.lower() in DEV_SPLITS or split in get_dataset(dataset).test_splits


def load_source_rows(source: Any, root: Path, allow_eval_splits: bool = False) -> list[dict[str, Any]]:
    """Dataset rows for one recipe data source, through ``affectllm.datasets``."""
    from affectllm.datasets import load_dataset_rows

    split = str(source.split)
    evaluation = is_eval_split(source.dataset, split)
    if evaluation and not allow_eval_splits:
        raise InputError(
            None,
            f"data source {source.dataset!r}: split {split!r} is an evaluation split; training on it would "
            "inflate every dev/test number (set data.allow_eval_splits only for pipeline smoke tests)",
        )
    options: dict[str, Any] = dict(source.options or {})
    if source.eval_task:
        from affectllm.tasks import load_task

        # The task's converter options (its context window, ...) make the rows the task reads.
        task = load_task(source.eval_task)
        if task.dataset == source.dataset:
            options = {**task.dataset_options, **options}
        if task.clip.context and task.context_turns is not None:
            options.setdefault("context_turns", task.context_turns)
    elif source.dataset in ("meld", "emorynlp") and source.context_turns is not None:
        options.setdefault("context_turns", source.context_turns)
    return load_dataset_rows(source.dataset, source_dir(source, root), split, final=evaluation, **options)


def holdout_ids(sources: Iterable[Any], root: Path) -> set[str]:
    """Ids of every row in the holdout datasets (any split, test included: they are read to be *excluded*)."""
    from affectllm.datasets import get_dataset, load_dataset_rows

    ids: set[str] = set()
    for source in sources:
        options = dict(source.options or {})
        folder = source_dir(source, root)
        if source.split != "all":
            rows = load_dataset_rows(source.dataset, folder, source.split, final=True, **options)
            ids.update(str(r["id"]) for r in rows)
            continue
        # "all" means every split whose files exist: a user may hold only the dev half (as the shared data
        # does) or the full release; either way each available id must be excluded.
        found = False
        for split in get_dataset(source.dataset).splits:
            try:
                rows = load_dataset_rows(source.dataset, folder, split, final=True, **options)
            except InputError:
                continue
            found = True
            ids.update(str(r["id"]) for r in rows)
        if not found:
            raise InputError(folder, f"holdout dataset {source.dataset!r}: no split could be read")
    return ids


def label_set_for(dataset: str, rows: Sequence[dict[str, Any]] = ()) -> list[str]:
    """The closed label set of a dataset (its converter's own order), else the sorted labels seen in rows."""
    from affectllm.datasets import DATASETS

    spec = DATASETS.get(dataset)
    if spec is not None and spec.labels:
        return list(spec.labels)
    return sorted({str(r["label"]) for r in rows if r.get("label")})


def source_settings(
    data: Any, source: Any, label_set: Sequence[str]
) -> tuple[str, ClipSettings, PromptSettings]:
    """(prompt task, clip settings, prompt settings) for one recipe source.

    A source with ``eval_task`` takes that task's settings whole, so its training prompts are exactly what
    ``affectllm eval run`` asks. Otherwise they come from the recipe's ``data`` section and the source's
    fields. Either way the prompt is built by the same :func:`~affectllm.prompting.build_messages` from the same
    :func:`~affectllm.clips.clip_from_row` clip as every other caller's.
    """
    if source.eval_task:
        from affectllm.tasks import load_task

        # The task may read another dataset of the same kind (MER2023 train rows with the OV-MERD subtitle
        # task, whose clips are MER2023 samples): its prompt and input settings are what carries over.
        task = load_task(source.eval_task)
        return task.prompt.task, task.clip.replace(asr=None), task.prompt
    task_name = source.task or ("ov" if source.dataset in _OV_DATASETS else "closed")
    clip_settings = ClipSettings(
        source="media" if source.extractors else "transcript",
        extractors=tuple(source.extractors or ()),
        context=True,
        asr=None,
    )
    prompt_settings = PromptSettings(
        task=task_name,
        template=data.template,
        labels=tuple(label_set) if task_name == "closed" else (),
        few_shot=-1 if data.few_shot is True else int(data.few_shot or 0),
        modalities=data.modalities,
        max_cue_tokens=data.max_cue_tokens,
    )
    return task_name, clip_settings, prompt_settings


# ---------------------------------------------------------------------------------------------- rationale


def _short_quote(text: str, max_words: int = 12) -> str:
    words = text.split()
    return " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")


# Bands that describe a reading without saying anything notable about it.
_UNREMARKABLE = frozenset(
    {"", "measured", "normal", "average", "typical", "moderate", "present", "medium", "none"}
)


def _salience(cue: Cue) -> int:
    band = str(cue.band or "").strip().lower()
    detail = str(cue.detail or "").strip().lower()
    if band in _UNREMARKABLE and (not detail or detail.split(" ", 1)[0] in _UNREMARKABLE | {"level", "no"}):
        return 1
    return 0


def derived_rationale(
    clip: Clip, max_items: int = _DERIVED_CITATIONS, modalities: Sequence[str] | None = None
) -> list[RationaleItem]:
    """A rationale that cites the clip's own evidence (for rows without a human one).

    It teaches the answer format and the habit of citing real evidence lines by id — never evidence the clip
    does not have — while the emotions come from the gold labels. What was said comes first (every row has
    it); then, one modality at a time, the cues the extractors emitted first (their salience order), preferring
    notable readings ("high", "falling", "very fast") over plain measurements.
    """
    items: list[RationaleItem] = []
    evidence = clip.evidence()
    ids = {id(e.cue): e.id for e in evidence}
    texts = {e.id: e.text for e in evidence}
    by_modality: dict[str, list[Cue]] = {}
    for e in evidence:
        # Only what the prompt shows may be cited (an acoustic-only task hides the words).
        if modalities is None or e.cue.modality in modalities:
            by_modality.setdefault(e.cue.modality, []).append(e.cue)
    for queue in by_modality.values():
        queue.sort(key=_salience)  # stable: extractor order within each salience class
    order = [LINGUISTIC] + [m for m in by_modality if m != LINGUISTIC]
    while len(items) < max_items and any(by_modality.get(m) for m in order):
        for modality in order:
            queue = by_modality.get(modality)
            if not queue or len(items) >= max_items:
                continue
            cue = queue.pop(0)
            cid = ids[id(cue)]
            if cue.modality == LINGUISTIC:
                # What was said is cited by a short quote, not the whole line again.
                items.append(
                    RationaleItem(
                        cue=f'says "{_short_quote(str(cue.value or ""))}"', modality=LINGUISTIC, cue_id=cid
                    )
                )
                continue
            # "pitch: low and falling (mean 180 Hz, ...)" -> "pitch: low and falling": the gist, not the numbers.
            body = texts[cid].split(": ", 1)[-1].split(" (", 1)[0].strip()
            items.append(RationaleItem(cue=f"{cue.name}: {body}", modality=cue.modality, cue_id=cid))
    return items


def human_rationale(text: str) -> list[RationaleItem]:
    """A human-written reasoning (EMER) split into atomic cue statements with their modality."""
    from affectllm.metrics.rationale import split_cues

    items = []
    for atom in split_cues(text):
        cue = str(getattr(atom, "text", atom)).strip()
        if cue:
            items.append(RationaleItem(cue=cue, modality=getattr(atom, "modality", None)))
    return items


# Follow-up questions a person asks after the first answer (chat REPL); {emotion} is filled in.
_FOLLOW_UPS = ("yes_no", "which_cues", "why")


def follow_up_row(
    clip: Clip,
    settings: PromptSettings,
    first_answer: str,
    emotions: Sequence[str],
    rationale: Sequence[RationaleItem],
    label_pool: Sequence[str],
    rng: random.Random,
) -> dict[str, Any] | None:
    """One follow-up exchange for SFT: the chat prompt that :class:`~affectllm.reasoner.ChatSession` sends after
    the first answer (built by the same ``follow_up_messages``), and a prose reply citing evidence ids in
    brackets. Only cited, real evidence is used; ``None`` when the rationale cites nothing."""
    from affectllm.reasoner import _DEFAULT_QUESTIONS, follow_up_messages

    cited = [r for r in rationale if r.cue_id]
    if not cited or not emotions:
        return None
    kind = rng.choice(_FOLLOW_UPS)
    evidence = "; ".join(f"{r.cue} [{r.cue_id}]" for r in cited)
    if kind == "yes_no":
        others = [x for x in label_pool if x.lower() not in {e.lower() for e in emotions}]
        if others and rng.random() < 0.5:
            asked = rng.choice(others)
            question = f"Was the speaker {asked}?"
            reply = (
                f"Not from this evidence: {evidence}. It points to {', '.join(emotions)} rather than {asked}."
            )
        else:
            asked = rng.choice(list(emotions))
            question = f"Was the speaker {asked}?"
            reply = f"Yes: {evidence}."
    elif kind == "which_cues":
        question = "Which cues support your answer?"
        reply = "\n".join(f"- {r.cue} [{r.cue_id}]" for r in cited)
    else:
        question = "Why do you think so?"
        reply = f"Because of {evidence}."
    reply += "\nEmotions: " + ", ".join(emotions)
    first_question = settings.question or _DEFAULT_QUESTIONS.get(settings.task, "")
    exchanges = [{"role": "user", "content": first_question}, {"role": "assistant", "content": first_answer}]
    return {
        "prompt": follow_up_messages(clip, settings, exchanges, question),
        "completion": [{"role": "assistant", "content": reply}],
    }


def gold_emotions(row: dict[str, Any], task: str) -> list[str]:
    if task == "closed":
        return [str(row["label"])] if row.get("label") else []
    labels = [str(x) for x in row.get("labels") or [] if str(x).strip()]
    if not labels and row.get("label"):
        labels = [str(row["label"])]
    return labels


# --------------------------------------------------------------------------------------------- tokenizing


def prompt_token_counter(tokenizer: Any) -> Callable[[list[dict[str, Any]]], int]:
    """Count a prompt's tokens as the trainer will see them (the chat template with the generation prompt)."""

    def count(messages: list[dict[str, Any]]) -> int:
        text = build_prompt_text(messages, tokenizer, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def text_token_counter(tokenizer: Any) -> Callable[[str], int]:
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


# --------------------------------------------------------------------------------------------- the builders


@dataclass(frozen=True)
class _PromptedRow:
    """A source row that passed the checks both builders share, with its clip and the prompt it is shown."""

    row: dict[str, Any]
    name: str  # "dataset:split", the build report's key
    dataset: str
    task: str
    label_set: list[str]
    prompt_settings: PromptSettings
    clip: Clip
    messages: list[dict[str, Any]]
    emotions: list[str]  # the gold answer in the prompt task's terms (closed: the one label)
    rationale_mode: str  # the source's SFT rationale for rows without a human one


def _prompted_rows(data: Any, report: BuildReport) -> Iterable[_PromptedRow]:
    """Every usable row of every source (holdout ids removed, label caps and limits applied) with its clip and
    messages. Settings are built once per source: an ``eval_task`` lookup reads every task file."""
    root = data.resolved_root()
    excluded = holdout_ids(data.holdout, root) if data.holdout else set()
    rng = random.Random(data.seed)
    cache: dict[str, dict[str, Clip]] = {}
    wheel_check = _wheel_gold_checker() if data.require_wheel_gold else None
    for source in data.sources:
        rows = load_source_rows(source, root, allow_eval_splits=data.allow_eval_splits)
        name = f"{source.dataset}:{source.split}"
        kept_rows = []
        for row in rows:
            if str(row["id"]) in excluded:
                report.add(report.dropped_holdout, name)
            else:
                kept_rows.append(row)
        rng.shuffle(kept_rows)
        if source.max_per_label is not None:
            kept_rows = cap_per_label(kept_rows, source.max_per_label)
        if source.limit is not None:
            kept_rows = kept_rows[: source.limit]
        label_set = label_set_for(source.dataset, rows)
        task, clip_settings, prompt_settings = source_settings(data, source, label_set)
        cues = _cues_for(source, root, cache)
        for row in kept_rows:
            emotions = gold_emotions(row, task)
            if not emotions or (task == "closed" and not label_set):
                report.add(report.dropped_unusable, name)
                continue
            if wheel_check is not None and task == "ov" and not wheel_check(emotions):
                # "neutral" and other words outside every emotion wheel score nothing in open-vocabulary
                # evaluation; training on them teaches the model an answer that can only lose, and GRPO's
                # ew_f1 reward could not score them.
                report.add(report.dropped_unusable, name)
                continue
            clip = _usable_clip(row, clip_settings, cues, report, name)
            if clip is None:
                continue
            dataset = str(row.get("dataset") or source.dataset)
            messages = build_messages(clip, prompt_settings)
            yield _PromptedRow(
                row,
                name,
                dataset,
                task,
                label_set,
                prompt_settings,
                clip,
                messages,
                emotions,
                source.rationale,
            )


def cap_per_label(rows: Sequence[dict[str, Any]], cap: int) -> list[dict[str, Any]]:
    """Rows in order, each kept only while every one of its gold labels has fewer than ``cap`` kept rows."""
    counts: Counter[str] = Counter()
    kept = []
    for row in rows:
        labels = {str(x).lower() for x in (row.get("labels") or [row.get("label")]) if x}
        if labels and all(counts[label] < cap for label in labels):
            counts.update(labels)
            kept.append(row)
    return kept


def _cues_for(source: Any, root: Path, cache: dict[str, dict[str, Clip]]) -> dict[str, Clip] | None:
    path = source.cues_jsonl
    if not path:
        return None
    full = Path(path).expanduser()
    full = full if full.is_absolute() else root / full
    if str(full) not in cache:
        cache[str(full)] = load_clips_jsonl(full)
    return cache[str(full)]


def _usable_clip(
    row: dict[str, Any], settings: ClipSettings, cues: dict[str, Clip] | None, report: BuildReport, name: str
) -> Clip | None:
    try:
        return clip_from_row(row, settings, cues)
    except InputError as exc:
        # One unreadable clip must not stop a build over thousands; it is counted and reported.
        report.add(report.dropped_unusable, name)
        report.failures.append(f"{row.get('id')}: {exc}")
        return None


def build_sft_rows(
    data: Any,
    tokenizer: Any = None,
    max_length: int | None = None,
    report: BuildReport | None = None,
) -> list[dict[str, Any]]:
    """SFT rows for a recipe's ``data`` section (see the module docstring).

    With a ``tokenizer``, rows whose prompt exceeds ``data.max_prompt_tokens`` or whose prompt + answer exceeds
    ``max_length`` are dropped: a truncated row would train on a cut-off answer.
    """
    report = report if report is not None else BuildReport()
    count_prompt = prompt_token_counter(tokenizer) if tokenizer is not None else None
    count_text = text_token_counter(tokenizer) if tokenizer is not None else None
    follow_rng = random.Random(data.seed + 1)
    out: list[dict[str, Any]] = []
    for item in _prompted_rows(data, report):
        row, clip, settings = item.row, item.clip, item.prompt_settings
        if row.get("rationale"):
            rationale, origin = human_rationale(str(row["rationale"])), "human"
        elif item.rationale_mode == "derived":
            rationale, origin = derived_rationale(clip, modalities=settings.modalities), "derived"
        else:
            rationale, origin = [], "none"
        answer = format_answer(item.emotions, rationale, task=item.task, clip=clip)
        if count_prompt is not None:
            n_prompt = count_prompt(item.messages)
            too_long = data.max_prompt_tokens is not None and n_prompt > data.max_prompt_tokens
            if max_length is not None and n_prompt + count_text(answer) + 2 > max_length:
                too_long = True
            if too_long:
                report.add(report.dropped_long, item.name)
                continue
        meta = {"id": str(row["id"]), "dataset": item.dataset}
        completion = [{"role": "assistant", "content": answer}]
        out.append(
            {
                "prompt": item.messages,
                "completion": completion,
                **meta,
                "task": item.task,
                "rationale_source": origin,
            }
        )
        report.add(report.kept, item.name)
        if data.follow_ups and follow_rng.random() < data.follow_ups:
            pool = item.label_set or ["happy", "sad", "angry", "surprised", "worried", "calm"]
            extra = follow_up_row(clip, settings, answer, item.emotions, rationale, pool, follow_rng)
            if extra is not None:
                follow_meta = {
                    **meta,
                    "id": f"{row['id']}#follow-up",
                    "task": "chat",
                    "rationale_source": origin,
                }
                out.append({**extra, **follow_meta})
                report.add(report.kept, f"{item.name}:follow-up")
    random.Random(data.seed).shuffle(out)
    return out


def build_grpo_rows(
    data: Any,
    tokenizer: Any = None,
    report: BuildReport | None = None,
) -> list[dict[str, Any]]:
    """GRPO rows: the prompt plus the reward columns ``labels``, ``label``, ``label_set``, ``evidence``.

    Every row has every column (closed-set rows carry their single label in ``labels`` too, so ``ew_f1`` scores
    them through the wheels; open-vocabulary rows have ``label=""`` so ``accuracy`` abstains). With
    ``data.require_wheel_gold`` rows whose gold maps to no wheel word are dropped: ``ew_f1`` could not score them.
    """
    report = report if report is not None else BuildReport()
    count_prompt = prompt_token_counter(tokenizer) if tokenizer is not None else None
    out: list[dict[str, Any]] = []
    for item in _prompted_rows(data, report):
        too_long = (
            count_prompt is not None
            and data.max_prompt_tokens is not None
            and count_prompt(item.messages) > data.max_prompt_tokens
        )
        if too_long:
            report.add(report.dropped_long, item.name)
            continue
        closed = item.task == "closed"
        out.append(
            {
                "prompt": item.messages,
                # every gold label, so ew_f1 scores closed-set rows through the wheels too
                "labels": gold_emotions(item.row, "ov"),
                "label": item.emotions[0] if closed else "",
                "label_set": list(item.label_set) if closed else [],
                "evidence": [e.text for e in shown_evidence(item.clip, item.prompt_settings)],
                "id": str(item.row["id"]),
                "dataset": item.dataset,
                "task": item.task,
            }
        )
        report.add(report.kept, item.name)
    random.Random(data.seed).shuffle(out)
    return out


def _wheel_gold_checker() -> Callable[[list[str]], bool]:
    from affectllm.metrics.ov import sample_ew_f1

    return lambda gold: sample_ew_f1(references=gold, predictions=gold, levels=(1,)) is not None


def write_rows(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Save built rows as JSONL (to inspect what a recipe trains on)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
