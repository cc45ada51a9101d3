"""affectllm.serving's request checks, without a model: what a client mistake gets, how the current OpenAI
request forms are rewritten for llama.cpp, and the guard as ASGI middleware in front of a real (tiny)
Starlette app. tests/test_openai_server.py drives the whole server."""

from __future__ import annotations

import json
import re

import pytest

from affectllm.serving import (
    CHAT_PATH,
    COMPLETION_PATH,
    ClientError,
    RequestGuard,
    ServedModel,
    check_request,
    decode_body,
    parse_model_spec,
    portable_pattern,
    portable_schema,
)

SERVED = {"emo": ServedModel("emo", "/m.gguf", "/a.gguf"), "base": ServedModel("base", "/m.gguf")}
USER = [{"role": "user", "content": "hi"}]


def _refused(path: str, body: dict, status: int = 400) -> str:
    pytest.importorskip("llama_cpp")
    with pytest.raises(ClientError) as info:
        check_request(path, body, SERVED)
    assert info.value.status == status
    error = json.loads(info.value.body())["error"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    return info.value.message


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "says"),
    [
        (b"", "application/json", 400, "empty"),
        (b"  \n", None, 400, "empty"),
        (b"{bad", "application/json", 400, "not valid JSON"),
        (b'"text"', "application/json", 400, "JSON object"),
        (b'{"a": "\xff"}', "application/json", 400, "not UTF-8"),
        (b"{}", "text/plain", 415, "application/json"),
        (b"{}", "multipart/form-data; boundary=x", 415, "application/json"),
        (b"[" * 50000 + b"]" * 50000, "application/json", 400, "nested too deeply"),
    ],
)
def test_bodies_that_are_not_a_json_object_are_refused(raw, content_type, status, says):
    with pytest.raises(ClientError) as info:
        decode_body(raw, content_type)
    assert info.value.status == status and says in info.value.message


def test_json_bodies_are_read_whatever_json_like_type_the_client_declared():
    for content_type in (None, "application/json; charset=utf-8", "application/x-www-form-urlencoded"):
        assert decode_body(b'{"a": 1}', content_type) == {"a": 1}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, "messages is required"),
        ({"messages": []}, "non-empty"),
        ({"messages": "hi"}, "non-empty"),
        ({"messages": ["hi"]}, "messages[0] must be an object"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content is required"),
        ({"messages": [{"role": "user", "content": 5}]}, "string or a list"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, "text must be a string"),
        ({"messages": USER, "max_tokens": 0}, "at least 1"),
        ({"messages": USER, "max_tokens": -5}, "at least 1"),
        ({"messages": USER, "max_tokens": 2.5}, "integer"),
        ({"messages": USER, "max_tokens": True}, "integer"),
        ({"messages": USER, "max_completion_tokens": 0}, "at least 1"),
        ({"messages": USER, "logprobs": True}, "logprobs"),
        ({"messages": USER, "temperature": "hot"}, "temperature"),
        ({"messages": USER, "response_format": {"type": "xml"}}, "response_format.type"),
        ({"messages": USER, "response_format": {"type": "json_schema"}}, "json_schema"),
        ({"messages": USER, "response_format": "json"}, "must be an object"),
    ],
)
def test_chat_mistakes_are_400_with_the_field_named(body, says):
    assert says in _refused(CHAT_PATH, body)


def test_completion_mistakes_are_400():
    assert "prompt" in _refused(COMPLETION_PATH, {"prompt": ""})
    assert "at least 1" in _refused(COMPLETION_PATH, {"prompt": "x", "max_tokens": 0})


def test_an_unknown_model_is_404_and_lists_the_served_names():
    message = _refused(CHAT_PATH, {"model": "gpt-4o", "messages": USER}, status=404)
    assert "'gpt-4o'" in message and "emo, base" in message


def test_current_openai_forms_are_rewritten_for_llama_cpp():
    pytest.importorskip("llama_cpp")
    schema = {"type": "object", "properties": {"id": {"type": "string", "pattern": r"^[AF]\d{0,2}$"}}}
    body = check_request(
        CHAT_PATH,
        {
            "messages": [{"role": "developer", "content": "Be brief."}, *USER],
            "max_completion_tokens": 12,
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        },
        SERVED,
    )
    assert body["model"] == "emo"  # the first served name answers a request that names none
    assert body["max_tokens"] == 12 and "max_completion_tokens" not in body
    assert body["messages"][0]["role"] == "system"
    assert body["response_format"] == {"type": "json_object", "schema": portable_schema(schema)}


def test_patterns_spell_out_the_shorthand_classes_llama_cpp_grammars_reject():
    assert portable_pattern(r"^[AFSL][1-9]\d{0,2}$") == "^[AFSL][1-9][0-9]{0,2}$"
    assert portable_pattern(r"^\w+\s\.$") == r"^[A-Za-z0-9_]+[ \t\n\r]\.$"
    assert portable_pattern(r"^[\d]$") == r"^[\d]$"  # inside a class it is left alone
    for pattern in (r"^[AFSL][1-9]\d{0,2}$", r"^\w+\s\.$"):
        for text in ("A12", "ab_1 .", "Z"):
            assert bool(re.fullmatch(pattern, text)) == bool(re.fullmatch(portable_pattern(pattern), text))


def test_model_specs():
    assert parse_model_spec("emo=/m.gguf+/a.gguf") == ServedModel("emo", "/m.gguf", "/a.gguf")
    assert parse_model_spec("base=/m.gguf") == ServedModel("base", "/m.gguf")
    with pytest.raises(ValueError):
        parse_model_spec("/m.gguf")


def test_guard_answers_mistakes_itself_and_passes_the_rewritten_body_on():
    pytest.importorskip("llama_cpp")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"seen": await request.json(), "type": request.headers["content-type"]})

    app = Starlette(
        routes=[Route(CHAT_PATH, echo, methods=["POST"]), Route("/v1/models", echo, methods=["POST"])]
    )
    client = TestClient(RequestGuard(app, SERVED))
    ok = client.post(CHAT_PATH, content=json.dumps({"messages": USER, "max_completion_tokens": 3}))
    assert ok.status_code == 200
    assert ok.json()["seen"]["max_tokens"] == 3 and ok.json()["type"] == "application/json"
    bad = client.post(CHAT_PATH, content=b"{", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    missing = client.post(CHAT_PATH, json={"model": "nope", "messages": USER})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    # Other routes are not the guard's business.
    assert client.post("/v1/models", json={"anything": 1}).status_code == 200
    # A grammar llama.cpp cannot parse is refused before it reaches the engine (which would abort).
    strict = TestClient(RequestGuard(app, SERVED, grammar_ok=lambda grammar: False))
    refused = strict.post(CHAT_PATH, json={"messages": USER, "grammar": 'root ::= "\\q"'})
    assert refused.status_code == 400 and "grammar" in refused.json()["error"]["message"]


def test_logprobs_are_answered_only_by_a_server_that_keeps_logits():
    pytest.importorskip("llama_cpp")
    body = {"prompt": "I am so happy", "echo": True, "logprobs": 1, "max_tokens": 1}
    assert "--logits_all true" in _refused(COMPLETION_PATH, body)
    assert check_request(COMPLETION_PATH, body, SERVED, logprobs=True)["logprobs"] == 1
