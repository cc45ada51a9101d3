"""Command-line overrides for ``affectllm train sft|grpo``, in the vocabulary trl users already type.

Three kinds of ``--key [value]`` are accepted, all checked strictly (an unknown key is an error that names the
closest known ones):

- recipe keys, dotted (``--lora.r 8``, ``--data.root ../shared/data``) or top-level (``--output_dir runs/x``);
  values are read as YAML, so ``true``, ``3`` and ``[1, 2]`` keep their types;
- trl's own model/PEFT/dataset argument names (``--model_name_or_path``, ``--lora_r``, ``--use_peft``,
  ``--dataset_name``, ``--resume_from_checkpoint`` ...), mapped onto the recipe keys (``TRL_ALIASES``);
- trainer arguments of trl's ``SFTConfig`` / ``GRPOConfig`` (``--learning_rate 1e-4``, ``--bf16``,
  ``--no_gradient_checkpointing``, ``--trainer.max_steps 10``), converted by transformers' own
  ``HfArgumentParser`` actions, so a value means what it means to ``trl sft``.

A flag without a value is ``true`` (``--bf16``, ``--gradient_checkpointing``, ``--use_peft``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
from collections.abc import Sequence
from functools import cache
from typing import Any

from affectllm.errors import InputError

# trl's ModelConfig / ScriptArguments names → the recipe key that holds the same setting.
TRL_ALIASES: dict[str, str] = {
    "model_name_or_path": "model.name_or_path",
    "dtype": "model.dtype",
    "torch_dtype": "model.dtype",
    "attn_implementation": "model.attn_implementation",
    "trust_remote_code": "model.trust_remote_code",
    "load_in_4bit": "model.load_in_4bit",
    "use_peft": "lora.enabled",
    "lora_r": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "lora_target_modules": "lora.target_modules",
    "lora_modules_to_save": "lora.modules_to_save",
    "dataset_name": "data.sources",
    "resume_from_checkpoint": "resume",
}


def _tokens(args: Sequence[str]) -> list[tuple[str, str | None]]:
    """``["--lora.r", "8", "--bf16", "--max_steps=3"]`` → ``[("lora.r", "8"), ("bf16", None), ("max_steps", "3")]``."""
    out: list[tuple[str, str | None]] = []
    args = list(args)
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--") or token == "--":
            raise InputError(
                None, f"unexpected argument {token!r}; overrides look like --key value or --flag"
            )
        key, sep, text = token[2:].partition("=")
        if sep:
            out.append((key, text))
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append((key, args[i + 1]))
            i += 2
        else:
            out.append((key, None))  # a bare flag
            i += 1
    return out


@cache
def _trainer_parser(method: str) -> Any:
    # trl pulls in transformers (seconds); only built when a trainer argument is actually given.
    from transformers import HfArgumentParser

    if method == "sft":
        from trl import SFTConfig as config_cls
    else:
        from trl import GRPOConfig as config_cls
    return HfArgumentParser(config_cls)


def trainer_value(method: str, name: str, text: str | None) -> tuple[str, Any]:
    """``(field, value)`` of trainer argument ``--name [text]`` as trl's own command line converts it
    (``--no_gradient_checkpointing`` → ``("gradient_checkpointing", False)``)."""
    import argparse

    from transformers.hf_argparser import string_to_bool

    parser = _trainer_parser(method)
    action = parser._option_string_actions.get(f"--{name}")
    if action is None:
        raise KeyError(name)
    if isinstance(action, argparse._StoreFalseAction):  # --no_<flag>
        if text is not None:
            raise InputError(None, f"--{name} takes no value")
        return action.dest, False
    if text is None:
        if action.nargs == "?":
            return action.dest, action.const
        if action.type is string_to_bool:
            return action.dest, True  # an optional boolean (e.g. --bf16): a bare flag switches it on
        raise InputError(None, f"--{name} needs a value")
    texts = [t for t in text.replace(",", " ").split() if t] if action.nargs in ("+", "*") else [text]
    try:
        values = [action.type(t) if action.type else t for t in texts]
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise InputError(None, f"--{name} {text!r}: {exc or 'not a valid value'}") from None
    if action.choices is not None:
        bad = [t for t, v in zip(texts, values, strict=True) if v not in action.choices]
        if bad:
            choices = ", ".join(str(getattr(c, "value", c)) for c in action.choices)
            raise InputError(None, f"--{name} {bad[0]!r}: choose one of {choices}")
    # Enum members become their plain values, so the saved recipe stays plain YAML.
    values = [v.value if isinstance(v, enum.Enum) else v for v in values]
    return action.dest, values if action.nargs in ("+", "*") else values[0]


def _recipe_top_keys(method: str) -> set[str]:
    from affectllm.training.config import RECIPES

    return {f.name for f in dataclasses.fields(RECIPES[method]) if f.init}


def parse_overrides(args: Sequence[str], method: str) -> list[tuple[str, Any]]:
    """Command-line overrides → ``[(recipe key, value)]`` for ``load_recipe`` (trainer keys as ``trainer.X``)."""
    from affectllm.training.config import parse_override_value

    top = _recipe_top_keys(method)
    out: list[tuple[str, Any]] = []
    for raw_key, text in _tokens(args):
        key = raw_key if "." in raw_key else raw_key.replace("-", "_")
        key = TRL_ALIASES.get(key, key)
        head = key.split(".")[0]
        if head == "trainer" or (head not in top and "." not in key):
            name = key.split(".", 1)[1] if head == "trainer" else key
            try:
                field_name, value = trainer_value(method, name, text)
            except KeyError:
                raise InputError(None, unknown_key_message(raw_key, method)) from None
            out.append((f"trainer.{field_name}", value))
            continue
        if head not in top:
            raise InputError(None, unknown_key_message(raw_key, method))
        value = True if text is None else parse_override_value(text)
        if key == "data.sources" and isinstance(value, str):
            value = [value]  # --dataset_name X: train on that one dataset
        out.append((key, value))
    return out


def unknown_key_message(key: str, method: str) -> str:
    known = sorted(_recipe_top_keys(method) | set(TRL_ALIASES) | set(recipe_option_names(method)))
    with contextlib.suppress(ImportError):  # trl missing: the recipe keys alone
        known += [a.dest for a in _trainer_parser(method)._actions if a.dest != "help"]
    close = difflib.get_close_matches(key.replace("-", "_"), known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else ""
    return f"--{key}: not a recipe key, trl argument name or {method.upper()}Config argument{hint}"


def recipe_option_names(method: str) -> list[str]:
    """Every dotted recipe key (``model.dtype``, ``lora.r``, ...) and top-level field, for help and hints."""
    from affectllm.training.config import RECIPES

    names: list[str] = []
    for f in dataclasses.fields(RECIPES[method]):
        if not f.init or f.name in ("trainer",):
            continue
        section = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if dataclasses.is_dataclass(section):
            names += [f"{f.name}.{sub.name}" for sub in dataclasses.fields(section) if sub.init]
        else:
            names.append(f.name)
    return names


def options_help(method: str, with_trainer: bool = True) -> str:
    """The help text listing every override: recipe keys, trl's names, and the trainer arguments."""
    import textwrap

    def block(title: str, names: Sequence[str]) -> str:
        body = textwrap.fill(
            "  ".join(f"--{n}" for n in names), width=100, initial_indent="  ", subsequent_indent="  "
        )
        return f"{title}:\n{body}"

    parts = [
        block("recipe keys (value read as YAML; a bare flag is true)", recipe_option_names(method)),
        block(
            "trl's argument names, mapped onto the recipe",
            [f"{alias}→{key}" for alias, key in TRL_ALIASES.items()],
        ),
    ]
    if with_trainer:
        try:
            parser = _trainer_parser(method)
            names = sorted(
                {a.option_strings[0][2:] for a in parser._actions if a.option_strings and a.dest != "help"}
            )
            parts.append(
                block(
                    f"trainer arguments (trl {method.upper()}Config, converted as trl's CLI does; also --trainer.NAME)",
                    names,
                )
            )
        except ImportError:
            parts.append("trainer arguments: install the 'train' extra (trl) to list them")
    return "\n\n".join(parts)
