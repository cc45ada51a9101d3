"""Benchmark: peak memory of the CPU server (``python -m affectllm.serving``) per context size.

    python bench/bench_server_memory.py [--n-ctx 2048 4096 8192 16384 32768]

For each context size, starts the server with the embedded Gemma 3 270M GGUF under one name, sends one chat
request (the system + user messages affectllm's prompt builder makes for a short clip), and reads the
process's peak resident memory (VmHWM in /proc/PID/status); then the default ``affectllm serve`` layout
(the base model and its shipped adapter, two resident names) at the default context. Prints one row each.
The baseline is llama_cpp.server's own default (``logits_all`` on), measured at the smallest context only,
since its score array grows with n_ctx × vocabulary (262,144 for Gemma) × 4 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from affectllm.models import DEFAULT_ADAPTER_NAME, default_adapter, ensure_gemma_gguf


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _messages() -> list[dict]:
    from affectllm.prompting import build_messages
    from affectllm.schema import Clip, Cue

    clip = Clip(
        "job", [Cue("acoustic", "loudness", 3.0, "dB", "high", 0.0, 2.0)], transcript="I got the job!"
    )
    return build_messages(clip, few_shot=0)


def measure(argv: list[str], port: int, model: str) -> dict[str, float]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {argv}")
            try:
                urllib.request.urlopen(f"{base}/models", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        load_s = time.monotonic() - started
        idle_mb = _status_kb(proc.pid, "VmRSS") / 1024
        body = json.dumps(
            {"model": model, "messages": _messages(), "max_tokens": 64, "temperature": 0}
        ).encode()
        request = urllib.request.Request(
            f"{base}/chat/completions", body, {"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=600).close()
        return {"load_s": load_s, "idle_mb": idle_mb, "peak_mb": _status_kb(proc.pid, "VmHWM") / 1024}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-ctx", type=int, nargs="+", default=[2048, 4096, 8192, 16384, 32768])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    gguf = ensure_gemma_gguf()
    threads = ["--", "--n_threads", str(args.threads)]
    print(f"{'layout':<44} {'n_ctx':>6} {'load s':>7} {'idle MB':>8} {'peak MB':>8}")
    for n_ctx in args.n_ctx:
        port = _free_port()
        argv = [sys.executable, "-m", "affectllm.serving", "--model", f"base={gguf}", "--port", str(port),
                "--n-ctx", str(n_ctx), "--quiet", *threads]  # fmt: skip
        row = measure(argv, port, "base")
        print(
            f"{'one name (affectllm.serving)':<44} {n_ctx:>6} {row['load_s']:>7.1f} {row['idle_mb']:>8.0f} {row['peak_mb']:>8.0f}"
        )
    adapter = default_adapter("llamacpp")
    if adapter is not None:
        port = _free_port()
        argv = [sys.executable, "-m", "affectllm.serving", "--model", f"{DEFAULT_ADAPTER_NAME}={gguf}+{adapter}",
                "--model", f"gemma-3-270m={gguf}", "--port", str(port), "--quiet", *threads]  # fmt: skip
        row = measure(argv, port, DEFAULT_ADAPTER_NAME)
        print(
            f"{'default affectllm serve (adapter + base)':<44} {8192:>6} {row['load_s']:>7.1f} {row['idle_mb']:>8.0f} {row['peak_mb']:>8.0f}"
        )
    # Baseline: llama_cpp.server as it starts by default (logits_all on), at the smallest context.
    port = _free_port()
    n_ctx = min(args.n_ctx)
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port),
            "--n_ctx", str(n_ctx), "--n_threads", str(args.threads)]  # fmt: skip
    row = measure(argv, port, str(gguf))
    print(
        f"{'baseline: llama_cpp.server defaults':<44} {n_ctx:>6} {row['load_s']:>7.1f} {row['idle_mb']:>8.0f} {row['peak_mb']:>8.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
