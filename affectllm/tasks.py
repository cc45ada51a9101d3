"""Benchmark tasks: YAML definitions (``eval/*.yaml``) → a scored, resumable run of one model on one dataset.

A task names a dataset converter and split, how clips are built (transcript only, or textualized media), the
prompt task and template, the answer parser's label set, generation settings and the metrics (registry names
from ``affectllm.metrics``). Tasks ship in ``eval/``; users add their own by dropping a YAML file in a folder
passed as ``--tasks-dir`` or listed in ``$AFFECTLLM_TASKS_PATH`` (user folders win over shipped tasks).

``run_task`` writes ``predictions.jsonl`` (one record per sample, resumable, failures recorded per sample),
``metrics.json`` and, with ``ablate=True``, one extra pass per modality with that modality's cues removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectllm.batch import ResumableJSONL
from affectllm.clips import load_clips_jsonl
from affectllm.errors import InputError, MissingExtraError
from affectllm.prompting import shown_evidence
from affectllm.records import prediction_record
from affectllm.schema import LINGUISTIC, MODALITIES, Clip, Prediction
from affectllm.settings import ClipSettings, PromptSettings, parse_modalities

TASKS_PATH_ENV = "AFFECTLLM_TASKS_PATH"

# The allowed keys of a task file, per section; anything else is an error (typos must not pass silently).
_TOP_KEYS = {
    "task",
    "version",
    "description",
    "tags",
    "dataset",
    "input",
    "prompt",
    "parser",
    "generation",
    "metrics",
    "primary",
    "ablation",
}
_DATASET_KEYS = {"name", "split", "options"}
_INPUT_KEYS = {
    "source",
    "modalities",
    "extractors",
    "context",
    "context_turns",
    "max_cue_tokens",
    "textualize",
}
_PROMPT_KEYS = {
    "task",
    "template",
    "few_shot",
    "labels",
    "question",
    "decoding",
    "closed_decoding",  # the earlier name of ``decoding``, still read
    "candidates",
    "max_emotions",
    "min_ratio",
    "calibration",
    "calibration_rows",
}
_PARSER_KEYS = {"labels"}
_GENERATION_KEYS = {"max_new_tokens", "temperature", "top_p", "top_k", "seed", "stop"}
_METRIC_KEYS = {"name", "options"}


@dataclass
class MetricEntry:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task:
    """A validated task definition; ``clip`` and ``prompt`` are the settings every prompt of the task is built
    with (the same objects a training source that names the task uses)."""

    name: str
    version: int
    dataset: str
    split: str
    path: Path | None = None
    description: str = ""
    dataset_options: dict[str, Any] = field(default_factory=dict)
    clip: ClipSettings = field(default_factory=lambda: ClipSettings(source="transcript", context=False))
    prompt: PromptSettings = field(default_factory=PromptSettings)
    context_turns: int | None = None
    parser_labels: bool = True
    generation: dict[str, Any] = field(default_factory=dict)
    metrics: list[MetricEntry] = field(default_factory=list)
    primary: str | None = None
    ablation: tuple[str, ...] = MODALITIES
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """A hash of the definition, so a resumed run never mixes outputs of two different task versions."""
        text = json.dumps(self.raw, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]

    def primary_metric(self) -> tuple[str, str, bool]:
        """(metric name, key inside its result, higher_is_better) of the headline number."""
        from affectllm.metrics import get_metric

        name, _, key = (self.primary or self.metrics[0].name).partition(":")
        spec = get_metric(name)
        return name, key or spec.primary, spec.higher_is_better


# ------------------------------------------------------------------------------------------ discovery


def task_dirs(extra: Iterable[str | Path] | str | Path | None = None) -> list[Path]:
    """Folders searched for task YAMLs, in priority order: ``extra``, ``$AFFECTLLM_TASKS_PATH``, shipped eval/."""
    from affectllm.resources import asset_dir

    dirs: list[Path] = []
    if isinstance(extra, (str, Path)):
        extra = [extra]
    for d in extra or []:
        path = Path(d).expanduser()
        if not path.is_dir():
            raise InputError(path, "tasks folder does not exist")
        dirs.append(path)
    for d in os.environ.get(TASKS_PATH_ENV, "").split(os.pathsep):
        if d.strip():
            path = Path(d.strip()).expanduser()
            if not path.is_dir():
                raise InputError(path, f"folder named in ${TASKS_PATH_ENV} does not exist")
            dirs.append(path)
    with contextlib.suppress(
        FileNotFoundError
    ):  # a stripped install without the shipped tasks runs user tasks
        dirs.append(asset_dir("eval"))
    return dirs


def list_tasks(tasks_dir: Iterable[str | Path] | str | Path | None = None) -> dict[str, Path]:
    """task name → file; the first folder that defines a name wins."""
    found: dict[str, Path] = {}
    for folder in task_dirs(tasks_dir):
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            found.setdefault(str(_read_yaml(path).get("task") or path.stem), path)
    return found


def load_task(name_or_path: str | Path, tasks_dir: Iterable[str | Path] | str | Path | None = None) -> Task:
    """A task by name (searched in ``task_dirs``) or by the path of a YAML file."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return parse_task(_read_yaml(candidate), candidate)
    tasks = list_tasks(tasks_dir)
    if str(name_or_path) not in tasks:
        known = ", ".join(sorted(tasks)) or "none"
        raise InputError(None, f"unknown task {name_or_path!r}; known tasks: {known}")
    path = tasks[str(name_or_path)]
    return parse_task(_read_yaml(path), path)


def _read_yaml(path: Path) -> dict[str, Any]:
    from affectllm.yamlfile import read_yaml

    data = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError(path, "a task file must be a mapping (task: ..., dataset: ..., metrics: ...)")
    return data


# ------------------------------------------------------------------------------------------ validation


def _section(data: dict[str, Any], key: str, allowed: set[str], path: Path | None) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise InputError(path, f"{key}: must be a mapping")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InputError(
            path, f"{key}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    return value


def parse_task(data: dict[str, Any], path: Path | None = None) -> Task:
    """Validate a task mapping; every problem is an InputError naming the file and the offending key."""
    from affectllm.datasets import get_dataset
    from affectllm.metrics import available_metrics, get_metric

    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise InputError(
            path, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    name = data.get("task")
    if not isinstance(name, str) or not name.strip():
        raise InputError(path, "task: a non-empty name is required")
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(path, "version: must be an integer")

    ds = _section(data, "dataset", _DATASET_KEYS, path)
    if "name" not in ds:
        raise InputError(path, "dataset: name is required")
    try:
        spec = get_dataset(str(ds["name"]))
    except InputError as exc:
        raise InputError(path, f"dataset: {exc.problem}") from None
    split = str(ds.get("split", "dev" if "dev" in spec.splits else spec.splits[0]))
    if split not in spec.splits:
        raise InputError(
            path, f"dataset.split: {split!r} is not a split of {spec.name} ({', '.join(spec.splits)})"
        )
    if split in spec.test_splits:
        # Shipped defaults must never point at a test set: it is reachable only via --split with --final.
        raise InputError(path, f"dataset.split: {split!r} is a held-out test split; default to a dev split")
    options = ds.get("options") or {}
    if not isinstance(options, dict):
        raise InputError(path, "dataset.options: must be a mapping")

    inp = _section(data, "input", _INPUT_KEYS, path)
    textualize = inp.get("textualize") or {}
    if not isinstance(textualize, dict):
        raise InputError(path, "input.textualize: must be a mapping of textualize_clip options")
    if "modalities" in textualize:
        raise InputError(
            path,
            "input.textualize.modalities is now input.extractors (audio, face, scene); modalities names cues",
        )
    prompt = _section(data, "prompt", _PROMPT_KEYS, path)
    prompt_task = str(prompt.get("task", "ov"))
    if prompt_task not in ("ov", "closed"):
        raise InputError(path, f"prompt.task: {prompt_task!r}; choose ov or closed")
    labels = prompt.get("labels")
    if labels == "dataset":
        if spec.labels is None:
            raise InputError(
                path, f"prompt.labels: dataset {spec.name} has no closed label set; list the labels"
            )
        labels = list(spec.labels)
    elif labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        raise InputError(path, "prompt.labels: 'dataset' or a list of label strings")
    candidates = prompt.get("candidates")
    if candidates is not None and (
        not isinstance(candidates, list) or not all(isinstance(x, str) for x in candidates)
    ):
        raise InputError(path, "prompt.candidates: a list of emotion words")
    if "decoding" in prompt and "closed_decoding" in prompt:
        raise InputError(path, "prompt: give decoding only (closed_decoding is its earlier name)")
    few_shot = prompt.get("few_shot")
    if few_shot is not None and not isinstance(few_shot, (bool, int)):
        raise InputError(path, "prompt.few_shot: true, false, null (model default) or a number of examples")
    # The settings objects check the rest (source, extractors, ASR engine, modalities, label set, decoding).
    try:
        extra = dict(textualize)
        clip = ClipSettings(
            source=str(inp.get("source", "transcript")),
            extractors=inp.get("extractors"),
            context=bool(inp.get("context", False)),
            asr=extra.pop("asr", "faster-whisper"),
            asr_model=extra.pop("asr_model", None),
            options=extra,
        )
        prompt_settings = PromptSettings(
            task=prompt_task,
            template=prompt.get("template"),
            labels=tuple(labels or ()) if prompt_task == "closed" else (),
            few_shot=few_shot,
            modalities=inp.get("modalities"),
            max_cue_tokens=inp.get("max_cue_tokens"),
            question=prompt.get("question"),
            decoding=str(prompt.get("decoding", prompt.get("closed_decoding", "auto"))),
            candidates=tuple(candidates or ()),
            **{
                key: prompt[key]
                for key in ("max_emotions", "min_ratio", "calibration", "calibration_rows")
                if key in prompt
            },
        )
        ablation = parse_modalities(data.get("ablation"), "ablation")
    except InputError as exc:
        raise InputError(path, exc.problem) from None

    parser = _section(data, "parser", _PARSER_KEYS, path)
    gen = _section(data, "generation", _GENERATION_KEYS, path)
    for key in ("max_new_tokens", "top_k", "seed"):
        if gen.get(key) is not None and (not isinstance(gen[key], int) or isinstance(gen[key], bool)):
            raise InputError(path, f"generation.{key}: must be an integer")
    for key in ("temperature", "top_p"):
        if gen.get(key) is not None and not isinstance(gen[key], (int, float)):
            raise InputError(path, f"generation.{key}: must be a number")

    raw_metrics = data.get("metrics")
    if not isinstance(raw_metrics, list) or not raw_metrics:
        raise InputError(path, "metrics: a non-empty list of metric names or {name, options} mappings")
    metrics: list[MetricEntry] = []
    for i, item in enumerate(raw_metrics):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise InputError(path, f"metrics[{i}]: a name or a {{name, options}} mapping")
        bad = sorted(set(item) - _METRIC_KEYS)
        if bad:
            raise InputError(path, f"metrics[{i}]: unknown key(s) {', '.join(bad)}")
        metric_name = str(item.get("name"))
        if metric_name not in available_metrics():
            raise InputError(
                path, f"metrics[{i}]: unknown metric {metric_name!r}; known: {', '.join(available_metrics())}"
            )
        if get_metric(metric_name).task_inputs is None:
            raise InputError(path, f"metrics[{i}]: metric {metric_name!r} has no task adapter (task_inputs)")
        metrics.append(MetricEntry(metric_name, dict(item.get("options") or {})))

    primary = data.get("primary")
    if primary is not None:
        primary_name = str(primary).partition(":")[0]
        if primary_name not in {m.name for m in metrics}:
            raise InputError(path, f"primary: {primary!r} must name one of the task's metrics")

    return Task(
        name=name.strip(),
        version=version,
        dataset=spec.name,
        split=split,
        path=path,
        description=str(data.get("description") or "").strip(),
        dataset_options=dict(options),
        clip=clip,
        prompt=prompt_settings,
        context_turns=inp.get("context_turns"),
        parser_labels=bool(parser.get("labels", True)),
        generation=dict(gen),
        metrics=metrics,
        primary=None if primary is None else str(primary),
        ablation=MODALITIES if ablation is None else ablation,
        raw=data,
    )


# ------------------------------------------------------------------------------------------ metric inputs


def answer_summary(records: list[dict[str, Any]], task: Task, scores: dict[str, Any]) -> dict[str, Any]:
    """What a headline number hides: the best constant answer's score on the same samples (the floor), how
    many emotions an answer names, how concentrated the answers are against the gold's own concentration (a
    collapsed model answers one thing), and how many rationale items cite an evidence id the prompt showed."""
    from collections import Counter

    n = len(records)
    if not n:
        return {"n": 0}
    closed = task.prompt.task == "closed"

    def key(emotions: Sequence[str]) -> str:
        return ", ".join(sorted(str(e).lower() for e in emotions)) or "(none)"

    answers = Counter(key(r["emotions"][:1] if closed else r["emotions"]) for r in records)
    golds = Counter(
        key([r["gold"]["label"]] if closed and r["gold"].get("label") else r["gold"].get("labels") or [])
        for r in records
    )
    items = [item for r in records for item in r.get("rationale") or []]
    cited = sum(
        str(item.get("cue_id") or item.get("id") or "").upper()
        in {line.split(" ", 1)[0] for line in r.get("evidence") or []}
        for r in records
        for item in r.get("rationale") or []
    )
    top, top_n = answers.most_common(1)[0]
    out: dict[str, Any] = {
        "n": n,
        "labels_per_answer": sum(len(r["emotions"]) for r in records) / n,
        "top_answer": top,
        "top_answer_share": top_n / n,
        "gold_top_share": golds.most_common(1)[0][1] / n,
        "rationale_items": len(items),
        "cited_share": cited / len(items) if items else None,
    }
    primary_name, primary_key, _ = task.primary_metric()
    labels = list(task.prompt.labels)
    if closed and primary_name == "closed_set":
        from affectllm.metrics.closed import closed_set_scores

        refs = [r["gold"]["label"] for r in records]
        floors = {
            label: dig(
                closed_set_scores(references=refs, predictions=[label] * n, labels=labels), primary_key
            )
            for label in labels
        }
        best = max(floors, key=lambda label: floors[label] if floors[label] is not None else -1.0)
        out["floor"] = {"metric": f"{primary_name}:{primary_key}", "answer": best, "value": floors[best]}
    elif "ew" in scores and isinstance(scores["ew"].get("floor"), dict):
        floor = scores["ew"]["floor"]
        out["floor"] = {
            "metric": f"{primary_name}:{primary_key}",
            "answer": floor.get("labels"),
            "value": dig(floor, primary_key),
        }
    return out


def dig(result: dict[str, Any], key: str) -> Any:
    """``result["l1"]["f"]`` for ``key="l1.f"``; None when absent."""
    value: Any = result
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def score_records(records: list[dict[str, Any]], task: Task) -> dict[str, dict[str, Any]]:
    """Every metric of the task over ``records`` (failed samples arrive as empty predictions)."""
    from affectllm.metrics import get_metric

    out: dict[str, dict[str, Any]] = {}
    for entry in task.metrics:
        spec = get_metric(entry.name)
        preds, refs, extra = spec.task_inputs(records, task)
        if not refs:
            out[entry.name] = {"error": "no sample has the reference this metric needs", "n": 0}
            continue
        try:
            out[entry.name] = spec.fn(predictions=preds, references=refs, **{**extra, **entry.options})
        except (ValueError, KeyError, MissingExtraError) as exc:
            # A metric that cannot score this data (e.g. gold outside the label set), or whose extra is not
            # installed (grounding needs affectllm[embed]), must not hide the others or lose the run's scores.
            out[entry.name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


# ------------------------------------------------------------------------------------------ clips


def build_clip(row: dict[str, Any], task: Task, precomputed: dict[str, Clip] | None = None) -> Clip:
    """The Clip a task shows the model for one row: :func:`affectllm.clips.clip_from_row` with the task's
    clip settings (the same call the training data builders make)."""
    from affectllm.clips import clip_from_row

    return clip_from_row(row, task.clip, precomputed)


# ------------------------------------------------------------------------------------------ running


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict[str, Any]
    n_samples: int
    n_errors: int
    ablation: dict[str, Any] | None = None


def _gold(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "labels": list(row.get("labels") or []),
        "label": row.get("label"),
        "rationale": row.get("rationale"),
    }


def _predict_rows(
    reasoner: Any,
    rows: list[dict[str, Any]],
    build: Callable[[dict[str, Any]], Clip],
    writer: ResumableJSONL,
    batch_size: int,
    desc: str,
    progress: bool,
) -> None:
    """Predict every pending row and append one record per row (errors included) to ``writer``."""
    from affectllm.batch_predict import answer_into

    gold = {str(r["id"]): _gold(r) for r in rows}

    def record(item_id: str, pred: Prediction, clip: Clip, seconds: float) -> dict[str, Any]:
        evidence = [e.text for e in shown_evidence(clip, reasoner.settings)]
        return prediction_record(
            item_id,
            pred,
            clip,
            gold=gold[item_id],
            evidence=evidence,
            clip=clip.to_dict(),
            seconds=round(seconds, 3),
        )

    items = [(str(r["id"]), lambda r=r: build(r), None) for r in rows if not writer.should_skip(str(r["id"]))]
    answer_into(
        writer, reasoner, items, batch_size, record, lambda item_id: {"gold": gold[item_id]}, desc, progress
    )


def _records_for_scoring(
    writer: ResumableJSONL, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """One record per row in dataset order; a failed sample is scored as an empty prediction (never skipped,
    which would flatter a model that crashes on hard items)."""
    records, failed = [], []
    for r in rows:
        key = str(r["id"])
        rec = writer.done.get(key)
        if rec is None:
            failed.append(key)
            rec = {
                "id": key,
                "gold": _gold(r),
                "emotions": [],
                "rationale": [],
                "answer": "",
                "evidence": [],
            }
        records.append(rec)
    return records, failed


def _check_output_dir(out: Path, identity: dict[str, Any], overwrite: bool) -> None:
    run_file = out / "run.json"
    if run_file.is_file() and not overwrite:
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = {}
        if previous.get("identity") != identity:
            raise InputError(
                out,
                "holds a run of a different task/split/model/settings; choose another --output-dir "
                f"(previous: {previous.get('identity')})",
            )
    if overwrite:
        for name in ("predictions.jsonl", "metrics.json", "run.json", "report.md", LABEL_PRIOR_FILE):
            (out / name).unlink(missing_ok=True)
        for old in (out / "ablation").glob("*.jsonl") if (out / "ablation").is_dir() else []:
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"identity": identity}, indent=2) + "\n", encoding="utf-8")


# Where a run keeps the label prior it fitted, so a resumed run chooses with the same offsets.
LABEL_PRIOR_FILE = "label_prior.json"
# The split a label prior is fitted on: labelled rows the model may have been trained on, never dev or test.
CALIBRATION_SPLIT = "train"


def calibration_rows(
    task: Task, data_dir: str | Path, n: int, labels: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """``n`` rows of the task's dataset's training split whose label is one of ``labels`` (default: the task's),
    drawn with a fixed seed (a split's first rows often come from one dialogue), for fitting a label prior."""
    import random

    from affectllm.datasets import get_dataset

    spec = get_dataset(task.dataset)
    if CALIBRATION_SPLIT not in spec.splits:
        raise InputError(
            None,
            f"calibration 'label_prior' is fitted on a {CALIBRATION_SPLIT} split, and dataset {spec.name} has "
            f"none ({', '.join(spec.splits)}); choose calibration content_free or none",
        )
    wanted = set(labels if labels is not None else task.prompt.labels)
    try:
        rows = [r for r in task_rows(task, data_dir, CALIBRATION_SPLIT) if r.get("label") in wanted]
    except InputError as exc:
        raise InputError(
            exc.path, f"calibration 'label_prior' is fitted on the {CALIBRATION_SPLIT} split: {exc.problem}"
        ) from None
    if not rows:
        raise InputError(
            None, f"calibration 'label_prior': the {CALIBRATION_SPLIT} split has no labelled rows"
        )
    random.Random(0).shuffle(rows)
    return rows[:n]


def prepare_label_prior(
    task: Task, reasoner: Any, data_dir: str | Path, out: Path, say: Callable[[str], None]
) -> Any:
    """Fit the reasoner's label prior when its settings ask for one (closed set, likelihood, ``label_prior``)
    and it has none; kept in ``out`` so that a resumed run reuses it. Returns the prior, or None."""
    from affectllm.choice import LabelPrior

    settings = reasoner.settings
    if not settings.uses_label_prior:
        return None
    if reasoner.label_prior is not None:
        return reasoner.label_prior
    path = out / LABEL_PRIOR_FILE
    fitted_on = {
        "split": CALIBRATION_SPLIT,
        "rows": settings.calibration_rows,
        "labels": list(settings.labels),
    }
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("fitted_on") == fitted_on:
                reasoner.label_prior = LabelPrior.from_dict(saved)
                say(f"{task.name}: label prior read from {path}")
                return reasoner.label_prior
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            # Only this run wrote it; refitting costs minutes, not results.
            say(f"{task.name}: {path} is unreadable ({exc!r}); fitting the label prior again")
    # The reasoner's label set, which the prior is fitted for (the task's, unless a caller replaced it).
    rows = calibration_rows(task, data_dir, settings.calibration_rows, settings.labels)
    say(f"{task.name}: fitting the label prior on {len(rows)} rows of the {CALIBRATION_SPLIT} split")
    prior = reasoner.fit_label_prior([build_clip(r, task) for r in rows], [r["label"] for r in rows])
    path.write_text(
        json.dumps({"fitted_on": fitted_on, **prior.to_dict()}, indent=2) + "\n", encoding="utf-8"
    )
    return prior


def generation_config(task: Task, overrides: dict[str, Any] | None = None) -> Any:
    from affectllm.reasoner import default_generation

    settings = {**task.generation, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    config = default_generation(task.prompt.task)
    for key, value in settings.items():
        setattr(config, key, list(value) if key == "stop" else value)
    return config


def dataset_folder(root: str | Path, dataset: str) -> Path:
    """A dataset's folder under a data root laid out as ``../shared/data`` is: ``<root>/<dataset>`` or, for the
    speech corpora, ``<root>/audio/<dataset>``; ``root`` itself when neither exists."""
    root = Path(root)
    for candidate in (root / dataset, root / "audio" / dataset):
        if candidate.is_dir():
            return candidate
    return root


def task_rows(
    task: Task, data_dir: str | Path, split: str | None = None, final: bool = False, limit: int | None = None
) -> list[dict[str, Any]]:
    """The task's dataset rows (converter options from the task); cheap, so callers validate before loading a model."""
    from affectllm.datasets import load_dataset_rows

    options = dict(task.dataset_options)
    if task.clip.context and task.context_turns is not None:
        options.setdefault("context_turns", task.context_turns)
    return load_dataset_rows(task.dataset, data_dir, split or task.split, final=final, limit=limit, **options)


def run_task(
    task: Task,
    data_dir: str | Path,
    output_dir: str | Path,
    reasoner: Any,
    split: str | None = None,
    final: bool = False,
    limit: int | None = None,
    ablate: bool = False,
    batch_size: int = 8,
    cues_path: str | Path | None = None,
    progress: bool = True,
    identity: dict[str, Any] | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> RunResult:
    """Run ``task`` with ``reasoner`` (an ``EmotionReasoner`` set up for the task) and score it.

    Resumable: records already in ``output_dir/predictions.jsonl`` are kept and only missing (or failed)
    samples are predicted. ``identity`` (backend, model, ...) is stored in ``run.json``; a rerun with a
    different identity into the same folder is refused instead of silently mixing two models' outputs.
    """
    from affectllm import __version__
    from affectllm.datasets import get_dataset

    say = log or (lambda msg: None)
    split = split or task.split
    spec = get_dataset(task.dataset)
    is_test = split in spec.test_splits
    if rows is None:
        rows = task_rows(task, data_dir, split, final=final, limit=limit)
    out = Path(output_dir).expanduser()
    full_identity = {
        "task": task.name,
        "task_version": task.version,
        "task_fingerprint": task.fingerprint,
        "dataset": task.dataset,
        "split": split,
        **(identity or {}),
    }
    _check_output_dir(out, full_identity, overwrite)

    precomputed = load_clips_jsonl(cues_path) if cues_path else None
    writer = ResumableJSONL(out / "predictions.jsonl", inputs=[cues_path, task.path])
    done = sum(writer.should_skip(str(r["id"])) for r in rows)
    say(
        f"{task.name}: {len(rows)} samples ({done} already done), split={split}"
        + (" [FINAL test split]" if is_test else "")
    )
    started = time.perf_counter()
    label_prior = prepare_label_prior(task, reasoner, data_dir, out, say)
    # One unreadable clip must not stop the benchmark: it is recorded as failed and scored as an empty answer.
    _predict_rows(
        reasoner, rows, lambda r: build_clip(r, task, precomputed), writer, batch_size, task.name, progress
    )
    elapsed = time.perf_counter() - started

    # One row per sample in the file a user reads: a retried sample's old failure line goes.
    writer.compact([str(r["id"]) for r in rows])
    records, failed = _records_for_scoring(writer, rows)
    scores = score_records(records, task)
    primary_name, primary_key, higher = task.primary_metric()
    primary_value = dig(scores.get(primary_name, {}), primary_key)

    ablation = None
    if ablate:
        ablation = run_ablation(
            task,
            reasoner,
            rows,
            writer,
            out,
            batch_size,
            progress,
            primary_name,
            primary_key,
            primary_value,
            say,
        )

    metrics: dict[str, Any] = {}
    if "ew" in scores and "error" not in scores["ew"]:
        # The same top-level keys as ``affectllm eval ov --output`` so existing tooling reads OV runs as is.
        metrics.update(scores["ew"])
    metrics.update(
        {
            "task": task.name,
            "task_version": task.version,
            "dataset": task.dataset,
            "split": split,
            "final": bool(final),
            "test_split": is_test,
            "n_samples": len(rows),
            "n_scored": len(records),
            "n_errors": len(failed),
            "failed_ids": failed,
            "limit": limit,
            "metrics": scores,
            "summary": answer_summary(records, task, scores),
            "primary": {
                "metric": primary_name,
                "key": primary_key,
                "value": primary_value,
                "higher_is_better": higher,
            },
            "ablation": ablation,
            "run": {
                **(identity or {}),
                "affectllm": __version__,
                "task_file": str(task.path) if task.path else None,
                "task_fingerprint": task.fingerprint,
                "prompt_task": task.prompt.task,
                "template": task.prompt.template,
                "source": task.clip.source,
                "modalities": task.prompt.modalities,
                "context": task.clip.context,
                "label_prior": label_prior.to_dict() if label_prior is not None else None,
                "seconds": round(elapsed, 2),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        }
    )
    (out / "metrics.json").write_text(
        json.dumps(metrics, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    return RunResult(out, metrics, len(rows), len(failed), ablation)


def run_ablation(
    task: Task,
    reasoner: Any,
    rows: list[dict[str, Any]],
    writer: ResumableJSONL,
    out: Path,
    batch_size: int,
    progress: bool,
    primary_name: str,
    primary_key: str,
    full_value: Any,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Re-run the samples that succeeded with each modality's cues removed (``Clip.without``) and report how
    much the primary metric drops: ``delta = full - without`` (positive = the modality helped)."""
    ok_rows = [r for r in rows if str(r["id"]) in writer.done]
    base_clips = {str(r["id"]): Clip.from_dict(writer.done[str(r["id"])]["clip"]) for r in ok_rows}
    shown = set(task.prompt.modalities or MODALITIES)
    present = {c.modality for clip in base_clips.values() for c in clip.cues}
    if any(clip.transcript for clip in base_clips.values()):
        present.add(LINGUISTIC)
    result: dict[str, Any] = {
        "metric": primary_name,
        "key": primary_key,
        "full": full_value,
        "modalities": {},
    }
    # Full and ablated runs are scored on the same samples, so the delta reflects the modality alone.
    full_same = dig(
        score_records(_records_for_scoring(writer, ok_rows)[0], task).get(primary_name, {}), primary_key
    )
    for modality in task.ablation:
        if modality not in present or modality not in shown:
            result["modalities"][modality] = {"skipped": "no cues of this modality in the task's input"}
            continue
        ab_writer = ResumableJSONL(out / "ablation" / f"without-{modality}.jsonl")
        say(f"ablation: without {modality} ({len(ok_rows)} samples)")
        ablated = {key: clip.without(modality) for key, clip in base_clips.items()}
        _predict_rows(
            reasoner,
            ok_rows,
            lambda r, ablated=ablated: ablated[str(r["id"])],
            ab_writer,
            batch_size,
            f"without {modality}",
            progress,
        )
        ab_records, ab_failed = _records_for_scoring(ab_writer, ok_rows)
        without = dig(score_records(ab_records, task).get(primary_name, {}), primary_key)
        delta = (
            full_same - without
            if isinstance(without, (int, float)) and isinstance(full_same, (int, float))
            else None
        )
        result["modalities"][modality] = {
            "full": full_same,
            "without": without,
            "delta": delta,
            "n": len(ok_rows),
            "n_errors": len(ab_failed),
        }
    return result


__all__ = [
    "RunResult",
    "Task",
    "build_clip",
    "dig",
    "list_tasks",
    "load_task",
    "parse_task",
    "run_task",
    "score_records",
    "task_dirs",
    "task_rows",
]
