"""The OpenAI-compatible client against real local servers.

- An in-process OpenAI-protocol server (stdlib ``http.server``) that answers with a real model — the tiny
  transformers LM — for the request/response, streaming (server-sent events), media-part, json_schema
  fallback, authentication, timeout and connection-error paths.
- ``llama_cpp.server`` with the embedded Gemma GGUF, when llama-cpp-python is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from affectllm.backends import GenerationConfig, get_backend
from affectllm.backends.base import text_of
from affectllm.backends.openai_backend import BackendConnectionError
from affectllm.prompting import answer_json_schema, build_messages
from affectllm.schema import Clip, Cue

CLIP = Clip("o", [Cue("acoustic", "loudness", 3.0, "dB", "high", 0.0, 2.0)], transcript="Not again!")


class ProtocolServer:
    """A minimal OpenAI chat-completions server over a local backend. Options per test: ``api_key`` (require
    this bearer key), ``reject_response_format`` (answer 400 like servers without json_schema support),
    ``delay`` (seconds before answering)."""

    def __init__(self, backend: Any, model_name: str = "tiny") -> None:
        self.backend = backend
        self.model_name = model_name
        self.api_key: str | None = None
        self.reject_response_format = False
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # The client may have given up already (the timeout test).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def _authorized(self) -> bool:
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._json(
                        401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}}
                    )
                    return False
                return True

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    self._json(
                        200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]}
                    )
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                server.requests.append(request)
                time.sleep(server.delay)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._json(404, {"error": {"message": "not found"}})
                if request.get("model") != server.model_name:
                    return self._json(404, {"error": {"message": f"model {request.get('model')} not found"}})
                if "response_format" in request and server.reject_response_format:
                    return self._json(400, {"error": {"message": "response_format is not supported"}})
                messages = [
                    {"role": m["role"], "content": text_of(m["content"])} for m in request["messages"]
                ]
                config = GenerationConfig(
                    max_new_tokens=int(request.get("max_tokens") or 16),
                    temperature=float(request.get("temperature") or 0.0),
                    top_p=float(request.get("top_p") or 1.0),
                    seed=request.get("seed"),
                    stop=list(request.get("stop") or []),
                )
                if request.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for piece in server.backend.stream(messages, config):
                        chunk = {
                            "id": "c",
                            "object": "chat.completion.chunk",
                            "created": 0,
                            "model": server.model_name,
                            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                        }
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                    return None
                text = server.backend.generate([messages], config)[0]
                return self._json(
                    200,
                    {
                        "id": "c",
                        "object": "chat.completion",
                        "created": 0,
                        "model": server.model_name,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def local_lm(tiny_lm_dir: Path):
    return get_backend("transformers", model=str(tiny_lm_dir), device="cpu")


@pytest.fixture
def server(local_lm) -> Iterator[ProtocolServer]:
    s = ProtocolServer(local_lm)
    yield s
    s.close()


def test_generate_and_stream_match_the_served_model(server: ProtocolServer, local_lm) -> None:
    client = get_backend("openai", base_url=server.base_url)  # model: the server's first
    assert client.model_id == "tiny"
    messages = build_messages(CLIP)
    config = GenerationConfig(max_new_tokens=12, seed=3)
    expected = local_lm.generate([messages], config)[0]
    assert client.generate([messages, messages], config) == [expected, expected]
    assert "".join(client.stream(messages, config)) == expected
    sent = server.requests[-1]
    assert sent["max_tokens"] == 12 and sent["seed"] == 3 and sent["stream"] is True
    assert sent["messages"][0]["role"] == "system" and isinstance(sent["messages"][1]["content"], str)


def test_stop_strings_and_extra_parameters(server: ProtocolServer, local_lm) -> None:
    client = get_backend("openai", base_url=server.base_url, model="tiny")
    messages = build_messages(CLIP)
    full = local_lm.generate([messages], GenerationConfig(max_new_tokens=16))[0]
    stop = full[3:5]
    config = GenerationConfig(max_new_tokens=16, stop=[stop, "a", "b", "c", "d"], top_k=5)
    text = client.generate([messages], config)[0]
    assert stop not in text
    sent = server.requests[-1]
    assert len(sent["stop"]) == 4 and sent["top_k"] == 5  # OpenAI allows 4 stops; the 5th is applied locally


def test_json_schema_is_sent_and_falls_back(server: ProtocolServer) -> None:
    client = get_backend("openai", base_url=server.base_url, model="tiny")
    config = GenerationConfig(max_new_tokens=4, json_schema=answer_json_schema())
    client.generate([build_messages(CLIP)], config)
    assert server.requests[-1]["response_format"]["json_schema"]["schema"] == answer_json_schema()

    server.reject_response_format = True
    client.generate([build_messages(CLIP)], config)  # 400 → retried without it, and remembered
    assert "response_format" in server.requests[-2] and "response_format" not in server.requests[-1]
    client.generate([build_messages(CLIP)], config)
    assert "response_format" not in server.requests[-1]


def test_media_parts(server: ProtocolServer, tmp_path: Path) -> None:
    import base64

    import numpy as np
    from PIL import Image

    frame = tmp_path / "f.jpg"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(frame)
    from affectllm.schema import Media

    media = Media(frames=(str(frame), Image.new("RGB", (4, 4))), audio=np.zeros(1600, dtype=np.float32))
    messages = build_messages(CLIP, media=media)
    config = GenerationConfig(max_new_tokens=3)

    get_backend("openai", base_url=server.base_url, model="tiny", images=True, audio=True).generate(
        [messages], config
    )
    parts = server.requests[-1]["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "input_audio", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    wav = base64.b64decode(parts[2]["input_audio"]["data"])
    assert parts[2]["input_audio"]["format"] == "wav" and wav[:4] == b"RIFF" and len(wav) == 44 + 3200

    get_backend("openai", base_url=server.base_url, model="tiny").generate([messages], config)
    assert isinstance(server.requests[-1]["messages"][1]["content"], str)  # text-only model: text alone


def test_api_key_from_env(server: ProtocolServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.api_key = "sekret"
    with pytest.raises(BackendConnectionError, match="rejected the API key"):
        get_backend("openai", base_url=server.base_url, api_key_env="AFFECTLLM_TEST_KEY")
    monkeypatch.setenv("AFFECTLLM_TEST_KEY", "sekret")
    client = get_backend("openai", base_url=server.base_url, api_key_env="AFFECTLLM_TEST_KEY")
    assert client.generate([build_messages(CLIP)], GenerationConfig(max_new_tokens=2))


def test_errors_are_clear(server: ProtocolServer, monkeypatch: pytest.MonkeyPatch) -> None:
    client = get_backend("openai", base_url=server.base_url, model="missing")
    with pytest.raises(BackendConnectionError, match="wrong model name"):
        client.generate([build_messages(CLIP)], GenerationConfig(max_new_tokens=2))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(BackendConnectionError, match="cannot connect"):
        get_backend("openai", base_url=f"http://127.0.0.1:{closed_port}/v1", max_retries=0)

    server.delay = 1.5
    slow = get_backend("openai", base_url=server.base_url, model="tiny", timeout=0.5, max_retries=0)
    with pytest.raises(BackendConnectionError, match="did not answer in time"):
        slow.generate([build_messages(CLIP)], GenerationConfig(max_new_tokens=2))

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        get_backend("openai", base_url="https://api.example.com/v1", model="m")


# ------------------------------------------------------------------------------------- llama_cpp.server


def _wait_for(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not come up in {seconds} s")


def test_llama_cpp_server_with_embedded_gemma(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] not installed")
    from affectllm.models import ensure_gemma_gguf

    gguf = ensure_gemma_gguf()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--model_alias",
        "gemma-3-270m",
        "--n_threads",
        "2",
    ]
    # llama.cpp logs a lot while loading: to a file, since an unread pipe would fill up and stall the server.
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        _wait_for(f"http://127.0.0.1:{port}/v1/models", proc, log, 300)
        client = get_backend("openai", base_url=f"http://127.0.0.1:{port}/v1")
        assert client.model_id == "gemma-3-270m"
        messages = [{"role": "user", "content": "Name one emotion."}]
        config = GenerationConfig(max_new_tokens=8)
        text = client.generate([messages], config)[0]
        assert isinstance(text, str)
        assert "".join(client.stream(messages, config)) == text  # greedy: streaming gives the same text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_system_messages_reach_the_server_unchanged_whatever_the_model_name(local_lm) -> None:
    """Rendering turns is the server's chat template's job (the embedded GGUF carries Gemma's): the client
    sends the system message as it is, for a Gemma model name too."""
    s = ProtocolServer(local_lm, model_name="gemma-3-270m-it")
    try:
        client = get_backend("openai", base_url=s.base_url)
        messages = build_messages(CLIP, few_shot=1)
        client.generate([messages], GenerationConfig(max_new_tokens=2))
        sent = s.requests[-1]["messages"]
        assert [m["role"] for m in sent] == [m["role"] for m in messages]
        assert sent[0] == {"role": "system", "content": messages[0]["content"]}
    finally:
        s.close()
