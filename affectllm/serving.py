"""The CPU OpenAI-compatible server: ``llama_cpp.server``'s app behind a request guard, every model resident.

``affectllm serve`` (llama.cpp engine) runs ``python -m affectllm.serving``. Three things differ from a bare
``python -m llama_cpp.server``:

- **Client mistakes get a 4xx that says what is wrong** (``RequestGuard``): a body that is not JSON, not
  UTF-8, empty or sent as ``text/plain``; missing or empty ``messages``; a bad role or content part;
  ``max_tokens`` below 1 (llama.cpp reads 0 as "until the context is full" and would hold the only worker);
  an unknown model name gets 404 instead of an answer from another model. llama_cpp.server answers all of
  these with HTTP 500 or, worse, 200.
- **The current OpenAI ``response_format``** ``{"type": "json_schema", "json_schema": {"schema": S}}`` is
  translated to llama.cpp's ``{"type": "json_object", "schema": S}`` (grammar-constrained decoding), and
  ``max_completion_tokens`` to ``max_tokens``.
- **Several model names at once without reloading** (``ResidentModels``): the base model and each LoRA
  adapter are loaded once and stay loaded (the weights are one memory-mapped file, so each extra name costs
  its context, not another copy of the model); llama_cpp.server would reload on every switch.

Memory: ``logits_all`` is off by default (llama_cpp.server's default keeps an ``n_ctx`` × vocabulary float
array — 8192 × 262,144 × 4 bytes ≈ 8.6 GB for Gemma — only to return logprobs), so a request for ``logprobs``
is refused with 400 unless the server was started with ``--logits_all true`` (after ``--``). docs/serving.md gives the measured memory per context size.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

# The routes whose bodies are checked; everything else goes to llama_cpp.server unchanged.
CHAT_PATH = "/v1/chat/completions"
COMPLETION_PATH = "/v1/completions"
# Bodies past this size are refused before they are read into memory (a long evidence block is ~20 kB).
MAX_BODY_BYTES = 8 * 1024 * 1024
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
CONTENT_PART_TYPES = ("text", "image_url", "input_audio")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientError(Exception):
    """A request the client must fix: HTTP ``status`` with an OpenAI-style error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> bytes:
        kind = "not_found_error" if self.status == 404 else "invalid_request_error"
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode("utf-8")


@dataclass(frozen=True)
class ServedModel:
    """One model name: a GGUF file, optionally with a LoRA adapter in GGUF form applied."""

    alias: str
    model_path: str
    lora_path: str | None = None


def decode_body(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The request body as a JSON object, or a ``ClientError`` naming what is wrong with it."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    # A missing header, or curl's default for -d (form-urlencoded), is read as JSON: the body says what it
    # is. Any other declared type (text/plain, multipart) is a mistake.
    lenient = ("", "application/json", "application/x-www-form-urlencoded")
    if media_type not in lenient and not media_type.endswith("+json"):
        raise ClientError(415, f"Content-Type must be application/json, got {media_type!r}")
    if not raw.strip():
        raise ClientError(400, "the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientError(400, f"the request body is not UTF-8 (byte {exc.start}): {exc.reason}") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClientError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ClientError(400, "the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ClientError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _check_positive_int(body: Mapping[str, Any], key: str) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClientError(400, f"{key} must be an integer, got {value!r}", param=key)
    if value < 1:
        # llama.cpp reads 0 or less as "until the context is full", holding the only worker for minutes.
        raise ClientError(400, f"{key} must be at least 1, got {value}", param=key)


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if messages is None:
        raise ClientError(400, "messages is required", param="messages")
    if not isinstance(messages, list) or not messages:
        raise ClientError(400, "messages must be a non-empty list of message objects", param="messages")
    checked = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ClientError(400, f"{where} must be an object with role and content", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise ClientError(
                400, f"{where}.role must be one of {', '.join(ROLES)}; got {role!r}", param=where
            )
        content = message.get("content")
        if content is None:
            # Only an assistant turn that calls tools may come without content.
            if role != "assistant" or not message.get("tool_calls"):
                raise ClientError(400, f"{where}.content is required", param=f"{where}.content")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                at = f"{where}.content[{j}]"
                if not isinstance(part, dict) or part.get("type") not in CONTENT_PART_TYPES:
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise ClientError(
                        400,
                        f"{at}.type must be one of {', '.join(CONTENT_PART_TYPES)}; got {kind!r}",
                        param=at,
                    )
                if part["type"] == "text" and not isinstance(part.get("text"), str):
                    raise ClientError(400, f"{at}.text must be a string", param=at)
        elif not isinstance(content, str):
            raise ClientError(
                400, f"{where}.content must be a string or a list of content parts", param=f"{where}.content"
            )
        # OpenAI's newer clients send "developer" for instructions; llama.cpp templates know "system".
        checked.append({**message, "role": "system"} if role == "developer" else message)
    return checked


# Shorthand classes llama-cpp-python's schema-to-grammar converter copies into the grammar as-is, where
# llama.cpp's grammar parser rejects them ("unknown escape") and the process aborts; spelled out, they work.
_SHORTHAND_CLASSES = {"d": "[0-9]", "w": "[A-Za-z0-9_]", "s": "[ \\t\\n\\r]"}


def portable_pattern(pattern: str) -> str:
    """``^[AF][1-9]\\d{0,2}$`` → ``^[AF][1-9][0-9]{0,2}$``: shorthand classes outside brackets spelled out."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            pair = pattern[i : i + 2]
            out.append(_SHORTHAND_CLASSES.get(pattern[i + 1], pair) if not in_class else pair)
            i += 2
            continue
        if ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        out.append(ch)
        i += 1
    return "".join(out)


def portable_schema(schema: Any) -> Any:
    """The schema with every ``pattern`` made portable (``portable_pattern``); everything else unchanged."""
    if isinstance(schema, dict):
        return {
            k: portable_pattern(v) if k == "pattern" and isinstance(v, str) else portable_schema(v)
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [portable_schema(v) for v in schema]
    return schema


def _translate_response_format(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ClientError(400, "response_format must be an object", param="response_format")
    kind = value.get("type")
    if kind == "text":
        return value
    if kind == "json_object":
        return {**value, "schema": portable_schema(value["schema"])} if "schema" in value else value
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise ClientError(
                400,
                'response_format json_schema must be {"type": "json_schema", "json_schema": {"name": ..., '
                '"schema": {...}}}',
                param="response_format",
            )
        # llama.cpp's own form of the same constraint (a grammar compiled from the schema).
        if "schema" not in spec:
            return {"type": "json_object"}
        return {"type": "json_object", "schema": portable_schema(spec["schema"])}
    raise ClientError(
        400,
        f"response_format.type must be text, json_object or json_schema; got {kind!r}",
        param="response_format",
    )


def check_request(
    path: str, body: dict[str, Any], served: Mapping[str, ServedModel], logprobs: bool = False
) -> dict[str, Any]:
    """Validate a completion request and rewrite it into what llama_cpp.server accepts."""
    model = body.get("model")
    if model is not None and model not in served:
        raise ClientError(
            404,
            f"the model {model!r} does not exist; this server serves {', '.join(served)}",
            param="model",
            code="model_not_found",
        )
    body = dict(body)
    # Named explicitly, so the response's model field says which one answered (not the GGUF's path).
    body["model"] = model if model is not None else next(iter(served))
    if "max_completion_tokens" in body:
        _check_positive_int(body, "max_completion_tokens")
        completion_tokens = body.pop("max_completion_tokens")
        if body.get("max_tokens") is None:
            body["max_tokens"] = completion_tokens
    _check_positive_int(body, "max_tokens")
    if not logprobs and (body.get("logprobs") or body.get("top_logprobs")):
        raise ClientError(
            400,
            "this server does not return logprobs: it keeps no per-token logits (start it with "
            "`affectllm serve -- --logits_all true`, which costs 1 MB per context token)",
            param="logprobs",
        )
    if path == CHAT_PATH:
        body["messages"] = _check_messages(body.get("messages"))
        if "response_format" in body:
            body["response_format"] = _translate_response_format(body["response_format"])
        _validate_with(body, "CreateChatCompletionRequest")
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, (str, list)) or not prompt:
            raise ClientError(400, "prompt must be a non-empty string or list of strings", param="prompt")
        _validate_with(body, "CreateCompletionRequest")
    return body


def grammar_of(body: Mapping[str, Any]) -> str | None:
    """The GBNF grammar a checked request will constrain decoding with (None: unconstrained or llama.cpp's
    built-in JSON grammar); a schema the converter cannot handle is the client's to fix."""
    if isinstance(body.get("grammar"), str):
        return body["grammar"]
    response_format = body.get("response_format") or {}
    if response_format.get("type") != "json_object" or "schema" not in response_format:
        return None
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(json.dumps(response_format["schema"]))
    except Exception as exc:  # the converter raises plain exceptions of several kinds on unsupported schemas
        raise ClientError(
            400,
            f"response_format: the JSON schema cannot be turned into a grammar ({exc})",
            param="response_format",
        ) from None


def _validate_with(body: dict[str, Any], model_name: str) -> None:
    # llama_cpp.server's own request models find every remaining type error; it would answer them with 500.
    import pydantic
    from llama_cpp.server import types

    try:
        getattr(types, model_name).model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or None
        raise ClientError(
            400, f"{where}: {first.get('msg')}" if where else str(first.get("msg")), where
        ) from None


class RequestGuard:
    """ASGI middleware: reads a completion request's body, checks it (``check_request``) and passes the
    rewritten body on, or answers the client's mistake itself."""

    def __init__(
        self,
        app: ASGIApp,
        served: Mapping[str, ServedModel],
        grammar_ok: Callable[[str], bool] | None = None,
        logprobs: bool = False,
    ) -> None:
        self.app = app
        self.served = served
        self.logprobs = logprobs
        # llama.cpp aborts the whole process on a grammar it cannot parse, so grammars are tried here first.
        self.grammar_ok = grammar_ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in (CHAT_PATH, COMPLETION_PATH)
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            raw = await _read_body(receive)
            body = decode_body(raw, headers.get("content-type"))
            body = check_request(scope["path"], body, self.served, self.logprobs)
            grammar = grammar_of(body)
            if grammar is not None and self.grammar_ok is not None and not self.grammar_ok(grammar):
                raise ClientError(
                    400, "llama.cpp cannot parse the grammar made from this request's schema or grammar"
                )
        except ClientError as exc:
            await _answer(send, exc.status, exc.body())
            return
        payload = json.dumps(body).encode("utf-8")
        rest = [
            (k, v)
            for k, v in scope.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        scope = {
            **scope,
            "headers": [
                *rest,
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as the server expects

        await self.app(scope, replay, send)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientError(400, "the client disconnected before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ClientError(413, f"the request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _resident_proxy_class() -> type:
    from llama_cpp.server.model import LlamaProxy

    class ResidentModels(LlamaProxy):
        """Every served name loaded once and kept (llama_cpp.server's proxy holds one model at a time and
        reloads it whenever a request names another)."""

        def __init__(self, models: list[Any]) -> None:
            super().__init__(models)  # loads and keeps the first (default) model
            self._loaded = {self._default_model_alias: self._current_model}
            for alias, settings in self._model_settings_dict.items():
                if alias not in self._loaded:
                    self._loaded[alias] = self.load_llama_from_model_settings(settings)

        def __call__(self, model: str | None = None) -> Any:
            # Unknown names were already refused with 404 by the guard.
            return self._loaded.get(
                model or self._default_model_alias, self._loaded[self._default_model_alias]
            )

        @staticmethod
        def load_llama_from_model_settings(settings: Any) -> Any:
            # llama.cpp logs one line per LoRA tensor even with verbose=False; keep them for a failed load only.
            from affectllm.backends.llamacpp import _native_stderr_captured

            failure: Exception | None = None
            with _native_stderr_captured() as captured:
                try:
                    return LlamaProxy.load_llama_from_model_settings(settings)
                except Exception as exc:  # re-raised below, once stderr is back
                    failure = exc
            sys.stderr.write(captured.text()[-4000:])
            raise failure

        def free(self) -> None:
            for llm in self._loaded.values():
                llm.close()
            self._loaded.clear()

    return ResidentModels


def build_app(
    models: list[ServedModel],
    n_ctx: int,
    model_options: Mapping[str, Any] | None = None,
    server_options: Mapping[str, Any] | None = None,
) -> Any:
    """The ASGI app: llama_cpp.server's FastAPI app with every model resident, behind ``RequestGuard``."""
    import llama_cpp.server.app as server_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    # Per-token logits only on request (`-- --logits_all true`): they cost n_ctx × vocabulary floats.
    options = {"logits_all": False, "verbose": False, **dict(model_options or {})}
    settings = [
        ModelSettings(model=m.model_path, model_alias=m.alias, lora_path=m.lora_path, n_ctx=n_ctx, **options)
        for m in models
    ]
    # create_app builds its proxy from the module's LlamaProxy name; the resident one loads every model once.
    server_app.LlamaProxy = _resident_proxy_class()
    app = server_app.create_app(
        server_settings=ServerSettings(**dict(server_options or {})), model_settings=settings
    )
    served = {m.alias: m for m in models}
    return RequestGuard(app, served, _grammar_checker(server_app), logprobs=settings[0].logits_all)


def _grammar_checker(server_app: Any) -> Callable[[str], bool]:
    import llama_cpp

    def grammar_ok(grammar: str) -> bool:
        vocab = server_app._llama_proxy()._model.vocab
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True

    return grammar_ok


def parse_model_spec(spec: str) -> ServedModel:
    """``ALIAS=MODEL.gguf`` or ``ALIAS=MODEL.gguf+LORA.gguf``."""
    alias, sep, paths = spec.partition("=")
    model_path, _, lora_path = paths.partition("+")
    if not sep or not alias or not model_path:
        raise ValueError(f"--model {spec!r}: expected ALIAS=MODEL.gguf or ALIAS=MODEL.gguf+LORA.gguf")
    return ServedModel(alias, model_path, lora_path or None)


def engine_options(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--n_threads 2 --api_key KEY`` after ``--``: llama_cpp.server's model and server settings, as its own
    command line names them (a flag without a value is ``true``)."""
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    model_options: dict[str, Any] = {}
    server_options: dict[str, Any] = {}
    i = 0
    while i < len(pairs):
        key = pairs[i]
        if not key.startswith("--"):
            raise ValueError(f"expected --OPTION VALUE, got {key!r}")
        name = key[2:].replace("-", "_")
        if name in ("host", "port", "model", "model_alias", "n_ctx", "lora_path"):
            raise ValueError(f"{key}: set by affectllm serve's own options")
        if name in ModelSettings.model_fields:
            options = model_options
        elif name in ServerSettings.model_fields:
            options = server_options
        else:
            raise ValueError(f"{key}: not a llama_cpp.server setting")
        if i + 1 < len(pairs) and not pairs[i + 1].startswith("--"):
            value: Any = pairs[i + 1]
            i += 2
        else:
            value = True
            i += 1
        options[name] = value
    return model_options, server_options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m affectllm.serving",
        description="llama_cpp.server with request checks and every model resident (run by affectllm serve).",
    )
    parser.add_argument("--model", action="append", required=True, metavar="ALIAS=MODEL.gguf[+LORA.gguf]")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--api-key-env", help="environment variable holding the API key clients must send")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("options", nargs="*", help="llama_cpp.server model settings after --")
    args = parser.parse_args(argv)
    try:
        models = [parse_model_spec(s) for s in args.model]
        model_options, server_options = engine_options(args.options)
    except ValueError as exc:
        parser.error(str(exc))
    import os

    import uvicorn

    if args.api_key_env:
        server_options["api_key"] = os.environ.get(args.api_key_env) or parser.error(
            f"--api-key-env {args.api_key_env}: the variable is not set"
        )
    app = build_app(models, args.n_ctx, model_options, server_options)
    if not args.quiet:
        names = ", ".join(m.alias for m in models)
        print(f"affectllm: serving {names} at http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    # A stop signal ends a running generation's wait after a few seconds instead of holding the process.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
