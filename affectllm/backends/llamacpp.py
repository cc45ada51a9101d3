"""llama.cpp backend (llama-cpp-python): GGUF models on a CPU, an optional GGUF LoRA adapter, streaming.

The prompt is rendered here, not by llama-cpp-python's chat handlers, so the llama.cpp and transformers paths
feed the model the same text: the GGUF's own chat template when it has one (the embedded Gemma GGUF carries
Gemma's, written in by ``affectllm.models.ensure_gemma_gguf``), else the plain fallback of
``build_prompt_text``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from affectllm.backends.base import Backend, GenerationConfig, Message, text_only
from affectllm.errors import InputError, require


class _Captured:
    """Native stderr output held while a model loads (readable during and after the capture)."""

    def __init__(self) -> None:
        self.file: Any = None
        self.python = io.StringIO()
        self.final: str | None = None

    def text(self) -> str:
        if self.final is not None:
            return self.final
        native = ""
        if self.file is not None:
            self.file.seek(0)
            native = self.file.read().decode("utf-8", "replace")
        return native + self.python.getvalue()


@contextlib.contextmanager
def _native_stderr_captured(enabled: bool = True) -> Iterator[_Captured]:
    """Hold what llama.cpp writes to stderr while a model loads: from C to file descriptor 2, and through
    llama-cpp-python's log callback to ``sys.stderr`` (which tests and notebooks replace).

    llama-cpp-python's ``verbose=False`` misses some of llama.cpp's log lines (the sliding-window KV cache
    notice, one line per LoRA tensor about buffer types), which would land in the middle of a chat. They are
    kept here so a failed load can still quote them.
    """
    captured = _Captured()
    if not enabled:
        yield captured
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): leave stderr alone
        yield captured
        return
    with tempfile.TemporaryFile() as sink, contextlib.redirect_stderr(captured.python):
        captured.file = sink
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.final = captured.text()


class LlamaCppBackend(Backend):
    """``model``: a ``.gguf`` path (``None``: the embedded Gemma 3 270M); ``adapter``: a LoRA adapter in GGUF
    form; ``n_ctx``: context window; ``n_threads``: CPU threads (default: all cores); ``n_gpu_layers``: layers
    offloaded to a GPU build."""

    name = "llamacpp"
    sequential = True
    cites_by_likelihood = True

    def __init__(
        self,
        model: str | Path | None = None,
        adapter: str | Path | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        chat_template: str | None = None,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        from affectllm import models

        llama_cpp = require("llama_cpp", "llamacpp", "The llama.cpp backend")
        if models.is_default_model(model) and adapter is None:
            adapter = models.default_adapter("llamacpp")
        if adapter is not None and str(adapter).lower() in ("none", ""):
            adapter = None
        path = models.resolve_model("llamacpp", None if model is None else str(model))
        if not Path(path).is_file():
            raise InputError(path, "GGUF model file not found")
        if adapter is not None and not Path(adapter).is_file():
            raise InputError(
                adapter, "llama.cpp needs the LoRA adapter as one GGUF file (convert_lora_to_gguf.py)"
            )
        self.model_id = path
        self.adapter = None if adapter is None else str(adapter)
        kwargs: dict[str, Any] = {
            "model_path": path,
            "n_ctx": int(n_ctx),
            "n_threads": n_threads or os.cpu_count(),
            "n_gpu_layers": int(n_gpu_layers),
            "seed": int(seed),
            "verbose": verbose,
        }
        if self.adapter:
            kwargs["lora_path"] = self.adapter
        with _native_stderr_captured(enabled=not verbose) as captured:
            try:
                self.llm = llama_cpp.Llama(**kwargs)
            except ValueError as exc:  # llama-cpp-python reports unreadable models as ValueError
                detail = captured.text().strip().splitlines()[-3:]
                raise InputError(
                    path, f"llama.cpp could not load the model: {exc}" + "".join(f"\n  {d}" for d in detail)
                ) from exc
        self.chat_template = chat_template or self._template_from_metadata()

    def _template_from_metadata(self) -> str | None:
        meta = getattr(self.llm, "metadata", {}) or {}
        return meta.get("tokenizer.chat_template") or None

    def prompt_text(self, messages: Sequence[Message]) -> str:
        """The exact prompt string fed to llama.cpp."""
        from affectllm.prompting import build_prompt_text

        plain = text_only(messages)
        if not self.chat_template:
            return build_prompt_text(plain)
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env.globals["raise_exception"] = raise_exception
        # BOS is added by llama.cpp's tokenizer; rendering it as text too would double it.
        return env.from_string(self.chat_template).render(
            messages=plain, add_generation_prompt=True, bos_token="", eos_token=""
        )

    def _params(self, config: GenerationConfig) -> dict[str, Any]:
        params: dict[str, Any] = {
            "max_tokens": config.max_new_tokens,
            "temperature": max(0.0, config.temperature),
            "top_p": config.top_p,
            "stop": list(config.stop) or None,
        }
        if config.top_k:
            params["top_k"] = config.top_k
        elif config.greedy:
            params["top_k"] = 1
        if config.repetition_penalty:
            params["repeat_penalty"] = config.repetition_penalty
        if config.seed is not None:
            params["seed"] = int(config.seed)
        return params

    def generate(self, batch: Sequence[Sequence[Message]], config: GenerationConfig) -> list[str]:
        # llama-cpp-python decodes one sequence at a time; prompts sharing the few-shot prefix reuse its KV
        # cache between calls (llama.cpp keeps the longest common prefix).
        out = []
        for messages in batch:
            result = self.llm.create_completion(self.prompt_text(messages), **self._params(config))
            out.append(result["choices"][0]["text"])
        return out

    def complete(self, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
        return [self.llm.create_completion(p, **self._params(config))["choices"][0]["text"] for p in prompts]

    def continuation_logprobs(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[list[float]]]:
        """Without ``logits_all`` (which holds n_ctx x vocabulary floats, 262k columns for Gemma): the prompt is
        evaluated once (reusing the KV cache of the longest common prefix with the previous call, as
        ``create_completion`` does), then each candidate one token at a time from the last logits row, and the
        context is cut back to the prompt before the next candidate."""
        candidates = self._candidate_ids(continuations)
        out = []
        for prompt in prompts:
            first = self._eval_prompt(prompt, candidates)
            out.append([self._score_candidate(first, ids) for ids in candidates])
        return out

    def continuation_logprobs_pruned(
        self, prompt: str, continuations: Sequence[str], margin: float
    ) -> list[list[float] | None]:
        """``continuation_logprobs`` for one prompt, except that a continuation is not scored to its end once
        its log-probability falls more than ``margin`` below the best finished one (``None`` in its place).

        Exact for a caller that keeps only continuations within ``margin`` of the best (likelihood decoding
        of open-vocabulary answers): a sum of log-probabilities only falls as tokens are added. Candidates go
        in order of their first token's log-probability, which is free from the prompt's logits row, so the
        best total is known early and most of the rest stop at their first token. Each token scored after the
        first is one single-token evaluation of the model; this saves most of them.
        """
        candidates = self._candidate_ids(continuations)
        first = self._eval_prompt(prompt, candidates)
        out: list[list[float] | None] = [None] * len(candidates)
        best = -math.inf
        for i in sorted(range(len(candidates)), key=lambda k: -float(first[candidates[k][0]])):
            if float(first[candidates[i][0]]) < best - margin:
                break  # this and every later candidate start below the bar
            tokens = self._score_candidate(first, candidates[i], floor=best - margin)
            if tokens is not None:
                out[i] = tokens
                best = max(best, sum(tokens))
        return out

    def _candidate_ids(self, continuations: Sequence[str]) -> list[list[int]]:
        candidates = [
            self.llm.tokenize(c.encode("utf-8"), add_bos=False, special=False) for c in continuations
        ]
        if any(not ids for ids in candidates):
            raise ValueError("a continuation to score has no tokens")
        return candidates

    def _eval_prompt(self, prompt: str, candidates: list[list[int]]) -> Any:
        """Evaluate ``prompt`` (reusing the cached prefix) and return the log-probabilities after it."""
        llm = self.llm
        # Tokenized as create_completion does (BOS added, special tokens parsed), so the cache carries over.
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        if len(ids) + max(len(c) for c in candidates) > llm.n_ctx():
            raise ValueError(f"the prompt ({len(ids)} tokens) and a candidate exceed n_ctx={llm.n_ctx()}")
        # At least the prompt's last token is evaluated again: its logits row is the one needed.
        reused = min(llm.longest_token_prefix(llm._input_ids.tolist(), ids), len(ids) - 1)
        llm.n_tokens = reused
        llm.eval(ids[reused:])
        return self._last_logprobs()

    def _score_candidate(
        self, first: Any, candidate: list[int], floor: float = -math.inf
    ) -> list[float] | None:
        """Token log-probabilities of ``candidate`` after the evaluated prompt (``first``: its logits row);
        ``None`` as soon as their sum falls below ``floor``. The context is cut back to the prompt after."""
        llm = self.llm
        prompt_end = llm.n_tokens  # the evaluated prompt: every candidate starts from it
        tokens = [float(first[candidate[0]])]
        for j in range(1, len(candidate)):
            if sum(tokens) < floor:
                break
            llm.eval([candidate[j - 1]])
            tokens.append(float(self._last_logprobs()[candidate[j]]))
        # eval() removes the KV entries past n_tokens before it decodes, so the next candidate continues from
        # the prompt.
        llm.n_tokens = prompt_end
        return None if sum(tokens) < floor else tokens

    def _last_logprobs(self) -> Any:
        import numpy as np

        n_vocab = self.llm.n_vocab()
        row = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(n_vocab,)).astype(np.float64)
        row -= row.max()
        return row - np.log(np.exp(row).sum())

    def stream(self, messages: Sequence[Message], config: GenerationConfig) -> Iterator[str]:
        for chunk in self.llm.create_completion(
            self.prompt_text(messages), stream=True, **self._params(config)
        ):
            piece = chunk["choices"][0].get("text") or ""
            if piece:
                yield piece

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None and hasattr(llm, "close"):
            llm.close()
        self.llm = None
