"""Training recipes: one dataclass per trainer, loaded from YAML with command-line overrides.

A recipe file has the sections ``model``, ``lora``, ``data`` (and ``rewards`` for GRPO), a ``trainer`` mapping
passed to trl's ``SFTConfig`` / ``GRPOConfig`` unchanged, and top-level ``output_dir`` / ``resume`` /
``init_adapter``. Unknown keys anywhere are an error (a typo in a recipe must not silently train the wrong
thing); trainer keys are checked against the installed trl's config class.

Overrides use dotted keys (``lora.r=8``, ``trainer.learning_rate=1e-4``, ``data.root=../shared/data``); a bare
key names a top-level field or, failing that, a trainer argument (``max_steps=10``). Values are read as YAML, so
``true``, ``3``, ``[1, 2]`` and ``{a: 1}`` keep their types.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from affectllm.errors import InputError
from affectllm.rewards import RewardSpec, parse_reward_specs

# The model name that means "the embedded default": Gemma 3 270M rebuilt from its GGUF (affectllm.models).
EMBEDDED_MODEL = "embedded"

# Linear layers of a decoder block in Llama/Qwen/Gemma-style models (LoRA targets by default).
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class ModelArgs:
    """Which base model to fine-tune and how to load it."""

    #: a local model directory, a hub id (loaded offline unless the user allows otherwise) or "embedded"
    name_or_path: str = EMBEDDED_MODEL
    #: "auto" (bf16 on a GPU that supports it, else fp32), "float32", "bfloat16" or "float16"
    dtype: str = "auto"
    #: "causal_lm", "image_text_to_text" (multimodal backbones) or "auto" (read from the model config)
    kind: str = "auto"
    attn_implementation: str | None = None
    #: QLoRA: load the base in 4-bit NF4 through bitsandbytes (GPU only)
    load_in_4bit: bool = False
    trust_remote_code: bool = False
    #: a chat template file to use when the tokenizer has none
    chat_template_path: str | None = None


@dataclass
class LoraArgs:
    """peft LoRA settings. For multimodal backbones only language-model layers are adapted: the vision and
    audio towers stay frozen because the cues already carry their evidence as text."""

    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    #: leaf names of the linear layers to adapt, or "all-linear"
    target_modules: list[str] | str = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))
    #: restrict targets to the language model of a multimodal backbone
    language_only: bool = True
    #: modules trained fully and saved with the adapter (e.g. ["lm_head"]); keep empty for small adapters
    modules_to_save: list[str] = field(default_factory=list)


@dataclass
class DataSource:
    """One dataset converted by ``affectllm.datasets`` from its upstream files."""

    dataset: str
    #: folder with the dataset's upstream files, relative to ``data.root`` unless absolute
    data_dir: str | None = None
    split: str = "train"
    #: keep at most this many rows (after shuffling with the data seed); None keeps all
    limit: int | None = None
    #: keep a row only while none of its gold labels has reached this many kept rows (after shuffling, before
    #: ``limit``), so a dataset's label prior (GoEmotions' "admiration", MELD's "neutral") does not become the
    #: model's one answer; None keeps the dataset's own distribution
    max_per_label: int | None = None
    #: an evaluation task (eval/*.yaml name or path) whose input and prompt settings this source's rows are
    #: built with, so training prompts equal what ``affectllm eval run`` asks; the split stays this source's
    eval_task: str | None = None
    #: "ov" (open vocabulary) or "closed" (answer from the dataset's label set); None: the dataset's default
    task: str | None = None
    #: previous dialogue turns shown as context (MELD, EmoryNLP)
    context_turns: int = 3
    #: SFT rationale for rows without a human one: "derived" (cite the clip's own evidence) or "none"
    rationale: str = "derived"
    #: precomputed cues: an `affectllm textualize` JSONL (clip ids = row ids), relative to ``data.root``
    cues_jsonl: str | None = None
    #: keyword options for the dataset's converter (e.g. {version: v1} for EMER, {drop_neutral: true})
    options: dict[str, Any] = field(default_factory=dict)
    #: extractors run on each row's media (e.g. [audio] for EmoDB/RAVDESS; cached per clip); none by default
    extractors: list[str] | None = None


@dataclass
class DataArgs:
    sources: list[DataSource] = field(default_factory=list)
    #: datasets whose ids are removed from every training source (e.g. the OV-MERD dev names, which are
    #: MER2023 train samples and the dev gold of the comparison)
    holdout: list[DataSource] = field(default_factory=list)
    #: base folder for relative ``data_dir``; defaults to $AFFECTLLM_DATA, else "data"
    root: str | None = None
    #: prompts longer than this (in the model's tokens) are dropped — trl no longer truncates prompts
    max_prompt_tokens: int | None = 1024
    few_shot: bool = False
    #: SFT only: the share of rows that also yield a follow-up exchange (a yes/no, "which cues" or "why"
    #: question after the first answer, answered in prose that cites evidence ids), so chat keeps a conversation
    follow_ups: float = 0.0
    modalities: list[str] | None = None
    max_cue_tokens: int | None = None
    template: str | None = None
    seed: int = 42
    #: drop open-vocabulary rows whose gold maps to no emotion-wheel word ("neutral"): EW scoring gives such
    #: an answer nothing, and GRPO's ew_f1 reward would abstain on it
    require_wheel_gold: bool = True
    #: allow sources from dev/test splits (never for real training; for smoke tests of the pipeline only)
    allow_eval_splits: bool = False

    def resolved_root(self) -> Path:
        return Path(self.root or os.environ.get("AFFECTLLM_DATA") or "data").expanduser()


@dataclass
class SFTRecipe:
    """Supervised fine-tuning with LoRA on answers in the inference answer contract."""

    model: ModelArgs = field(default_factory=ModelArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    data: DataArgs = field(default_factory=DataArgs)
    #: keyword arguments for trl.SFTConfig (checked against the installed trl)
    trainer: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "runs/sft"
    #: "auto" resumes from the newest checkpoint in output_dir when there is one; a path resumes from it;
    #: false starts over
    resume: bool | str = "auto"
    #: an adapter to continue training from (instead of a fresh LoRA)
    init_adapter: str | None = None
    #: stop after this many minutes of training wall time (summed over resumed runs), saving a checkpoint and
    #: the adapter: a stage sized for a budgeted machine ends cleanly instead of being killed mid-step
    max_wall_minutes: float | None = None
    #: free text copied into the model card
    description: str = ""

    method = "sft"


ROLLOUT_KINDS = ("generate", "candidates")


@dataclass
class RolloutArgs:
    """What a GRPO rollout is.

    ``generate``: the policy writes whole answers (trl's ``GRPOTrainer``). ``candidates``: the policy is the
    distribution ranked decoding reads, each candidate word's likelihood as the answer, and a rollout is a set
    of words drawn from it (``affectllm.training.ranked_grpo``); it trains open-vocabulary prompts only.
    """

    kind: str = "generate"
    #: candidate words (``candidates`` rollouts); None: the packaged list ranked decoding uses by default
    candidates: list[str] | None = None
    #: the largest set drawn
    max_emotions: int = 4
    #: how a set's size is drawn: "ratio" (as ranked decoding decides it: each next word joins while its
    #: probability is near min_ratio times the first word's, softly) or "uniform" (1..max_emotions, blind to
    #: the policy)
    size: str = "ratio"
    #: ranked decoding's threshold, and how soft the rollouts make it (in nats; towards 0, the hard rule)
    min_ratio: float = 0.3
    softness: float = 0.5


@dataclass
class GRPORecipe:
    """GRPO with emotion-wheel, format, count and grounding rewards, usually starting from an SFT adapter."""

    model: ModelArgs = field(default_factory=ModelArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    data: DataArgs = field(default_factory=DataArgs)
    rewards: list[RewardSpec] = field(
        default_factory=lambda: [RewardSpec("format", 0.5, {}), RewardSpec("ew_f1", 1.0, {})]
    )
    rollouts: RolloutArgs = field(default_factory=RolloutArgs)
    #: keyword arguments for trl.GRPOConfig (checked against the installed trl)
    trainer: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "runs/grpo"
    resume: bool | str = "auto"
    init_adapter: str | None = None
    max_wall_minutes: float | None = None
    description: str = ""

    method = "grpo"


Recipe = SFTRecipe | GRPORecipe
RECIPES: dict[str, type] = {"sft": SFTRecipe, "grpo": GRPORecipe}


# ------------------------------------------------------------------------------------------------ loading


def _trainer_fields(method: str) -> dict[str, dataclasses.Field]:
    # trl pulls in transformers; only pay for it when a recipe is actually loaded.
    if method == "sft":
        from trl import SFTConfig as config_cls
    else:
        from trl import GRPOConfig as config_cls
    return {f.name: f for f in dataclasses.fields(config_cls) if f.init}


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _is_instance(value: Any, tp: Any) -> bool:
    base = typing.get_origin(tp) or tp
    return isinstance(base, type) and isinstance(value, base)


def _coerce(value: Any, tp: Any, where: str, source: str | None) -> Any:
    """Convert a YAML value to the field type ``tp``, raising InputError on a mismatch."""
    if value is None:
        if tp is Any or _is_optional(tp):
            return None
        raise InputError(source, f"{where}: a value is required")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        # Prefer the member the value already is (bool before str for `bool | str`).
        members = sorted(typing.get_args(tp), key=lambda t: 0 if _is_instance(value, t) else 1)
        for member in members:
            if member is type(None):
                continue
            try:
                return _coerce(value, member, where, source)
            except InputError as exc:
                errors.append(exc.problem)
        raise InputError(source, errors[0] if errors else f"{where}: bad value {value!r}")
    if tp is Any:
        return value
    if origin in (list, Sequence) or tp is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
            raise InputError(source, f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise InputError(source, f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise InputError(source, f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where, source)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise InputError(source, f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise InputError(source, f"{where}: expected an integer, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(source, f"{where}: expected an integer, got {value!r}") from None
        if number != int(number):
            raise InputError(source, f"{where}: expected an integer, got {value!r}")
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            raise InputError(source, f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InputError(source, f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (Mapping, list)):
            raise InputError(source, f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: Mapping[str, Any], where: str, source: str | None) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}: " if where else ""
        raise InputError(source, f"{prefix}unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        sub = f"{where}.{key}" if where else key
        if cls in (SFTRecipe, GRPORecipe) and key == "rewards":
            kwargs[key] = parse_reward_specs(value, source)
        elif cls is DataArgs and key in ("sources", "holdout"):
            if not isinstance(value, list):
                raise InputError(source, f"{sub}: expected a list of data sources")
            kwargs[key] = [_data_source(v, f"{sub}[{i}]", source) for i, v in enumerate(value)]
        else:
            kwargs[key] = _coerce(value, hints[key], sub, source)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InputError(source, f"{where or 'recipe'}: {exc}") from None


def _data_source(value: Any, where: str, source: str | None) -> DataSource:
    if isinstance(value, str):
        value = {"dataset": value}
    if not isinstance(value, Mapping) or "dataset" not in value:
        raise InputError(source, f"{where}: a data source needs at least 'dataset', got {value!r}")
    built = _build(DataSource, value, where, source)
    if built.task not in (None, "ov", "closed"):
        raise InputError(source, f"{where}.task: expected 'ov' or 'closed', got {built.task!r}")
    if built.rationale not in ("derived", "none"):
        raise InputError(source, f"{where}.rationale: expected 'derived' or 'none', got {built.rationale!r}")
    return built


def parse_override_value(text: str) -> Any:
    """A command-line value read as YAML, with YAML 1.1's gaps filled (``1e-4`` is a number)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            return float(value)
        except ValueError:
            pass
    return value


def parse_cli_overrides(args: Sequence[str]) -> list[tuple[str, Any]]:
    """``["--lora.r", "8", "--max_steps=10"]`` → ``[("lora.r", 8), ("max_steps", 10)]``."""
    out: list[tuple[str, Any]] = []
    i = 0
    args = list(args)
    while i < len(args):
        token = args[i]
        if not token.startswith("--") or token == "--":
            raise InputError(None, f"unexpected argument {token!r}; overrides look like --key value")
        key = token[2:]
        if "=" in key:
            key, text = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise InputError(None, f"override --{key} needs a value (e.g. --{key} true)")
            text = args[i + 1]
            i += 2
        out.append((key.replace("-", "_"), parse_override_value(text)))
    return out


def _apply_override(data: dict[str, Any], key: str, value: Any, cls: type, source: str | None) -> None:
    top = {f.name for f in dataclasses.fields(cls) if f.init}
    parts = key.split(".")
    if parts[0] not in top:
        if len(parts) == 1 and parts[0] in _trainer_fields(cls.method):
            parts = ["trainer", parts[0]]
        else:
            raise InputError(
                source,
                f"override {key!r}: unknown key; top-level keys are {sorted(top)} (or a trainer argument)",
            )
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise InputError(source, f"override {key!r}: {part!r} is not a mapping")
        node = child
    node[parts[-1]] = value


def load_recipe(
    path: str | Path | None,
    method: str,
    overrides: Sequence[tuple[str, Any]] | Mapping[str, Any] = (),
    check_trainer_args: bool = True,
) -> Recipe:
    """Read a recipe YAML (or start from defaults when ``path`` is None), apply overrides, validate.

    Raises InputError naming the file for unknown keys, wrong types and unknown trainer arguments.
    """
    if method not in RECIPES:
        raise InputError(None, f"unknown training method {method!r}; choose one of {sorted(RECIPES)}")
    cls = RECIPES[method]
    source = str(path) if path is not None else None
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "recipe file not found")
        from affectllm.yamlfile import read_yaml

        loaded = read_yaml(path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError(path, "a recipe must be a YAML mapping")
        data = loaded
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    for key, value in items:
        _apply_override(data, key, value, cls, source)
    recipe = _build(cls, data, "", source)
    if isinstance(recipe, GRPORecipe):
        _check_rollouts(recipe, source)
    if check_trainer_args:
        check_trainer(recipe, source)
    return recipe


# What a candidate-set rollout has: a list of emotions, no rationale. Rewards that read the rationale or the
# answer's text would give every rollout of a prompt the same value, which only hides a recipe mistake.
SET_REWARDS = ("ew_f1", "ew_hit", "label_count", "accuracy")


def _check_rollouts(recipe: GRPORecipe, source: str | None) -> None:
    rollouts = recipe.rollouts
    if rollouts.kind not in ROLLOUT_KINDS:
        raise InputError(
            source, f"rollouts.kind: expected one of {list(ROLLOUT_KINDS)}, got {rollouts.kind!r}"
        )
    if rollouts.max_emotions < 1:
        raise InputError(source, "rollouts.max_emotions must be at least 1")
    if rollouts.size not in ("ratio", "uniform"):
        raise InputError(source, f"rollouts.size: expected ratio or uniform, got {rollouts.size!r}")
    if not 0 < rollouts.min_ratio <= 1 or rollouts.softness <= 0:
        raise InputError(source, "rollouts.min_ratio must be in (0, 1] and rollouts.softness positive")
    if rollouts.kind != "candidates":
        if rollouts.candidates is not None:
            raise InputError(source, "rollouts.candidates only applies to rollouts.kind: candidates")
        return
    if rollouts.candidates is not None and len(set(rollouts.candidates)) < 2:
        raise InputError(source, "rollouts.candidates needs at least two different words")
    text_rewards = sorted(s.name for s in recipe.rewards if s.name not in SET_REWARDS)
    if text_rewards:
        raise InputError(
            source,
            f"rewards {text_rewards} read a generated answer's text or rationale; candidate-set rollouts "
            f"(rollouts.kind: candidates) are lists of emotions, so use only {list(SET_REWARDS)}",
        )


def check_trainer(recipe: Recipe, source: str | None = None) -> None:
    """Unknown trainer arguments, and ones the recipe sets elsewhere, are errors."""
    fields = _trainer_fields(recipe.method)
    unknown = sorted(set(recipe.trainer) - set(fields))
    if unknown:
        raise InputError(
            source, f"trainer: unknown argument(s) {unknown} for trl's {recipe.method.upper()}Config"
        )
    if "output_dir" in recipe.trainer:
        raise InputError(source, "trainer.output_dir: set the top-level 'output_dir' instead")
    if "resume_from_checkpoint" in recipe.trainer:
        raise InputError(source, "trainer.resume_from_checkpoint: set the top-level 'resume' instead")
    if "reward_weights" in recipe.trainer:
        raise InputError(source, "trainer.reward_weights: give each reward a weight under 'rewards' instead")


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """A plain mapping that :func:`load_recipe` reads back to an equal recipe (saved next to the adapter)."""
    out = dataclasses.asdict(recipe)
    if isinstance(recipe, GRPORecipe):
        out["rewards"] = {s.name: {"weight": s.weight, **dict(s.options or {})} for s in recipe.rewards}
    return out


def dump_recipe(recipe: Recipe, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False), encoding="utf-8")
