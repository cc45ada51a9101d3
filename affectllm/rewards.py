"""GRPO rewards: thin wrappers over the parser and the evaluation metrics, keyed by the names recipes use.

Each reward is a plain function with trl's reward-function signature,
``fn(completions: list[str | list[dict]], **dataset_columns) -> list[float | None]``: one value per completion,
``None`` where the reward does not apply to that row (trl turns it into NaN and leaves it out of the mean), so
one dataset can mix open-vocabulary and closed-set rows.

The metric code is the evaluation code: ``ew_f1`` calls :func:`affectllm.metrics.ov.sample_ew_f1` and
``grounding`` calls :func:`affectllm.metrics.rationale.grounding`, so a reward can never drift from the number a
paper reports. Recipes pick rewards and weights by name::

    rewards:
      format: {weight: 0.5}
      ew_f1: {weight: 1.0, levels: [1, 2]}
      label_count: {weight: 0.5, target: 3}

:func:`build_rewards` turns that mapping into ``(functions, weights)`` for ``GRPOTrainer``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from affectllm.errors import InputError
from affectllm.registry import Registry

Completion = str | list[dict[str, Any]]
RewardFn = Callable[..., list[float | None]]


def completion_text(completion: Completion) -> str:
    """The generated text of one completion, whether trl passes plain text or chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts: list[str] = []
    for message in completion or []:
        content = message.get("content", "") if isinstance(message, dict) else message
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            # Multimodal message content: keep the text parts.
            parts.extend(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
    return "".join(parts)


def _column(values: Sequence[Any] | None, n: int) -> list[Any]:
    """A dataset column aligned with the completions (absent columns read as None)."""
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"reward column has {len(values)} values for {n} completions")
    return values


def _parse(completion: Completion, labels: Sequence[str] | None = None):
    from affectllm.parsing import parse_answer

    return parse_answer(completion_text(completion), labels=list(labels) if labels else None)


def _gold_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        from affectllm.labels import parse_label_list

        return parse_label_list(value)
    return [str(v) for v in value if str(v).strip()]


# --------------------------------------------------------------------------------------------- the rewards


def format_reward(
    completions: list[Completion],
    require_rationale: bool = True,
    **_: Any,
) -> list[float]:
    """How well the answer follows the contract the parser reads.

    1.0: the contract holds, emotions are listed and (when required) a rationale cites evidence;
    0.5: the contract holds but a required part is empty; 0.25: the parser had to repair the answer yet
    recovered emotions; 0.0: nothing usable. Partial credit gives a small model a gradient towards the format
    long before it produces perfect answers.
    """
    out: list[float] = []
    for completion in completions:
        pred = _parse(completion)
        if pred.format_ok and pred.emotions and (pred.rationale or not require_rationale):
            out.append(1.0)
        elif pred.format_ok:
            out.append(0.5)
        elif pred.emotions:
            out.append(0.25)
        else:
            out.append(0.0)
    return out


def ew_f1_reward(
    completions: list[Completion],
    labels: Sequence[Any] | None = None,
    levels: Iterable[int] = (1,),
    version: str = "2025",
    min_gold: int = 1,
    **_: Any,
) -> list[float | None]:
    """Per-sample emotion-wheel F (mean over the 5 wheels at the given levels) of the listed emotions
    against the gold ``labels`` column; None where the gold maps to no wheel word or has fewer than
    ``min_gold`` labels (the reward abstains; see ``ew_hit`` for single-label rows)."""
    from affectllm.metrics.ov import sample_ew_f1

    levels = tuple(int(level) for level in levels)
    golds = _column(labels, len(completions))
    out: list[float | None] = []
    for completion, gold in zip(completions, golds, strict=True):
        gold_labels = _gold_list(gold)
        if not gold_labels or len(gold_labels) < min_gold:
            out.append(None)
            continue
        pred = _parse(completion)
        out.append(
            sample_ew_f1(
                references=gold_labels, predictions=list(pred.emotions), levels=levels, version=version
            )
        )
    return out


def ew_hit_reward(
    completions: list[Completion],
    labels: Sequence[Any] | None = None,
    version: str = "2025",
    max_gold: int | None = None,
    **_: Any,
) -> list[float | None]:
    """Per-sample MER-UniBench hit rate (:func:`affectllm.metrics.closed.hit_rate`, the evaluation code): the
    mean over the 5 wheels at level 1 of how many gold labels the listed emotions hit (for one gold label, the
    share of wheels on which it is hit). None where the gold maps to no wheel word or has more than
    ``max_gold`` labels.

    For single-label rows in an open-vocabulary prompt: one label is a partial annotation of a clip that may
    show several emotions (the OV-MER premise), so an emotion the annotators did not list is not wrong, and
    precision against one label would teach the model to name one emotion. Pair it with ``label_count``, and
    watch for a constant hedge: a fixed pair of frequent emotions hits often whatever the input. On the embedded
    model, hit rate plus ``label_count`` (target 2) collapsed answers to "worried, angry" within 30 steps
    (docs/training.md, stage 6).
    """
    from affectllm.metrics.closed import hit_rate

    golds = _column(labels, len(completions))
    out: list[float | None] = []
    for completion, gold in zip(completions, golds, strict=True):
        gold_labels = _gold_list(gold)
        if not gold_labels or (max_gold is not None and len(gold_labels) > max_gold):
            out.append(None)
            continue
        pred = _parse(completion)
        scored = hit_rate(
            references={"x": gold_labels}, predictions={"x": list(pred.emotions)}, version=version
        )
        out.append(scored["hit_rate"])
    return out


def accuracy_reward(
    completions: list[Completion],
    label: Sequence[Any] | None = None,
    label_set: Sequence[Any] | None = None,
    **_: Any,
) -> list[float | None]:
    """Closed-set accuracy: 1.0 when the first listed emotion is the gold ``label``. Rows without a closed
    label (open-vocabulary sources) get None. The parser maps the answer onto ``label_set`` when given, so
    a synonym of a class name counts as that class exactly as it does in evaluation."""
    golds = _column(label, len(completions))
    sets = _column(label_set, len(completions))
    out: list[float | None] = []
    for completion, gold, allowed in zip(completions, golds, sets, strict=True):
        if gold is None or str(gold).strip() == "":
            out.append(None)
            continue
        pred = _parse(completion, labels=allowed or None)
        first = pred.emotions[0].strip().lower() if pred.emotions else ""
        out.append(1.0 if first == str(gold).strip().lower() else 0.0)
    return out


def label_count_reward(
    completions: list[Completion],
    target: int = 3,
    per_extra: float = 0.25,
    empty: float = -1.0,
    **_: Any,
) -> list[float]:
    """Penalise listing many emotions: 0 up to ``target`` labels, then ``-per_extra`` for each one more
    (floored at -1). Listing every emotion word buys recall for free under EW-F's set matching, and GRPO
    finds that quickly (AffectGPT-R1 needed the same guard). An answer with no emotion gets ``empty``."""
    if target < 1:
        raise ValueError("label_count target must be at least 1")
    out: list[float] = []
    for completion in completions:
        n = len(_parse(completion).emotions)
        if n == 0:
            out.append(float(empty))
        else:
            out.append(-min(1.0, max(0, n - target) * float(per_extra)))
    return out


def length_reward(
    completions: list[Completion],
    max_tokens: int = 200,
    **_: Any,
) -> list[float]:
    """Penalise answers longer than ``max_tokens`` (approximate tokens, ~4 characters each): 0 within the
    budget, falling linearly to -1 at twice the budget. Keeps rationales to the point and rollouts cheap."""
    if max_tokens < 1:
        raise ValueError("length max_tokens must be at least 1")
    from affectllm.textualize.render import approx_tokens

    out: list[float] = []
    for completion in completions:
        over = approx_tokens(completion_text(completion)) - max_tokens
        out.append(0.0 if over <= 0 else -min(1.0, over / max_tokens))
    return out


def grounding_reward(
    completions: list[Completion],
    evidence: Sequence[Any] | None = None,
    threshold: float | None = None,
    hallucination_cost: float = 1.0,
    empty: float = 0.0,
    **_: Any,
) -> list[float | None]:
    """Share of cited cues supported by the clip's evidence, with hallucinated cues costing.

    ``evidence`` is the row's list of rendered evidence lines (with their citation ids). Each rationale item
    goes to :func:`affectllm.metrics.rationale.grounding` with its cited id, so a cue citing an id the clip
    does not have is hallucinated whatever it says, and one citing a real id must also say something that
    matches that line. The reward is ``(supported - hallucination_cost * hallucinated) / cited``; an answer
    citing nothing gets ``empty``; rows without evidence get None.
    """
    from affectllm.metrics.rationale import grounding

    kwargs = {} if threshold is None else {"threshold": float(threshold)}
    rows = _column(evidence, len(completions))
    out: list[float | None] = []
    for completion, lines in zip(completions, rows, strict=True):
        lines = [str(line) for line in (lines or []) if str(line).strip()]
        if not lines:
            out.append(None)
            continue
        cues = []
        for item in _parse(completion).rationale:
            text = (item.cue or "").strip()
            cue_id = (item.cue_id or "").strip()
            cue = f"[{cue_id}] {text}".strip() if cue_id else text
            if cue:
                cues.append(cue)
        if not cues:
            out.append(float(empty))
            continue
        result = grounding(predictions=cues, references=lines, **kwargs)
        n = len(result.supported) + len(result.hallucinated)
        out.append((len(result.supported) - float(hallucination_cost) * len(result.hallucinated)) / n)
    return out


# -------------------------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class RewardSpec:
    """A reward as a recipe names it: the registered function, its weight and its options."""

    name: str
    weight: float = 1.0
    options: Mapping[str, Any] | None = None


# Adding a reward is one line here: the columns it reads and the options a recipe may set both come from its
# signature (see _COLUMN_NAMES and _options_of).
REWARDS: Registry[RewardFn] = Registry(
    "reward",
    {
        "format": format_reward,
        "ew_f1": ew_f1_reward,
        "ew_hit": ew_hit_reward,
        "accuracy": accuracy_reward,
        "label_count": label_count_reward,
        "length": length_reward,
        "grounding": grounding_reward,
    },
)

# Dataset columns are filled per row by the trainer; everything else with a default is a recipe option.
_COLUMN_NAMES = ("labels", "label", "label_set", "evidence")


def columns_of(fn: RewardFn) -> tuple[str, ...]:
    """The dataset columns a reward reads: the parameters it names from :data:`_COLUMN_NAMES`."""
    params = inspect.signature(fn).parameters
    return tuple(name for name in _COLUMN_NAMES if name in params)


def _options_of(fn: RewardFn) -> set[str]:
    return {
        name
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty and name not in _COLUMN_NAMES
    }


def get_reward(name: str, **options: Any) -> RewardFn:
    """The registered reward ``name`` with its options bound; its ``__name__`` is ``name`` so trl logs it
    as ``rewards/<name>/mean``. An unknown name raises :class:`~affectllm.registry.UnknownNameError` (a
    ``KeyError``) listing the known rewards; an unknown option raises ``TypeError``."""
    fn = REWARDS.get(name)
    unknown = set(options) - _options_of(fn)
    if unknown:
        raise TypeError(
            f"reward {name!r} has no option(s) {sorted(unknown)}; its options are {sorted(_options_of(fn))}"
        )
    bound = functools.partial(fn, **options)

    def reward(completions: list[Completion], **columns: Any) -> list[float | None]:
        return bound(completions, **columns)

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = fn.__doc__
    return reward


def parse_reward_specs(
    config: Mapping[str, Any] | Sequence[Any], source: str | None = None
) -> list[RewardSpec]:
    """Read a recipe's ``rewards`` section: a mapping ``name: weight`` or ``name: {weight: w, **options}``,
    or a list of ``{name: ..., weight: ..., **options}``. Bad entries raise InputError naming ``source``."""
    specs: list[RewardSpec] = []
    if isinstance(config, Mapping):
        items = list(config.items())
    elif isinstance(config, Sequence) and not isinstance(config, str):
        items = []
        for entry in config:
            if not isinstance(entry, Mapping) or "name" not in entry:
                raise InputError(source, f"each reward in a list needs a 'name': {entry!r}")
            entry = dict(entry)
            items.append((entry.pop("name"), entry))
    else:
        raise InputError(source, f"'rewards' must be a mapping or a list, not {type(config).__name__}")
    for name, value in items:
        if name not in REWARDS:
            raise InputError(source, f"unknown reward {name!r}; known rewards: {', '.join(REWARDS.names())}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            specs.append(RewardSpec(name, float(value), {}))
            continue
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise InputError(source, f"reward {name!r}: expected a weight or a mapping, got {value!r}")
        options = dict(value)
        weight = options.pop("weight", 1.0)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise InputError(source, f"reward {name!r}: weight {weight!r} is not a number") from None
        unknown = set(options) - _options_of(REWARDS[name])
        if unknown:
            raise InputError(
                source,
                f"reward {name!r} has no option(s) {sorted(unknown)}; "
                f"its options are {sorted(_options_of(REWARDS[name]))}",
            )
        specs.append(RewardSpec(name, weight, options))
    if not specs:
        raise InputError(source, "'rewards' is empty: GRPO needs at least one reward")
    return specs


def build_rewards(specs: Sequence[RewardSpec]) -> tuple[list[RewardFn], list[float]]:
    """Reward functions (options bound) and their weights, in recipe order, for ``GRPOTrainer``."""
    funcs = [get_reward(spec.name, **dict(spec.options or {})) for spec in specs]
    return funcs, [float(spec.weight) for spec in specs]


def reward_columns(specs: Iterable[RewardSpec]) -> set[str]:
    """The dataset columns the given rewards read."""
    return {col for spec in specs for col in columns_of(REWARDS.get(spec.name))}


def score_completions(
    completions: list[Completion], specs: Sequence[RewardSpec], **columns: Any
) -> dict[str, list[float | None]]:
    """Every reward for a batch of completions (for inspecting a recipe's rewards outside training), plus
    ``"total"``: the weighted sum over the rewards that apply (None-valued rewards are skipped, as in trl)."""
    funcs, weights = build_rewards(specs)
    scores = {spec.name: fn(completions, **columns) for spec, fn in zip(specs, funcs, strict=True)}
    totals: list[float | None] = []
    for i in range(len(completions)):
        parts = [
            w * scores[s.name][i]
            for s, w in zip(specs, weights, strict=True)
            if scores[s.name][i] is not None
        ]
        totals.append(sum(parts) if parts else None)
    scores["total"] = totals
    return scores
