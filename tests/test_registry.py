"""The one registry idiom: lazy "module:attr" entries, one unknown-name error listing the known names, and
the registries built on it (backends, textualizers, metrics, rewards, datasets, ASR engines, captioners)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from affectllm.errors import InputError
from affectllm.registry import Registry, UnknownNameError


def test_lazy_entry_imports_on_first_get() -> None:
    registry: Registry = Registry("thing", {"dumps": "json:dumps", "direct": len})
    assert "dumps" in registry and registry.names() == ["direct", "dumps"]
    assert registry.get("dumps")({"a": 1}) == '{"a": 1}'
    assert registry.get("direct") is len and registry.target("dumps") == "json:dumps"
    assert registry.get("nope", None) is None


def test_unknown_name_is_one_error_for_every_caller() -> None:
    registry: Registry = Registry("thing", {"b": 1, "a": 2})
    with pytest.raises(UnknownNameError) as info:
        registry.get("c")
    error = info.value
    # InputError for the CLI, KeyError and ValueError for callers written against the old dict registries.
    assert isinstance(error, InputError) and isinstance(error, KeyError) and isinstance(error, ValueError)
    assert str(error) == "unknown thing 'c'; known things: a, b"


def test_registering_a_name_twice_needs_replace() -> None:
    registry: Registry = Registry("thing", {"a": 1})
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", 2)
    registry.register("a", 2, replace=True)
    assert registry.get("a") == 2


def test_listing_backends_imports_no_backend_module() -> None:
    from affectllm.backends import BACKENDS

    assert BACKENDS.names() == ["llamacpp", "mock", "openai", "transformers", "vllm"]
    # Listing alone imports no backend module (a fresh interpreter: this one may have imported them already).
    code = (
        "import sys; from affectllm.backends import BACKENDS; BACKENDS.names(); "
        "print(sorted(m for m in sys.modules if m.startswith('affectllm.backends.') or m == 'torch'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['affectllm.backends.base']"
    assert isinstance(BACKENDS.target("vllm"), str)


@pytest.mark.parametrize(
    ("resolve", "unknown", "known"),
    [
        ("affectllm.backends:get_backend", "nope", "mock"),
        ("affectllm.textualize:get_textualizer", "smell", "face"),
        ("affectllm.metrics:get_metric", "bleu", "ew"),
        ("affectllm.rewards:get_reward", "kindness", "format"),
        ("affectllm.datasets:get_dataset", "imagenet", "meld"),
        ("affectllm.textualize.asr:get_asr", "kaldi", "faster-whisper"),
        ("affectllm.textualize.scene:get_captioner", "magic", "openai"),
    ],
)
def test_every_registry_raises_the_same_unknown_name_error(resolve: str, unknown: str, known: str) -> None:
    import importlib

    module, _, attr = resolve.partition(":")
    with pytest.raises(UnknownNameError, match=rf"unknown .*'{unknown}'; known .*{known}"):
        getattr(importlib.import_module(module), attr)(unknown)


def test_backend_refuses_an_unknown_option() -> None:
    from affectllm.backends import get_backend

    with pytest.raises(
        InputError, match=r"backend 'mock' has no option 'n_ctxx'; its options: model, replies"
    ):
        get_backend("mock", n_ctxx=4096)


def test_dataset_converter_refuses_an_unknown_option(tmp_path: Path) -> None:
    from affectllm.datasets import converter_options, get_dataset, load_dataset_rows

    assert converter_options(get_dataset("meld")) == ("context_turns",)
    with pytest.raises(
        InputError, match=r"dataset 'meld' has no option 'context_turn'; its options: context_turns"
    ):
        load_dataset_rows("meld", tmp_path, "dev", context_turn=2)
    with pytest.raises(
        InputError, match=r"dataset 'emodb' has no option 'context_turns'; its options: \(none\)"
    ):
        load_dataset_rows("emodb", tmp_path, "train", context_turns=2)


def test_every_shipped_task_and_recipe_passes_only_known_converter_options() -> None:
    from affectllm.datasets import check_converter_options
    from affectllm.tasks import list_tasks, load_task

    tasks = [load_task(str(p)) for p in list_tasks().values()]
    assert tasks
    for task in tasks:
        options = dict(task.dataset_options)
        if task.clip.context and task.context_turns is not None:
            options["context_turns"] = task.context_turns
        check_converter_options(task.dataset, options)


def test_adding_a_metric_is_one_registration() -> None:
    from affectllm.metrics import METRICS, MetricSpec, get_metric, register_metric
    from affectllm.tasks import Task, score_records

    spec = MetricSpec(
        "answer_rate",
        lambda *, predictions, references: {"answer_rate": sum(map(bool, predictions)) / len(references)},
        "mean",
        True,
        "answer_rate",
        lambda records, task: ([r["emotions"] for r in records], [r["gold"] for r in records], {}),
    )
    register_metric(spec)
    try:
        assert get_metric("answer_rate") is spec
        task = Task(name="t", version=1, dataset="meld", split="dev", metrics=[])
        from affectllm.tasks import MetricEntry

        task.metrics.append(MetricEntry("answer_rate"))
        records = [{"emotions": ["joy"], "gold": {}}, {"emotions": [], "gold": {}}]
        assert score_records(records, task) == {"answer_rate": {"answer_rate": 0.5}}
    finally:
        METRICS._entries.pop("answer_rate")


def test_reward_columns_come_from_the_signature() -> None:
    from affectllm.rewards import REWARDS, RewardSpec, reward_columns

    assert reward_columns([RewardSpec("accuracy"), RewardSpec("grounding")]) == {
        "label",
        "label_set",
        "evidence",
    }
    assert "format" in REWARDS


def test_textualize_pipeline_runs_its_extraction_steps_in_order() -> None:
    from affectllm.textualize.pipeline import EXTRACTION_STEPS

    assert list(EXTRACTION_STEPS) == ["transcript", "audio", "openface", "face", "scene"]
