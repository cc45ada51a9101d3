"""Metrics, each declaring how per-sample values aggregate and which direction is better.

Tasks (``eval/*.yaml``) name metrics by these keys; :data:`METRICS` is the only place names are resolved.
Adding a metric is one line in ``_BUILTIN`` below: its name, its function, how it aggregates, which direction
is better, its headline key and the adapter that turns a task run's records into its inputs. Functions and
adapters are ``"module:attr"`` strings imported on first call, so the rationale metrics' sentence-transformers
never load for a closed-set task.

Every metric function takes keyword-only ``predictions=`` and ``references=`` (plus its options), so the
order of the two can never be swapped silently.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from affectllm.registry import Registry, UnknownNameError


class LazyCallable:
    """A ``"module:attr"`` function imported on its first call (and looked up again on every call, so a
    replaced module attribute is seen)."""

    def __init__(self, target: str) -> None:
        module, sep, attr = target.partition(":")
        if not sep:
            raise ValueError(f"lazy target {target!r} is not 'module:attr'")
        self.target = target
        self._module = module
        self._attr = attr

    def resolve(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self._module), self._attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"LazyCallable({self.target!r})"


def _lazy(value: Callable[..., Any] | str | None) -> Any:
    return LazyCallable(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class MetricSpec:
    """A named corpus-level metric: ``fn(*, predictions, references, **options) -> dict[str, Any]``.

    ``aggregation`` documents how per-sample values combine (``"mean"``, ``"f_of_means"``, ``"corpus"``);
    ``higher_is_better`` drives leaderboards and comparison arrows; ``primary`` names the headline key of the
    returned dict. ``task_inputs(records, task) -> (predictions, references, extra options)`` builds the
    metric's inputs from an ``eval run``'s prediction records (None: the metric is not usable in a task).
    ``fn`` and ``task_inputs`` may be given as ``"module:attr"`` strings, imported on first call.
    """

    name: str
    fn: Callable[..., dict[str, Any]]
    aggregation: str
    higher_is_better: bool
    primary: str
    task_inputs: Callable[..., tuple[Any, Any, dict[str, Any]]] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fn", _lazy(self.fn))
        object.__setattr__(self, "task_inputs", _lazy(self.task_inputs))


_M = "affectllm.metrics"
_CLOSED = f"{_M}.closed:closed_set_scores"
_CLOSED_IN = f"{_M}.task_inputs:closed_inputs"
_CLASSES = "over the label set (the given labels, else the gold classes)"

# name, fn, aggregation, higher is better, primary key, task adapter, description: one line per metric.
_BUILTIN: tuple[MetricSpec, ...] = (
    MetricSpec("ew", f"{_M}.ov:ew_metric", "f_of_means", True, "l1.f", f"{_M}.task_inputs:ew_inputs",
               "OV-MER emotion-wheel F (mean over 5 wheels at level 1); also 12 variants, M-avg, level 2"),
    MetricSpec("accuracy", _CLOSED, "corpus", True, "accuracy", _CLOSED_IN,
               "share of samples whose predicted label equals the gold label"),
    MetricSpec("weighted_f1", _CLOSED, "corpus", True, "weighted_f1", _CLOSED_IN,
               "per-class F1 weighted by gold support"),
    MetricSpec("macro_f1", _CLOSED, "corpus", True, "macro_f1", _CLOSED_IN,
               f"unweighted mean of per-class F1 {_CLASSES}"),
    MetricSpec("uar", _CLOSED, "corpus", True, "uar", _CLOSED_IN, f"unweighted average recall {_CLASSES}"),
    MetricSpec("closed_set", _CLOSED, "corpus", True, "accuracy", _CLOSED_IN,
               "accuracy, weighted/macro F1, UAR and the confusion matrix"),
    MetricSpec("hit_rate", f"{_M}.closed:hit_rate", "mean", True, "hit_rate", f"{_M}.task_inputs:hit_inputs",
               "MER-UniBench hit rate: one-hot gold among open-vocabulary predictions at wheel level 1, "
               "mean over 5 wheels"),
    MetricSpec("rationale", f"{_M}.rationale:rationale_scores", "f_of_means", True, "f",
               f"{_M}.task_inputs:rationale_inputs",
               "cue-level precision/recall/F of rationales against reference rationales (embedding "
               "cosine), per modality and overall"),
    MetricSpec("grounding", f"{_M}.rationale:grounding_scores", "mean", True, "grounding",
               f"{_M}.task_inputs:grounding_inputs",
               "share of rationale cues supported by the clip's evidence cues (cosine ≥ threshold)"),
)  # fmt: skip

METRICS: Registry[MetricSpec] = Registry("metric", {spec.name: spec for spec in _BUILTIN})


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add a metric (a plugin's; the shipped ones are the ``_BUILTIN`` lines)."""
    METRICS.register(spec.name, spec)
    return spec


def get_metric(name: str) -> MetricSpec:
    """The metric ``name``; an unknown name raises :class:`~affectllm.registry.UnknownNameError` (a
    ``KeyError``) listing the known metrics."""
    return METRICS.get(name)


def available_metrics() -> list[str]:
    return METRICS.names()


__all__ = [
    "METRICS",
    "LazyCallable",
    "MetricSpec",
    "UnknownNameError",
    "available_metrics",
    "get_metric",
    "register_metric",
]
