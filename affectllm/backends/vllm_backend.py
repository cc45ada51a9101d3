"""vLLM's offline engine: batched generation, LoRA adapters through ``LoRARequest``, JSON-schema constrained
decoding, and images/audio for multimodal backbones. Imported only when chosen (vLLM needs a GPU build, or
the separate CPU build in its own virtual environment)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from affectllm.backends.base import Backend, GenerationConfig, Message, text_only
from affectllm.backends.media_parts import openai_messages
from affectllm.errors import InputError, require

# 1 GiB holds ~55k tokens of Gemma 3 270M's cache: enough for a batch of 16 long prompts.
CPU_DEFAULT_KV_CACHE_BYTES = 1 << 30
# The ranks vLLM's LoRAConfig accepts for max_lora_rank (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class VLLMBackend(Backend):
    """``model``: a model directory or hub id (``None``: the embedded Gemma 3 270M rebuilt for transformers);
    ``adapter``: a PEFT LoRA directory served through ``LoRARequest``; ``max_lora_rank``: the largest adapter
    rank (``None``: the adapter's own rank, rounded up to a size vLLM accepts); ``images``/``audio``: the most
    images/audio items one prompt may carry (0 disables the kind); other keyword arguments
    (``gpu_memory_utilization``, ``max_model_len``, ``dtype``, ``kv_cache_memory_bytes``,
    ``tensor_parallel_size``, ...) go to ``vllm.LLM``.

    On vLLM's CPU build the KV cache is ``CPU_DEFAULT_KV_CACHE_BYTES`` unless ``VLLM_CPU_KVCACHE_SPACE`` (GiB)
    or ``kv_cache_memory_bytes`` says otherwise: left to itself the CPU engine sizes it from the machine's
    total memory and takes most of what is free, which a shared machine cannot give."""

    name = "vllm"

    def __init__(
        self,
        model: str | Path | None = None,
        adapter: str | Path | None = None,
        max_lora_rank: int | None = None,
        images: int = 0,
        audio: int = 0,
        chat_template: str | None = None,
        seed: int = 0,
        trust_remote_code: bool = False,
        **engine_options: Any,
    ) -> None:
        from affectllm import models

        # vLLM logs to stdout unless told otherwise, where chat/predict print answers and JSON records; set
        # before the import, which configures its logging (its engine processes inherit the variable).
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        vllm = require("vllm", "vllm", "The vLLM backend")
        self._vllm = vllm
        if models.is_default_model(model) and adapter is None:
            adapter = models.default_adapter("vllm")
        if adapter is not None and str(adapter).lower() in ("none", ""):
            adapter = None
        path = models.resolve_model("vllm", None if model is None else str(model))
        self.model_id = path
        self.adapter = None if adapter is None else str(adapter)
        if self.adapter and not Path(self.adapter, "adapter_config.json").is_file():
            raise InputError(self.adapter, "not a PEFT LoRA adapter directory (no adapter_config.json)")
        # Options other backends take that vLLM's engine does not.
        for key in ("base_url", "api_key_env", "device", "load_in_4bit", "batch_size", "n_ctx", "n_threads"):
            engine_options.pop(key, None)
        kwargs: dict[str, Any] = {"model": path, "seed": int(seed), "trust_remote_code": trust_remote_code}
        if self.adapter:
            # vLLM sizes its LoRA buffers by max_lora_rank, so ask for the adapter's rank, not a worst case.
            rank = int(max_lora_rank) if max_lora_rank else vllm_lora_rank(Path(self.adapter))
            kwargs.update(enable_lora=True, max_lora_rank=rank, max_loras=1)
        cpu_kv_unset = "kv_cache_memory_bytes" not in engine_options and not os.environ.get(
            "VLLM_CPU_KVCACHE_SPACE"
        )
        if cpu_kv_unset and _on_cpu():
            kwargs["kv_cache_memory_bytes"] = CPU_DEFAULT_KV_CACHE_BYTES
        limits = {k: int(v) for k, v in (("image", images), ("audio", audio)) if v}
        if limits:
            kwargs["limit_mm_per_prompt"] = limits
        kwargs.update(engine_options)
        self.llm = vllm.LLM(**kwargs)
        self.supports_images = bool(images)
        self.supports_audio = bool(audio)
        self.chat_template = chat_template
        self._lora = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest(Path(self.adapter).name or "adapter", 1, self.adapter)

    def sampling_params(self, config: GenerationConfig) -> Any:
        kwargs: dict[str, Any] = {
            "max_tokens": config.max_new_tokens,
            "temperature": max(0.0, config.temperature),
            "top_p": config.top_p,
            "stop": list(config.stop) or None,
            "seed": config.seed,
        }
        if config.top_k:
            kwargs["top_k"] = config.top_k
        if config.repetition_penalty:
            kwargs["repetition_penalty"] = config.repetition_penalty
        if config.json_schema:
            kwargs.update(_structured_json(config.json_schema))
        return self._vllm.SamplingParams(**kwargs)

    def generate(self, batch: Sequence[Sequence[Message]], config: GenerationConfig) -> list[str]:
        conversations = [openai_messages(m, self.supports_images, self.supports_audio) for m in batch]
        outputs = self.llm.chat(
            conversations,
            sampling_params=self.sampling_params(config),
            lora_request=self._lora,
            chat_template=self.chat_template,
            add_generation_prompt=True,
            use_tqdm=False,
        )
        return [o.outputs[0].text for o in outputs]

    # ---------------------------------------------------------------- likelihood scoring (affectllm.choice)
    # Written against vLLM's documented offline API (``LLM.generate`` with ``{"prompt_token_ids": ...}`` prompts,
    # ``SamplingParams(prompt_logprobs=k)`` giving ``RequestOutput.prompt_logprobs``: one ``{token_id: Logprob}``
    # per prompt token, ``None`` first); it cannot run on the CPU machines the tests use.

    def prompt_text(self, messages: Sequence[Message]) -> str:
        from affectllm.prompting import build_prompt_text

        tokenizer = self.llm.get_tokenizer()
        plain = text_only(messages)
        if self.chat_template:
            return tokenizer.apply_chat_template(
                plain, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
            )
        return build_prompt_text(plain, tokenizer if getattr(tokenizer, "chat_template", None) else None)

    def _prompt(self, text: str) -> dict[str, list[int]]:
        # Token ids, so no engine adds a second BOS to a template that writes one (the plain fallback has none).
        tokenizer = self.llm.get_tokenizer()
        templated = bool(self.chat_template or getattr(tokenizer, "chat_template", None))
        return {"prompt_token_ids": list(tokenizer.encode(text, add_special_tokens=not templated))}

    def complete(self, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
        outputs = self.llm.generate(
            [self._prompt(p) for p in prompts],
            sampling_params=self.sampling_params(config),
            lora_request=self._lora,
            use_tqdm=False,
        )
        return [o.outputs[0].text for o in outputs]

    def continuation_logprobs(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[list[float]]]:
        """All prompt x continuation sequences in one ``generate`` call with prompt log-probabilities
        (vLLM's prefix cache shares the prompt's KV blocks between a prompt's candidates where it can)."""
        tokenizer = self.llm.get_tokenizer()
        candidates = [list(tokenizer.encode(c, add_special_tokens=False)) for c in continuations]
        if any(not ids for ids in candidates):
            raise ValueError("a continuation to score has no tokens")
        requests, spans = [], []
        for prompt in prompts:
            ids = self._prompt(prompt)["prompt_token_ids"]
            for candidate in candidates:
                requests.append({"prompt_token_ids": ids + candidate})
                spans.append((len(ids), candidate))
        # prompt_logprobs=1: each position's entry holds the actual prompt token besides the top one.
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outputs = self.llm.generate(requests, sampling_params=params, lora_request=self._lora, use_tqdm=False)
        flat = [
            [float(out.prompt_logprobs[start + j][token].logprob) for j, token in enumerate(candidate)]
            for out, (start, candidate) in zip(outputs, spans, strict=True)
        ]
        n = len(continuations)
        return [flat[i : i + n] for i in range(0, len(flat), n)]

    def close(self) -> None:
        # The engine core runs in its own process: stop it now rather than whenever the LLM is collected.
        engine = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if engine is not None and hasattr(engine, "shutdown"):
            engine.shutdown()
        self.llm = None
        try:
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _structured_json(schema: dict[str, Any]) -> dict[str, Any]:
    """SamplingParams arguments that constrain output to ``schema``, for the installed vLLM version:
    ``structured_outputs=StructuredOutputsParams(json=...)`` (v0.11+; the only form since v0.12), else the
    older ``guided_decoding=GuidedDecodingParams(json=...)``."""
    try:
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}


def vllm_lora_rank(adapter: Path) -> int:
    """The adapter's rank (``r`` in ``adapter_config.json``, or the largest in its ``rank_pattern``), rounded
    up to the next rank vLLM accepts as ``max_lora_rank``."""
    config_path = adapter / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(config_path, f"not a readable PEFT adapter config ({exc})") from None
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    ranks = [int(r) for r in ranks if isinstance(r, (int, float)) and r > 0]
    if not ranks:
        raise InputError(config_path, "no LoRA rank ('r') in the adapter config")
    wanted = max(ranks)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= wanted:
            return allowed
    raise InputError(
        config_path, f"LoRA rank {wanted} is above the largest vLLM serves ({VLLM_LORA_RANKS[-1]})"
    )


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())
