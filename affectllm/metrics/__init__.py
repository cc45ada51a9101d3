"""Metrics, each declaring how per-sample values aggregate and which direction is better.

Tasks (``eval/*.yaml``) name metrics by these keys; the registry is the only place names are resolved.
Modules register on import, and the registry imports a metric's module only when the metric is asked for,
so the rationale metrics' sentence-transformers never load for a closed-set task.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricSpec:
    """A named corpus-level metric: ``fn(predictions, references, **options) -> dict[str, Any]``.

    ``aggregation`` documents how per-sample values combine (``"mean"``, ``"f_of_means"``, ``"corpus"``);
    ``higher_is_better`` drives leaderboards and comparison arrows; ``primary`` names the headline key of the
    returned dict.
    """

    name: str
    fn: Callable[..., dict[str, Any]]
    aggregation: str
    higher_is_better: bool
    primary: str
    description: str = ""


_REGISTRY: dict[str, MetricSpec] = {}

# Which module defines which metric names; loaded on first use.
_PROVIDERS: dict[str, str] = {
    "ew": "affectllm.metrics.ov",
    "accuracy": "affectllm.metrics.closed",
    "weighted_f1": "affectllm.metrics.closed",
    "macro_f1": "affectllm.metrics.closed",
    "uar": "affectllm.metrics.closed",
    "closed_set": "affectllm.metrics.closed",
    "hit_rate": "affectllm.metrics.closed",
    "rationale": "affectllm.metrics.rationale",
    "grounding": "affectllm.metrics.rationale",
}


def register_metric(spec: MetricSpec) -> MetricSpec:
    _REGISTRY[spec.name] = spec
    return spec


def get_metric(name: str) -> MetricSpec:
    if name not in _REGISTRY and name in _PROVIDERS:
        importlib.import_module(_PROVIDERS[name])
    if name not in _REGISTRY:
        known = sorted(set(_REGISTRY) | set(_PROVIDERS))
        raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(known)}")
    return _REGISTRY[name]


def available_metrics() -> list[str]:
    return sorted(set(_REGISTRY) | set(_PROVIDERS))
