"""What SFT and GRPO share: loading the base model and tokenizer, LoRA wrapping, resuming, the model card.

The base model is loaded here (not by trl from a name) so the LoRA targets can be computed from the real module
tree — for multimodal backbones only the language model's linear layers are adapted — and so GRPO can continue
training an SFT adapter instead of stacking a second one.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectllm.errors import InputError, require

log = logging.getLogger(__name__)

# Module-name fragments of non-language towers in multimodal backbones (Qwen2.5-VL "visual", LLaVA/Gemma 3
# "vision_tower" + "multi_modal_projector", Qwen2.5-Omni "audio_tower" and the speech "talker"/"token2wav").
_NON_LANGUAGE_PARTS = ("visual", "vision", "audio", "projector", "talker", "token2wav", "speech", "image")


@dataclass
class TrainResult:
    """Where a run left its adapter, and what it measured."""

    output_dir: Path
    adapter_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    global_step: int = 0
    data: dict[str, Any] = field(default_factory=dict)


def resolve_model_path(name_or_path: str) -> str:
    """A local directory or hub id; ``"embedded"`` is the embedded Gemma 3 270M rebuilt as an HF model."""
    from affectllm.training.config import EMBEDDED_MODEL

    if name_or_path == EMBEDDED_MODEL:
        from affectllm.models import ensure_gemma_hf

        return str(ensure_gemma_hf())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(path, "not a model directory (no config.json)")
        return str(path)
    return name_or_path


def is_main_process() -> bool:
    """Rank 0 of an ``accelerate launch`` / torchrun job (or a single process): the one that writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def torch_dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise InputError(None, f"model.dtype must be auto, float32, bfloat16 or float16, not {name!r}")
    return table[name]


def model_kind(path: str, kind: str = "auto", trust_remote_code: bool = False) -> str:
    """``"causal_lm"`` or ``"image_text_to_text"`` (a backbone with vision/audio towers)."""
    if kind != "auto":
        if kind not in ("causal_lm", "image_text_to_text"):
            raise InputError(None, f"model.kind must be auto, causal_lm or image_text_to_text, not {kind!r}")
        return kind
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    towers = ("vision_config", "audio_config", "thinker_config")
    return "image_text_to_text" if any(getattr(config, t, None) is not None for t in towers) else "causal_lm"


def load_tokenizer(path: str, chat_template_path: str | None = None, trust_remote_code: bool = False):
    """The text tokenizer, with a chat template (from the processor of a multimodal backbone if needed)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if chat_template_path:
        template = Path(chat_template_path).expanduser()
        if not template.is_file():
            raise InputError(template, "chat template file not found")
        tokenizer.chat_template = template.read_text(encoding="utf-8")
    if not getattr(tokenizer, "chat_template", None):
        try:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
            tokenizer.chat_template = getattr(processor, "chat_template", None)
        except (OSError, ValueError, TypeError):
            pass
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(path, "the tokenizer has no chat template; set model.chat_template_path")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(model_args: Any, training: bool = True):
    """The base model as the recipe asks (dtype, 4-bit QLoRA on a GPU, multimodal class)."""
    import torch

    path = resolve_model_path(model_args.name_or_path)
    kind = model_kind(path, model_args.kind, model_args.trust_remote_code)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(model_args.dtype)}
    if model_args.trust_remote_code:
        kwargs["trust_remote_code"] = True
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.load_in_4bit:
        if not torch.cuda.is_available():
            raise InputError(None, "model.load_in_4bit (QLoRA) needs a CUDA GPU; use plain LoRA on a CPU")
        require("bitsandbytes", "qlora", "QLoRA (model.load_in_4bit)")
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["dtype"] = compute
        # Each process of a multi-GPU run holds its own quantized copy on its own device.
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    dense_config = _without_gguf_note(path, model_args.trust_remote_code)
    if dense_config is not None:
        kwargs["config"] = dense_config
    if kind == "causal_lm":
        from transformers import AutoModelForCausalLM as auto_cls
    else:
        from transformers import AutoModelForImageTextToText as auto_cls
    model = auto_cls.from_pretrained(path, **kwargs)
    if model_args.load_in_4bit and training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return model, path, kind


def _without_gguf_note(path: str, trust_remote_code: bool):
    """The config without a leftover GGUF ``quantization_config``, or None when there is none.

    A model de-quantized from a GGUF and saved as plain safetensors can keep the GGUF loader's note in its
    config; transformers then treats the dense weights as GGUF-quantized and refuses to train them.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    note = getattr(config, "quantization_config", None)
    method = note.get("quant_method") if isinstance(note, dict) else getattr(note, "quant_method", None)
    if note is None or "gguf" not in str(method).lower():
        return None
    if any(Path(path).glob("*.gguf")) or not any(Path(path).glob("*.safetensors")):
        return None  # really a GGUF checkpoint: leave it to transformers (and its refusal to train it)
    del config.quantization_config
    return config


def _is_linear(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def _is_language_module(name: str) -> bool:
    parts = name.lower().split(".")
    return "layers" in parts and not any(tag in part for part in parts for tag in _NON_LANGUAGE_PARTS)


def lora_target_modules(model: Any, lora: Any, multimodal: bool) -> list[str]:
    """Full names of the linear layers to adapt: the configured leaf names (or every linear layer), never
    the output head, and for multimodal backbones (``lora.language_only``) only decoder-layer modules outside
    the vision/audio towers."""
    wanted = None if lora.target_modules == "all-linear" else set(lora.target_modules)
    language_only = multimodal and lora.language_only
    names = []
    for name, module in model.named_modules():
        if not name or not _is_linear(module):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("lm_head", "embed_out", "output") or "lm_head" in name:
            continue
        if wanted is not None and leaf not in wanted:
            continue
        if language_only and not _is_language_module(name):
            continue
        names.append(name)
    if not names:
        raise InputError(
            None,
            f"lora.target_modules {lora.target_modules!r} matches no linear layer of the model"
            + (" inside its language model" if language_only else ""),
        )
    return names


def wrap_lora(model: Any, recipe: Any, kind: str, gradient_checkpointing: bool):
    """Attach a fresh LoRA, or reopen ``recipe.init_adapter`` as trainable (GRPO after SFT keeps one adapter)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if gradient_checkpointing:
        # Frozen embeddings give checkpointed blocks no input that requires grad; LoRA would get none either.
        model.enable_input_require_grads()
    if recipe.init_adapter:
        adapter = Path(recipe.init_adapter).expanduser()
        if not (adapter / "adapter_config.json").is_file():
            raise InputError(adapter, "init_adapter is not a PEFT adapter folder (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        rank = model.peft_config["default"].r
        if recipe.lora.enabled and rank != recipe.lora.r:
            # The recipe's lora section shapes a fresh adapter only; say so rather than let r look ignored.
            log.info(
                "init_adapter %s continues at its own rank %d (lora.r %d is for a fresh adapter)",
                adapter,
                rank,
                recipe.lora.r,
            )
        return model
    if not recipe.lora.enabled:
        return model
    config = LoraConfig(
        r=recipe.lora.r,
        lora_alpha=recipe.lora.alpha,
        lora_dropout=recipe.lora.dropout,
        target_modules=lora_target_modules(model, recipe.lora, kind != "causal_lm"),
        modules_to_save=list(recipe.lora.modules_to_save) or None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def resolve_resume(resume: bool | str, output_dir: Path) -> str | None:
    """The checkpoint to resume from: ``"auto"``/true → the newest in ``output_dir`` (None if there is none),
    a path → that checkpoint, false → None."""
    if resume is False or (isinstance(resume, str) and resume.lower() in ("false", "no", "none", "")):
        return None
    if resume is True or resume == "auto":
        if not output_dir.is_dir():
            return None
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(str(output_dir))
    path = Path(str(resume)).expanduser()
    if not path.is_dir():
        raise InputError(path, "resume checkpoint not found")
    return str(path)


def trainer_defaults(recipe: Any) -> dict[str, Any]:
    """trl arguments the recipe did not set, chosen for the machine it runs on."""
    gpu = cuda_available()
    defaults: dict[str, Any] = {
        "report_to": "none",
        "save_strategy": "steps",
        "save_steps": 100,
        "save_total_limit": 2,
        "logging_steps": 10,
        "seed": recipe.data.seed,
        # bf16 autocast on a CPU is slower than fp32 for small models; trl defaults it on.
        "bf16": bool(gpu and recipe.model.dtype != "float32"),
        # Checkpointing trades ~20% speed for memory: worth it on GPUs with 7B models, not for 270M on a CPU.
        "gradient_checkpointing": gpu,
        "dataloader_num_workers": 0,
        # Every LoRA weight takes part in every forward pass; Trainer's default for a PEFT model (search for
        # unused parameters) walks the autograd graph once more per step in multi-process runs, for nothing.
        "ddp_find_unused_parameters": False,
    }
    if not gpu:
        defaults["use_cpu"] = True
    return {**defaults, **recipe.trainer}


def write_model_card(
    adapter_dir: Path,
    recipe: Any,
    base_model: str,
    result: TrainResult,
    extra_sections: dict[str, str] | None = None,
) -> Path:
    """A README.md model card: what was trained on what, for how long, with which settings."""
    import yaml

    from affectllm import __version__
    from affectllm.training.config import recipe_to_dict

    data = result.data or {}
    kept = data.get("kept", {})
    from affectllm.training.config import EMBEDDED_MODEL

    embedded = recipe.model.name_or_path == EMBEDDED_MODEL
    if embedded:
        base_model = f"{EMBEDDED_BASE_ID} (affectllm's embedded Q4_K_M GGUF, de-quantized)"
    lines = [
        "---",
        f"base_model: {EMBEDDED_BASE_ID if embedded else base_model}",
        "library_name: peft",
        "tags: [affectllm, emotion-recognition, lora, "
        + ("grpo" if recipe.method == "grpo" else "sft")
        + "]",
        "---",
        "",
        f"# affectllm {recipe.method.upper()} LoRA adapter",
        "",
        recipe.description.strip() or "An emotion-reasoning LoRA adapter trained with affectllm.",
        "",
        "## Training",
        f"- method: {recipe.method.upper()} (trl), LoRA r={recipe.lora.r}, alpha={recipe.lora.alpha}",
        f"- base model: `{base_model}`"
        + (f", starting from adapter `{recipe.init_adapter}`" if recipe.init_adapter else ""),
        f"- optimizer steps: {result.global_step}; wall time: {result.wall_time_s / 60:.1f} min",
        f"- machine: {platform.machine()} {'GPU' if cuda_available() else 'CPU'}, affectllm {__version__}",
        f"- finished: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "## Data (training splits only; evaluation ids held out)",
    ]
    for source, n in sorted(kept.items()):
        lines.append(f"- {source}: {n} rows")
    for key, title in (
        ("dropped_holdout", "held out (evaluation ids)"),
        ("dropped_long", "dropped as too long"),
        ("dropped_unusable", "dropped (no usable gold/clip)"),
    ):
        if data.get(key):
            lines.append(f"- {title}: " + ", ".join(f"{k} {v}" for k, v in sorted(data[key].items())))
    if result.metrics:
        lines += ["", "## Final training metrics", "```json", json.dumps(result.metrics, indent=2), "```"]
    for title, body in (extra_sections or {}).items():
        lines += ["", f"## {title}", body]
    lines += [
        "",
        "## Use",
        "```",
        f"affectllm chat CLIP 'How does the speaker feel?' --adapter {adapter_dir}",
        "```",
        "",
        "## Recipe",
        "```yaml",
        yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False).strip(),
        "```",
        "",
    ]
    path = adapter_dir / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# What adapter_config.json names as the base when the embedded model was trained: its upstream id rather than
# a path inside this machine's cache (the weights are that model's Q4_K_M GGUF, de-quantized).
EMBEDDED_BASE_ID = "google/gemma-3-270m"
EMBEDDED_BASE_ALIAS = "embedded"  # == affectllm.training.config.EMBEDDED_MODEL


def _portable_base_name(adapter_dir: Path, recipe: Any) -> None:
    from affectllm.training.config import EMBEDDED_MODEL

    path = adapter_dir / "adapter_config.json"
    if recipe.model.name_or_path != EMBEDDED_MODEL or not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = EMBEDDED_BASE_ID
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_run(trainer: Any, recipe: Any, base_model: str, result: TrainResult) -> None:
    """Save the adapter, tokenizer, resolved recipe, summary and model card into ``result.adapter_dir``."""
    from affectllm.training.config import dump_recipe

    adapter_dir = result.adapter_dir
    adapter_dir.mkdir(parents=True, exist_ok=True)
    # Every rank takes part in save_model (sharded states are gathered); only rank 0 writes the rest.
    trainer.save_model(str(adapter_dir))
    # Trainer pickles its arguments beside the weights; the shipped adapter carries none (recipe.yaml says
    # the same in plain text). Checkpoints keep theirs for resuming.
    (adapter_dir / "training_args.bin").unlink(missing_ok=True)
    if not trainer.is_world_process_zero():
        return
    _portable_base_name(adapter_dir, recipe)
    if recipe.model.name_or_path == EMBEDDED_BASE_ALIAS:
        base_model = EMBEDDED_BASE_ID  # not this machine's cache path
    dump_recipe(recipe, adapter_dir / "recipe.yaml")
    summary = {
        "method": recipe.method,
        "base_model": base_model,
        "global_step": result.global_step,
        "wall_time_s": round(result.wall_time_s, 1),
        "metrics": result.metrics,
        "data": result.data,
    }
    (adapter_dir / "training_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    write_model_card(adapter_dir, recipe, base_model, result)


class WallClock:
    """Training wall time summed over resumed segments (kept in ``output_dir/wall_time.json`` at each save),
    so the model card of a run interrupted and resumed reports its whole cost. With ``limit_s`` it also ends
    training at the first step past that total, saving a checkpoint (the recipe's ``max_wall_minutes``)."""

    def __init__(self, output_dir: Path, resuming: bool, limit_s: float | None = None) -> None:
        import time

        self.limit_s = limit_s
        self.stopped_early = False
        self.path = output_dir / "wall_time.json"
        self.prior = 0.0
        if resuming and self.path.is_file():
            try:
                self.prior = float(json.loads(self.path.read_text(encoding="utf-8"))["seconds"])
            except (ValueError, KeyError, TypeError):
                self.prior = 0.0
        self.start = time.perf_counter()

    def total(self) -> float:
        import time

        return self.prior + time.perf_counter() - self.start

    def save(self) -> None:
        self.path.write_text(json.dumps({"seconds": round(self.total(), 1)}), encoding="utf-8")

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class _SaveWallTime(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if clock.limit_s is None:
                    return
                # All processes must stop at the same step, or the ones still training wait forever in the
                # next gradient all-reduce: stop when any process's clock has passed the limit.
                if _on_any_process(clock.total() >= clock.limit_s, args.device):
                    clock.stopped_early = True
                    control.should_training_stop = True
                    control.should_save = True

            def on_save(self, args, state, control, **kwargs):
                if state.is_world_process_zero:
                    clock.save()

        return _SaveWallTime()


def _on_any_process(flag: bool, device: Any) -> bool:
    """``flag`` OR-ed over the processes of a distributed run (one tiny all-reduce); ``flag`` itself otherwise."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def end_distributed() -> None:
    """Leave a multi-process run together: each process waits for the others, then the process group is torn
    down. A process that exits while another still holds the group open is aborted by gloo at exit
    ("terminate called without an active exception"), which fails the launch after a finished run."""
    try:
        import torch.distributed as dist
    except ImportError:  # a dry run without torch never started a process group
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def dataset_from_rows(rows: list[dict[str, Any]]):
    """A ``datasets.Dataset`` from built rows (an error naming the cause when a recipe yields nothing)."""
    if not rows:
        raise InputError(None, "the recipe's data sources produced no training rows (see the build report)")
    from datasets import Dataset

    return Dataset.from_list(rows)


def log_history_metrics(trainer: Any) -> dict[str, Any]:
    """The last logged training values (loss, rewards, ...) plus trl's final train summary."""
    merged: dict[str, Any] = {}
    for entry in trainer.state.log_history:
        merged.update({k: v for k, v in entry.items() if isinstance(v, (int, float))})
    return merged


# ------------------------------------------------------------------------------------ shared by SFT and GRPO


def save_rows(rows: list[dict[str, Any]], data: dict[str, Any], output_dir: Path, kind: str) -> None:
    """Log what the data builder kept and dropped, and write the rows (``train_rows.jsonl``, main process
    only) so a user can inspect exactly what a recipe trains on, dry run or not."""
    from affectllm.training.data import write_rows

    log.info("%s rows: %s", kind, data)
    if is_main_process():
        write_rows(rows, output_dir / "train_rows.jsonl")


def load_lora_model(recipe: Any, args: dict[str, Any]) -> tuple[Any, str]:
    """The recipe's base model wrapped with its LoRA config, and the resolved base path for the card."""
    model, base, kind = load_base_model(recipe.model)
    return wrap_lora(model, recipe, kind, bool(args.get("gradient_checkpointing"))), base


def train_and_save(
    trainer: Any, recipe: Any, base: str, output_dir: Path, data: dict[str, Any]
) -> TrainResult:
    """Train (resuming from the newest checkpoint when the recipe says so), keep the wall time across
    resumed runs, and save the adapter with its model card."""
    resume = resolve_resume(recipe.resume, output_dir)
    if resume:
        log.info("resuming from %s", resume)
    limit_s = recipe.max_wall_minutes * 60 if recipe.max_wall_minutes else None
    clock = WallClock(output_dir, resuming=bool(resume), limit_s=limit_s)
    trainer.add_callback(clock.callback())
    train_output = trainer.train(resume_from_checkpoint=resume)
    if is_main_process():
        clock.save()
    if clock.stopped_early:
        log.info("stopped at step %d: the recipe's max_wall_minutes was reached", trainer.state.global_step)
    result = TrainResult(
        output_dir=output_dir,
        adapter_dir=output_dir,
        metrics={**log_history_metrics(trainer), **dict(train_output.metrics)},
        wall_time_s=clock.total(),
        global_step=int(trainer.state.global_step),
        data=data,
    )
    save_run(trainer, recipe, base, result)
    return result
