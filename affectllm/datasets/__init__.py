"""Dataset converters: upstream files (exactly as each ``data_cards/*.md`` describes) → clip-manifest rows.

``load_dataset_rows(name, data_dir, split)`` returns a list of dicts, one per clip/utterance, with at least::

    {"id", "transcript", "labels": [...], "label": str | None, "context": [{"speaker", "text"}],
     "media": path | None, "au_csv": path | None, "rationale": str | None, "speaker", "dataset", "split", "source"}

plus dataset-specific extras (sentiment, valence, sex, ...). ``eval run`` and the training data builders use the
same rows. A held-out test split is returned only with ``final=True``: model selection must never see it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectllm.batch import read_manifest
from affectllm.datasets import friends, goemotions, mer, speech
from affectllm.datasets._common import (
    check_data_dir,
    fix_text,
    forget_file_listings,
    make_row,
    read_table,
    read_text_file,
)
from affectllm.errors import InputError
from affectllm.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """A registered converter: its splits, which of them are held-out test sets, and its closed label set."""

    name: str
    loader: Callable[..., list[dict[str, Any]]]
    splits: tuple[str, ...]
    test_splits: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None
    card: str = ""
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)


def _manifest(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """A user's own clip manifest: ``{split}.jsonl`` (one row object per line) or ``{split}.csv``
    (columns id, transcript, labels and optionally label, media, au_csv, rationale, speaker)."""
    jsonl, csv_path = data_dir / f"{split}.jsonl", data_dir / f"{split}.csv"
    raw: list[tuple[str, dict[str, Any]]] = []
    if jsonl.is_file():
        # batch.read_manifest owns JSONL parsing (bad JSON, non-objects, duplicate ids → file:line); the
        # callback only remembers each id's line so rows can name their source.
        lines: dict[str, int] = {}

        def row_id(obj: dict[str, Any], lineno: int) -> str:
            key = str(obj.get("id") or "").strip()
            if not key:
                raise InputError(jsonl, "row has no id", line=lineno)
            lines[key] = lineno
            return key

        raw = [(f"{jsonl.name}:{lines[key]}", obj) for key, obj in read_manifest(jsonl, row_id)]
    elif csv_path.is_file():
        for lineno, row in read_table(csv_path, required=("id",)):
            raw.append((f"{csv_path.name}:{lineno}", dict(row)))
    else:
        raise InputError(data_dir, f"manifest not found: expected {split}.jsonl or {split}.csv")
    rows = []
    for source, obj in raw:
        path, _, line = source.rpartition(":")
        if not str(obj.get("id") or "").strip():
            raise InputError(data_dir / path, "row has no id", line=int(line))
        labels = obj.get("labels")
        if isinstance(labels, str):
            labels = mer.parse_label_cell(labels, data_dir / path, int(line))
        labels = [str(x) for x in (labels or ([obj["label"]] if obj.get("label") else []))]
        known = {"id", "transcript", "labels", "label", "context", "media", "au_csv", "rationale", "speaker"}
        extra = {k: v for k, v in obj.items() if k not in known and k not in ("dataset", "split", "source")}
        media = obj.get("media") or None
        if media and not Path(media).is_absolute():
            media = str(data_dir / media)  # relative media paths are relative to the manifest folder
        au_csv = obj.get("au_csv") or None
        if au_csv and not Path(au_csv).is_absolute():
            au_csv = str(data_dir / au_csv)
        context = obj.get("context") or []
        if isinstance(context, str):  # a CSV cell holding the JSON list of {speaker, text} turns
            try:
                context = json.loads(context) if context.strip().startswith("[") else []
            except json.JSONDecodeError as exc:
                raise InputError(
                    data_dir / path, f"context is not a JSON list ({exc.msg})", line=int(line)
                ) from None
        rows.append(
            make_row(
                str(obj["id"]).strip(),
                transcript=fix_text(obj.get("transcript")),
                labels=labels,
                label=obj.get("label") or (labels[0] if len(labels) == 1 else None),
                context=context,
                media=media,
                au_csv=au_csv,
                rationale=obj.get("rationale") or None,
                speaker=obj.get("speaker") or None,
                dataset="manifest",
                split=split,
                source=source,
                **extra,
            )
        )
    return rows


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a converter; its options are the loader's keyword parameters after ``(data_dir, split)``."""
    converter_options(spec)  # a loader that swallows **kwargs would hide typos: refuse it up front
    DATASETS.register(spec.name, spec)
    return spec


def converter_options(spec: DatasetSpec) -> tuple[str, ...]:
    """The options ``spec``'s converter accepts (its keyword parameters after ``data_dir, split``)."""
    params = list(inspect.signature(spec.loader).parameters.values())[2:]
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
        raise TypeError(f"dataset {spec.name!r}: its converter must name its options, not take **kwargs")
    return tuple(p.name for p in params)


# Split layouts shared by several corpora: (splits, the ones that need ``final``).
_TRAIN_DEV_TEST = (("train", "dev", "test"), ("test",))
_HALVES = (("dev", "test", "all"), ("test", "all"))  # OV-MERD/EMER: SHA-1 parity halves, no train
_SPEAKERS = (speech.SPEECH_SPLITS, ("all",))  # speaker-independent train/dev; "all" holds dev too
_MER2023 = (("train", "dev", "test1", "test2", "test3"), ("test1", "test2", "test3"))

# name, converter, split layout, closed label set, one-line description (the card is data_cards/<name>.md).
_BUILTIN: tuple[tuple[str, Callable[..., list[dict[str, Any]]], Any, Any, str], ...] = (
    ("ovmerd", mer.load_ovmerd, _HALVES, None, "OV-MERD open-vocabulary gold + English subtitles"),
    ("emer", mer.load_emer, _HALVES, None, "EMER cue-level emotion descriptions (version=v1|v2)"),
    ("mer2023", mer.load_mer2023, _MER2023, mer.MER2023_LABELS, "MER2023 6-way emotions, subtitles"),
    ("meld", friends.load_meld, _TRAIN_DEV_TEST, friends.MELD_LABELS, "MELD (Friends), 7 emotions"),
    ("emorynlp", friends.load_emorynlp, _TRAIN_DEV_TEST, friends.EMORYNLP_LABELS, "EmoryNLP (Friends)"),
    ("goemotions", goemotions.load_goemotions, _TRAIN_DEV_TEST, None, "GoEmotions Reddit, multi-label"),
    ("emodb", speech.load_emodb, _SPEAKERS, speech.EMODB_LABELS, "EmoDB acted German speech"),
    ("ravdess", speech.load_ravdess, _SPEAKERS, speech.RAVDESS_LABELS, "RAVDESS acted English speech"),
    ("cremad", speech.load_cremad, _SPEAKERS, speech.CREMAD_LABELS, "CREMA-D acted English speech"),
    ("manifest", _manifest, _TRAIN_DEV_TEST, None, "your own clip manifest: {split}.jsonl or {split}.csv"),
)
_CARDS = {"cremad": "crema-d.md", "manifest": ""}
# EMER defaults to v2, the larger and newer release (v1 with options: {version: v1}).
_DEFAULTS: dict[str, dict[str, Any]] = {"emer": {"version": "v2"}}
for _name, _loader, (_splits, _tests), _labels, _text in _BUILTIN:
    _card = _CARDS.get(_name, f"{_name}.md")
    _defaults = _DEFAULTS.get(_name, {})
    register_dataset(DatasetSpec(_name, _loader, _splits, _tests, _labels, _card, _text, _defaults))


def available_datasets() -> list[str]:
    return DATASETS.names()


def get_dataset(name: str) -> DatasetSpec:
    """The registered converter ``name``; an unknown name raises
    :class:`~affectllm.registry.UnknownNameError` (an InputError) listing the known datasets."""
    return DATASETS.get(name)


def check_converter_options(name: str, options: Mapping[str, Any]) -> None:
    """InputError naming the dataset, the option and the known ones for any option ``name``'s converter does
    not take (a misspelt ``context_turn`` would otherwise be dropped and the rows silently differ)."""
    known = converter_options(get_dataset(name))
    unknown = sorted(set(options) - set(known))
    if unknown:
        listed = ", ".join(known) if known else "(none)"
        raise InputError(
            None,
            f"dataset {name!r} has no option {', '.join(map(repr, unknown))}; its options: {listed}",
        )


def _exclusions(exclude_ids: Iterable[str] | str | Path | None) -> set[str]:
    if exclude_ids is None:
        return set()
    if isinstance(exclude_ids, (str, Path)):
        path = Path(exclude_ids)
        if not path.is_file():
            raise InputError(path, "exclude_ids file not found")
        if path.suffix.lower() == ".csv":
            table = read_table(path, required=("name",), aliases={"name": ("id", "names")})
            return {row["name"].strip() for _, row in table}
        return {line.strip() for line in read_text_file(path).splitlines() if line.strip()}
    return {str(x) for x in exclude_ids}


def load_dataset_rows(
    name: str,
    data_dir: str | Path,
    split: str = "dev",
    final: bool = False,
    limit: int | None = None,
    exclude_ids: Iterable[str] | str | Path | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Convert one split of a dataset's upstream files into clip-manifest rows.

    ``final=True`` is required for held-out test splits (and for splits that contain them, such as OV-MERD's
    ``all``). ``exclude_ids`` (ids, or a .txt/.csv file of them) drops rows, e.g. the OV-MERD clips when
    training on MER2023. ``options`` go to the converter (``context_turns``, ``taxonomy``, ``version``, ...).
    Ids are checked to be unique, because resumable outputs are keyed by them.
    """
    spec = get_dataset(name)
    if split not in spec.splits:
        raise InputError(
            None, f"dataset {name!r} has no split {split!r}; choose one of {', '.join(spec.splits)}"
        )
    if split in spec.test_splits and not final:
        raise InputError(
            None,
            f"split {split!r} of {name!r} is or holds a held-out evaluation set; pass final=True (--final) only for the final "
            "report, never for model selection",
        )
    check_converter_options(name, options)
    folder = check_data_dir(data_dir)
    kwargs = {**spec.defaults, **options}
    # Media look-ups reuse folder listings within one conversion; a new call sees files added since.
    forget_file_listings()
    rows = spec.loader(folder, split, **kwargs)
    excluded = _exclusions(exclude_ids)
    if excluded:
        rows = [r for r in rows if r["id"] not in excluded]
    seen: dict[str, str] = {}
    for row in rows:
        if row["id"] in seen:
            raise InputError(folder, f"duplicate id {row['id']!r} ({seen[row['id']]} and {row['source']})")
        seen[row["id"]] = row["source"]
    if not rows:
        raise InputError(folder, f"no rows for split {split!r} of {name!r}")
    if limit is not None:
        rows = rows[: max(0, int(limit))]
    return rows


__all__ = [
    "DATASETS",
    "DatasetSpec",
    "available_datasets",
    "check_converter_options",
    "converter_options",
    "fix_text",
    "get_dataset",
    "load_dataset_rows",
    "register_dataset",
]
