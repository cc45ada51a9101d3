"""Any OpenAI-compatible chat endpoint: ``vllm serve``, ``llama_cpp.server``, hosted APIs.

The key is read from an environment variable (never passed on a command line); local servers need none.
Images and audio go as ``image_url`` / ``input_audio`` content parts when the server's model takes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from affectllm.backends.base import Backend, GenerationConfig, Message, apply_stops
from affectllm.backends.media_parts import openai_messages
from affectllm.errors import require

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


class BackendConnectionError(ConnectionError):
    """The endpoint could not be reached or answered with an error; the message says what to check."""


class OpenAIBackend(Backend):
    """``base_url``: the server's ``/v1`` URL (default ``$OPENAI_BASE_URL`` or a local vLLM on port 8000);
    ``model``: the served model name (``None``: the server's first model); ``api_key_env``: the variable
    holding the key; ``images``/``audio``: whether to send media parts; ``json_schema``: ``"auto"`` tries the
    ``response_format`` json_schema and falls back once a server rejects it; ``concurrency``: parallel
    requests for a batch. Messages go to the server as they are, system turn included: rendering them is the
    server's chat template's job (``affectllm serve`` ships Gemma's template inside the embedded GGUF)."""

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        adapter: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        images: bool = False,
        audio: bool = False,
        json_schema: bool | str = "auto",
        concurrency: int = 4,
        chat_template: str | None = None,
    ) -> None:
        openai = require("openai", "openai", "The OpenAI-compatible backend")
        self._openai = openai
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = os.environ.get(api_key_env) if api_key_env else None
        if not key:
            if _is_local(self.base_url):
                key = "EMPTY"  # local servers accept any key; the client library insists on one
            else:
                raise ValueError(
                    f"no API key: set the environment variable {api_key_env} for {self.base_url} "
                    "(or choose another variable with --api-key-env)"
                )
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=key, timeout=timeout, max_retries=max_retries
        )
        self.supports_images = bool(images)
        self.supports_audio = bool(audio)
        self._schema_mode = json_schema
        self.concurrency = max(1, int(concurrency))
        # Only for likelihood scoring (affectllm.choice): the completions endpoint that returns prompt
        # log-probabilities takes raw text, so the served model's chat template must be rendered here.
        self.chat_template = chat_template
        # With vLLM, a LoRA adapter is served under its own model name (--lora-modules NAME=PATH).
        self.model_id = adapter or model or self._first_model()

    def _first_model(self) -> str:
        try:
            models = self.client.models.list()
        except self._openai.APIError as exc:
            raise self._connection_error(exc) from exc
        data = list(getattr(models, "data", []) or [])
        if not data:
            raise BackendConnectionError(f"{self.base_url} serves no models; pass --model NAME")
        return str(data[0].id)

    def _connection_error(self, exc: Exception) -> BackendConnectionError:
        if isinstance(exc, self._openai.APITimeoutError):
            return BackendConnectionError(f"{self.base_url} did not answer in time ({exc}); raise --timeout?")
        if isinstance(exc, self._openai.APIConnectionError):
            return BackendConnectionError(
                f"cannot connect to {self.base_url}: {exc.__cause__ or exc}. Is the server running? "
                "(affectllm serve, vllm serve MODEL, or python -m llama_cpp.server --model FILE.gguf)"
            )
        if isinstance(exc, self._openai.AuthenticationError):
            return BackendConnectionError(f"{self.base_url} rejected the API key: {exc}")
        if isinstance(exc, self._openai.NotFoundError):
            return BackendConnectionError(
                f"{self.base_url}: not found (wrong model name or base URL?): {exc}"
            )
        return BackendConnectionError(f"{self.base_url} answered with an error: {exc}")

    def _request(self, messages: Sequence[Message], config: GenerationConfig, stream: bool) -> dict[str, Any]:
        req: dict[str, Any] = {
            "model": self.model_id,
            "messages": openai_messages(messages, self.supports_images, self.supports_audio),
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "stream": stream,
        }
        # The OpenAI API accepts at most 4 stop strings; the rest are applied to the text afterwards.
        if config.stop:
            req["stop"] = list(config.stop)[:4]
        if config.seed is not None:
            req["seed"] = int(config.seed)
        extra: dict[str, Any] = {}
        if config.top_k:
            extra["top_k"] = config.top_k  # vLLM and llama_cpp.server read it; others ignore unknown fields
        if config.repetition_penalty:
            extra["repetition_penalty"] = config.repetition_penalty
        if extra:
            req["extra_body"] = extra
        if config.json_schema and self._schema_mode:
            req["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": config.json_schema},
            }
        return req

    def _call(self, req: dict[str, Any]) -> Any:
        try:
            return self.client.chat.completions.create(**req)
        except self._openai.BadRequestError as exc:
            if "response_format" in req and self._schema_mode == "auto":
                # Not every server supports json_schema; remember and retry unconstrained.
                self._schema_mode = False
                req = {k: v for k, v in req.items() if k != "response_format"}
                return self._call(req)
            raise self._connection_error(exc) from exc
        except self._openai.APIError as exc:
            raise self._connection_error(exc) from exc

    def _one(self, messages: Sequence[Message], config: GenerationConfig) -> str:
        response = self._call(self._request(messages, config, stream=False))
        text = response.choices[0].message.content or ""
        return apply_stops(text, config.stop)

    def generate(self, batch: Sequence[Sequence[Message]], config: GenerationConfig) -> list[str]:
        if len(batch) <= 1 or self.concurrency == 1:
            return [self._one(m, config) for m in batch]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(batch))) as pool:
            return list(pool.map(lambda m: self._one(m, config), batch))

    def stream(self, messages: Sequence[Message], config: GenerationConfig) -> Iterator[str]:
        from affectllm.backends.base import StopTrimmer

        response = self._call(self._request(messages, config, stream=True))
        trimmer = StopTrimmer(config.stop)
        try:
            for chunk in response:
                if not chunk.choices:
                    continue
                piece = chunk.choices[0].delta.content or ""
                out = trimmer.feed(piece)
                if out:
                    yield out
                if trimmer.done:
                    break
        except self._openai.APIError as exc:
            raise self._connection_error(exc) from exc
        finally:
            close = getattr(response, "close", None)
            if close:
                close()
        tail = trimmer.flush()
        if tail:
            yield tail

    # ------------------------------------------------------------------ likelihood scoring (affectllm.choice)

    def prompt_text(self, messages: Sequence[Message]) -> str:
        from affectllm.backends.base import render_chat_template, scoring_unsupported

        if not self.chat_template:
            raise scoring_unsupported(
                self.name,
                "the server renders its chat template, but prompt log-probabilities come from the completions "
                "endpoint, which takes raw text; pass the served model's template as chat_template",
            )
        return render_chat_template(self.chat_template, messages)

    def complete(self, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
        def one(prompt: str) -> str:
            req: dict[str, Any] = {
                "model": self.model_id,
                "prompt": prompt,
                "max_tokens": config.max_new_tokens,
                "temperature": config.temperature,
                "top_p": config.top_p,
            }
            if config.stop:
                req["stop"] = list(config.stop)[:4]
            if config.seed is not None:
                req["seed"] = int(config.seed)
            try:
                response = self.client.completions.create(**req)
            except self._openai.APIError as exc:
                raise self._connection_error(exc) from exc
            return apply_stops(response.choices[0].text or "", config.stop)

        if len(prompts) <= 1 or self.concurrency == 1:
            return [one(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(one, prompts))

    def continuation_logprobs(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[list[float]]]:
        """Completions requests with ``echo`` and ``logprobs`` for each prompt + continuation (vLLM and
        llama-cpp-python's server answer them; OpenAI documents the fields), one text per request because
        llama-cpp-python's server takes no more. The server tokenizes each text as a whole, so the
        continuation's tokens are found by their character offsets; a token that straddles the prompt's end
        counts for the continuation."""
        from affectllm.backends.base import scoring_unsupported

        def one(prompt: str, continuation: str) -> list[float]:
            text = prompt + continuation
            try:
                # max_tokens=1: servers differ on 0 (llama-cpp-python reads it as "no limit").
                response = self.client.completions.create(
                    model=self.model_id, prompt=text, echo=True, logprobs=1, max_tokens=1, temperature=0.0
                )
            except (self._openai.BadRequestError, self._openai.InternalServerError) as exc:
                raise scoring_unsupported(
                    self.name, f"{self.base_url} refused prompt log-probabilities ({exc})"
                ) from exc
            except self._openai.APIError as exc:
                raise self._connection_error(exc) from exc
            return _echoed_logprobs(response.choices[0], text, len(prompt), self.base_url)

        pairs = [(p, c) for p in prompts for c in continuations]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(pairs))) as pool:
            flat = list(pool.map(lambda pair: one(*pair), pairs))
        n = len(continuations)
        return [flat[i : i + n] for i in range(0, len(flat), n)]

    def close(self) -> None:
        self.client.close()


def _echoed_logprobs(choice: Any, text: str, start: int, server: str) -> list[float]:
    """The log-probabilities of the tokens of ``text[start:]`` in an echoed completion choice."""
    from affectllm.backends.base import scoring_unsupported

    logprobs = getattr(choice, "logprobs", None)
    offsets = list(getattr(logprobs, "text_offset", None) or [])
    values = list(getattr(logprobs, "token_logprobs", None) or [])
    # A server without echo support returns the generated token's log-probability alone (llama.cpp's
    # llama-server does): the prompt's tokens must be there, from offset 0.
    if (
        not offsets
        or len(offsets) != len(values)
        or offsets[0] != 0
        or not (choice.text or "").startswith(text)
    ):
        raise scoring_unsupported("openai", f"{server} does not return the prompt's log-probabilities (echo)")
    first = max(i for i, offset in enumerate(offsets) if offset <= start)
    end = next((i for i, offset in enumerate(offsets) if offset >= len(text)), len(offsets))
    picked = values[first:end]
    if not picked or any(v is None for v in picked):
        raise scoring_unsupported("openai", f"{server} returned no log-probability for a scored token")
    return [float(v) for v in picked]


def _is_local(url: str) -> bool:
    from urllib.parse import urlparse

    host = (urlparse(url).hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or host.endswith(".local")
