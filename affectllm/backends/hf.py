"""transformers backend: any causal LM (directory or hub id), a PEFT LoRA adapter, 4-bit on CUDA, batched
generation with left padding, streaming, and vision/audio-language models through their processor."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from affectllm.backends.base import (
    Backend,
    GenerationConfig,
    Message,
    StopTrimmer,
    apply_stops,
    text_only,
)
from affectllm.errors import InputError, require


def continuation_token_logprobs(
    model: Any, prompt_ids: Sequence[int], candidates: Sequence[Sequence[int]], pad_id: int = 0
) -> list[Any]:
    """Each candidate's per-token log-probabilities (a 1-D tensor per candidate) after ``prompt_ids``.

    One forward over the prompt, then one batched forward over every candidate on the prompt's KV cache
    (repeated once per candidate). Logits are kept only where a candidate token is predicted: a full-vocabulary
    row for each prompt position (262k columns for Gemma) would dwarf the rest of the work. Ranked decoding
    calls it under ``inference_mode``; candidate-set GRPO (``affectllm.training.ranked_grpo``) calls it with
    gradients, so training and decoding score a word the same way.
    """
    import inspect

    import torch

    device = model.device
    head = model(input_ids=torch.tensor([list(prompt_ids)], device=device), use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(head.logits[0, -1].float(), dim=-1)
    if max(len(ids) for ids in candidates) == 1:
        return [first[ids[0]].reshape(1) for ids in candidates]
    # transformers 5.x names the KV cache ``cache`` (``past_key_values`` before).
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    key = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    cache = getattr(head, key, None) or head.past_key_values
    cache.batch_repeat_interleave(len(candidates))
    # Each candidate's last token predicts nothing that is scored, so it is not fed. Right padding: causal
    # attention never lets a real token see the pads that follow it, so no mask is needed.
    longest = max(len(ids) for ids in candidates)
    fed = torch.tensor(
        [list(ids[:-1]) + [pad_id] * (longest - len(ids)) for ids in candidates], device=device
    )
    rest = model(input_ids=fed, use_cache=True, logits_to_keep=0, **{key: cache})
    logprobs = torch.log_softmax(rest.logits.float(), dim=-1)
    out = []
    for row, ids in enumerate(candidates):
        later = [logprobs[row, j - 1, ids[j]] for j in range(1, len(ids))]
        out.append(torch.stack([first[ids[0]], *later]))
    return out


def _is_multimodal_config(config: Any) -> bool:
    return any(getattr(config, key, None) is not None for key in ("vision_config", "audio_config"))


class TransformersBackend(Backend):
    """A model loaded with transformers.

    ``model``: a directory or hub id (``None``: the embedded Gemma 3 270M, rebuilt once from its GGUF);
    ``adapter``: a PEFT LoRA directory (``None`` with the embedded model: the shipped adapter if there is one;
    ``"none"``: no adapter); ``load_in_4bit``: bitsandbytes NF4 when CUDA is present; ``device``: ``"cpu"``,
    ``"cuda"``, ... (default: CUDA when available); ``chat_template``: overrides the tokenizer's template.
    """

    name = "transformers"
    cites_by_likelihood = True

    def __init__(
        self,
        model: str | Path | None = None,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        load_in_4bit: bool = False,
        trust_remote_code: bool = False,
        chat_template: str | None = None,
        batch_size: int = 8,
        merge_adapter: bool = False,
    ) -> None:
        from affectllm import models

        torch = require("torch", "transformers", "The transformers backend")
        transformers = require("transformers", "transformers", "The transformers backend")
        self._torch = torch
        if models.is_default_model(model) and adapter is None:
            adapter = models.default_adapter("transformers")
        if adapter is not None and str(adapter).lower() in ("none", ""):
            adapter = None
        path = models.resolve_model("transformers", None if model is None else str(model))
        self.model_id = path
        self.adapter = None if adapter is None else str(adapter)
        self.batch_size = max(1, int(batch_size))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            # float32 on CPU: bf16 matmuls are slower than fp32 on most CPUs, and 270M fits easily.
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        torch_dtype = getattr(torch, dtype)

        try:
            config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"not a transformers model directory or hub id: {exc}") from exc
        self.multimodal = _is_multimodal_config(config)

        load_kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
        if load_in_4bit:
            if not torch.cuda.is_available():
                raise ValueError("4-bit loading (bitsandbytes) needs a CUDA GPU; drop --load-in-4bit on CPU")
            require("bitsandbytes", "qlora", "4-bit loading")
            load_kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16,
                bnb_4bit_use_double_quant=True,
            )
            load_kwargs["device_map"] = {"": self.device if ":" in self.device else 0}

        if self.multimodal:
            self.processor = transformers.AutoProcessor.from_pretrained(
                path, trust_remote_code=trust_remote_code
            )
            self.tokenizer = self.processor.tokenizer
            auto = getattr(transformers, "AutoModelForImageTextToText", None)
            if auto is None or type(config) not in auto._model_mapping:
                auto = transformers.AutoModelForCausalLM
            model_obj = auto.from_pretrained(path, **load_kwargs)
            self.supports_images = hasattr(config, "vision_config") and config.vision_config is not None
            self.supports_audio = getattr(config, "audio_config", None) is not None
        else:
            self.processor = None
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                path, trust_remote_code=trust_remote_code
            )
            model_obj = transformers.AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
        if chat_template:
            self.tokenizer.chat_template = chat_template
            if self.processor is not None:
                self.processor.chat_template = chat_template
        # Left padding: in a batch every prompt must end where generation starts.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

        if self.adapter:
            peft = require("peft", "transformers", "Loading a LoRA adapter")
            if not Path(self.adapter, "adapter_config.json").is_file() and Path(self.adapter).exists():
                raise InputError(self.adapter, "not a PEFT adapter directory (no adapter_config.json)")
            model_obj = peft.PeftModel.from_pretrained(model_obj, self.adapter)
            if merge_adapter:
                model_obj = model_obj.merge_and_unload()
        if "device_map" not in load_kwargs:
            model_obj = model_obj.to(self.device)
        model_obj.eval()
        self.model = model_obj
        self._eos_ids = self._end_token_ids()

    # ------------------------------------------------------------------------------------------- helpers

    def _end_token_ids(self) -> list[int]:
        from affectllm.models import TURN_END_TOKENS

        ids: set[int] = set()
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in (gen_eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[t] for t in TURN_END_TOKENS if t in vocab)
        return sorted(ids)

    @property
    def has_chat_template(self) -> bool:
        holder = self.processor if self.processor is not None else self.tokenizer
        return bool(getattr(holder, "chat_template", None) or getattr(self.tokenizer, "chat_template", None))

    def prompt_text(self, messages: Sequence[Message]) -> str:
        """The exact prompt string this backend feeds the model (chat template or the plain fallback)."""
        from affectllm.prompting import build_prompt_text

        return build_prompt_text(text_only(messages), self.tokenizer if self.has_chat_template else None)

    def _encode_text(self, batch: Sequence[Sequence[Message]]) -> dict[str, Any]:
        prompts = [self.prompt_text(m) for m in batch]
        # A chat template writes its own BOS; the plain fallback needs the tokenizer to add it.
        enc = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=not self.has_chat_template
        )
        return dict(enc)

    def _encode_multimodal(self, batch: Sequence[Sequence[Message]]) -> dict[str, Any]:
        import inspect

        convs = [_processor_messages(m, self.supports_images, self.supports_audio) for m in batch]
        extra: dict[str, Any] = {"padding": True}
        # transformers 5 takes processor arguments in ``processor_kwargs``; 4.x took them as keywords.
        if "processor_kwargs" in inspect.signature(self.processor.apply_chat_template).parameters:
            extra = {"processor_kwargs": extra}
        enc = self.processor.apply_chat_template(
            convs,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            **extra,
        )
        return dict(enc)

    def _encode(self, batch: Sequence[Sequence[Message]]) -> dict[str, Any]:
        if self.processor is not None and self.has_chat_template:
            enc = self._encode_multimodal(batch)
        else:
            # A text-only backbone gets the cue text alone (prompt_text drops image/audio parts).
            enc = self._encode_text(batch)
        return {k: (v.to(self.model.device) if hasattr(v, "to") else v) for k, v in enc.items()}

    def _generate_kwargs(self, config: GenerationConfig) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": config.max_new_tokens,
            "eos_token_id": self._eos_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if config.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
            kwargs["top_k"] = config.top_k if config.top_k else None
        if config.repetition_penalty:
            kwargs["repetition_penalty"] = config.repetition_penalty
        if config.stop:
            # transformers matches stop strings on decoded tokens; the text is cut at the stop below.
            kwargs["stop_strings"] = list(config.stop)
            kwargs["tokenizer"] = self.tokenizer
        return kwargs

    def _seed(self, config: GenerationConfig) -> None:
        if config.seed is not None and not config.greedy:
            self._torch.manual_seed(int(config.seed))

    # ----------------------------------------------------------------------------------------- interface

    def generate(self, batch: Sequence[Sequence[Message]], config: GenerationConfig) -> list[str]:
        return self._generate_chunks(batch, self._encode, config)

    def _generate_chunks(self, items: Sequence[Any], encode: Any, config: GenerationConfig) -> list[str]:
        outputs: list[str] = []
        self._seed(config)
        for start in range(0, len(items), self.batch_size):
            enc = encode(items[start : start + self.batch_size])
            with self._torch.inference_mode():
                out = self.model.generate(**enc, **self._generate_kwargs(config))
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            for row in new_tokens:
                text = self.tokenizer.decode(row, skip_special_tokens=True)
                outputs.append(apply_stops(text, config.stop))
        return outputs

    # ------------------------------------------------------------------------------ likelihood scoring

    def _prompt_ids(self, prompt: str) -> list[int]:
        # As in generation: a chat template writes its own BOS, the plain fallback needs the tokenizer's.
        return list(self.tokenizer(prompt, add_special_tokens=not self.has_chat_template)["input_ids"])

    def complete(self, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
        def encode(chunk: Sequence[str]) -> dict[str, Any]:
            enc = self.tokenizer(
                list(chunk), return_tensors="pt", padding=True, add_special_tokens=not self.has_chat_template
            )
            return {k: v.to(self.model.device) for k, v in enc.items()}

        return self._generate_chunks(prompts, encode, config)

    def continuation_logprobs(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[list[float]]]:
        candidates = [list(self.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in continuations]
        if any(not ids for ids in candidates):
            raise ValueError("a continuation to score has no tokens")
        pad = self.tokenizer.pad_token_id or 0
        with self._torch.inference_mode():
            scored = [
                continuation_token_logprobs(self.model, self._prompt_ids(p), candidates, pad_id=pad)
                for p in prompts
            ]
        return [[[float(x) for x in row] for row in per_prompt] for per_prompt in scored]

    def stream(self, messages: Sequence[Message], config: GenerationConfig) -> Iterator[str]:
        transformers = require("transformers", "transformers", "The transformers backend")
        self._seed(config)
        enc = self._encode([messages])
        streamer = transformers.TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        error: list[BaseException] = []

        def run() -> None:
            try:
                with self._torch.inference_mode():
                    self.model.generate(**enc, **self._generate_kwargs(config), streamer=streamer)
            except BaseException as exc:  # surfaced in the caller's thread below
                error.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        trimmer = StopTrimmer(config.stop)
        for piece in streamer:
            out = trimmer.feed(piece)
            if out:
                yield out
            if trimmer.done:
                break
        tail = trimmer.flush()
        if tail:
            yield tail
        thread.join()
        if error:
            raise error[0]

    def close(self) -> None:
        self.model = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()


def _processor_messages(messages: Sequence[Message], images: bool, audio: bool) -> list[Message]:
    """Messages for a processor's chat template: content as a list of parts, dropping the kinds of media the
    model cannot take (a vision-only model gets no audio part)."""
    out: list[Message] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        else:
            parts = []
            for p in content or []:
                kind = p.get("type")
                if kind == "text" or (kind == "image" and images) or (kind == "audio" and audio):
                    parts.append(dict(p))
        out.append({"role": m["role"], "content": parts})
    return out
