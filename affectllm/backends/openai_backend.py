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
        **_: Any,
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

    def close(self) -> None:
        self.client.close()


def _is_local(url: str) -> bool:
    from urllib.parse import urlparse

    host = (urlparse(url).hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or host.endswith(".local")
