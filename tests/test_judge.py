"""The LLM judge: score parsing, and the whole client path against a real OpenAI-compatible HTTP server running
in-process on 127.0.0.1 (plus, marked slow, llama.cpp's server with the embedded Gemma GGUF)."""

from __future__ import annotations

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
from typing import Any, ClassVar

import pytest

from affectllm.cli.main import main
from affectllm.errors import InputError
from affectllm.metrics.judge import (
    CLUE_OVERLAP_PROMPT,
    JUDGE_SYSTEM,
    LLMJudge,
    parse_score,
    rationale_text,
)
from affectllm.schema import RationaleItem

pytest.importorskip("openai")


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Score: 7", 7.0),
        ("**Score:** 8", 8.0),
        ("score = 3.5", 3.5),
        ("The overlap is moderate. [[6]]", 6.0),
        ("I'd rate it 9/10.", 9.0),
        ("4 out of 10", 4.0),
        ('{"score": 2}', 2.0),
        ("10", 10.0),
        ("5.", 5.0),
        ("Score: 11", None),  # out of range
        ("Score: 0", None),
        ("There are 3 shared clues.", None),  # a bare number in prose is not trusted
        ("", None),
        ("no idea", None),
    ],
)
def test_parse_score(reply: str, score: float | None) -> None:
    assert parse_score(reply) == score


def test_rationale_text_flattens_every_form() -> None:
    assert rationale_text("  He shouts. ") == "He shouts."
    assert rationale_text(["loud voice", {"cue": "frown", "cue_id": "F2"}, RationaleItem(cue="smile")]) == (
        "- loud voice\n- [F2] frown\n- smile"
    )
    assert rationale_text({"emotions": ["x"], "rationale": ["a"]}) == "- a"
    assert rationale_text(None) == ""


class _JudgeServer(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions like an OpenAI-compatible server, with replies chosen by the request."""

    requests: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        prompt = body["messages"][-1]["content"]
        if "SERVER-FAILS" in prompt:
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "boom"}}')
            return
        if "GARBLED" in prompt:
            reply = "I cannot decide."
        elif "CLUES in the two descriptions" in prompt:
            reply = "Score: 7"
        else:
            reply = "**Score:** 9/10"
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def judge_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _JudgeServer.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JudgeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_judge_end_to_end_over_http(judge_server: str) -> None:
    judge = LLMJudge(base_url=judge_server, model="judge-test", max_retries=0, timeout=10)
    ref = {
        "a": "He raised his voice and frowned.",
        "b": "She smiled.",
        "c": "He sighed.",
        "d": "He cried.",
        "e": "She laughed.",
    }
    pred = {
        "a": ["loud voice", {"cue": "frown", "cue_id": "F2"}],
        "b": "GARBLED answer",
        "c": "SERVER-FAILS here",
        "d": "",  # nothing predicted: lowest score, no call
    }  # "e" has no prediction at all
    result = judge.score(pred, ref, pred_labels={"a": ["angry"]}, ref_labels={"a": ["anger"]})

    samples = result["samples"]
    assert samples["a"]["clue_overlap"] == 7.0 and samples["a"]["label_overlap"] == 9.0
    assert samples["a"]["errors"] == []
    assert samples["b"]["clue_overlap"] is None and "no score 1-10" in samples["b"]["errors"][0]
    assert samples["c"]["clue_overlap"] is None and "InternalServerError" in samples["c"]["errors"][0]
    assert samples["d"]["clue_overlap"] == samples["e"]["clue_overlap"] == 1.0
    assert result["n"] == 5 and result["n_errors"] == 2
    assert result["n_clue_overlap"] == 3 and result["clue_overlap"] == pytest.approx((7 + 1 + 1) / 3)
    assert result["label_overlap"] == pytest.approx((9 + 1 + 1) / 3)

    # What went over the wire: the fixed prompts, temperature 0, the model name, a placeholder key.
    sent = _JudgeServer.requests
    assert len(sent) == 6  # a, b, c: two questions each
    assert all(r["path"] == "/v1/chat/completions" and r["temperature"] == 0 for r in sent)
    assert all(r["model"] == "judge-test" and r["auth"] == "Bearer EMPTY" for r in sent)
    assert sent[0]["messages"][0] == {"role": "system", "content": JUDGE_SYSTEM}
    assert sent[0]["messages"][1]["content"] == CLUE_OVERLAP_PROMPT.format(
        reference=ref["a"], prediction="- loud voice\n- [F2] frown"
    )
    assert "(labels: angry)" in sent[1]["messages"][1]["content"]


def test_judge_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AFFECTLLM_JUDGE_MODEL", raising=False)
    monkeypatch.delenv("AFFECTLLM_JUDGE_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(InputError, match="needs a model name"):
        LLMJudge()
    with pytest.raises(InputError, match="API key"):
        LLMJudge(model="gpt-x")
    monkeypatch.setenv("AFFECTLLM_JUDGE_MODEL", "from-env")
    monkeypatch.setenv("AFFECTLLM_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    judge = LLMJudge()
    assert (judge.model, judge.base_url) == ("from-env", "http://127.0.0.1:9/v1")


def test_cli_rationale_with_judge(
    judge_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sentence_transformers")
    ref = tmp_path / "ref.csv"
    ref.write_text("name,reasons\na,He raised his voice and frowned.\n", encoding="utf-8")
    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps({"name": "a", "rationale": ["loud voice", "frown"]}) + "\n", encoding="utf-8")
    out = tmp_path / "out.json"
    argv = ["eval", "rationale", "--pred", str(pred), "--ref", str(ref), "--judge", "--base-url", judge_server,
            "--model", "judge-test", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "LLM judge (judge-test, 1-10): clue overlap 7.00" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["judge"]["label_overlap"] == 9.0 and result["rationale"]["n"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_judge_against_llama_cpp_server_with_gemma(tmp_path: Path) -> None:
    """The real thing on CPU: llama.cpp's OpenAI-compatible server with the embedded Gemma 3 270M. A base model
    this small rarely follows the format, so the check is the path: every sample gets a score in range or a
    recorded error, and nothing raises."""
    pytest.importorskip("llama_cpp.server")
    models = pytest.importorskip("affectllm.models")
    gguf = models.ensure_gemma_gguf()
    port = _free_port()
    options = {
        "--model": gguf,
        "--host": "127.0.0.1",
        "--port": port,
        "--n_ctx": 2048,
        "--model_alias": "gemma",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", *(str(x) for pair in options.items() for x in pair)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not start")
                time.sleep(1)
        judge = LLMJudge(base_url=f"http://127.0.0.1:{port}/v1", model="gemma", max_retries=0, max_tokens=8)
        result = judge.score(
            {"a": "He shouts and frowns.", "b": "She smiles."},
            {"a": "He raised his voice and frowned deeply.", "b": "She smiled broadly and laughed."},
        )
        for sample in result["samples"].values():
            for key in ("clue_overlap", "label_overlap"):
                assert (sample[key] is not None and 1 <= sample[key] <= 10) or sample["errors"]
            assert set(sample["replies"]) <= {"clue_overlap", "label_overlap"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
