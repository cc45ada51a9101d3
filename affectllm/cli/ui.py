"""``affectllm ui [CLIP]``: a local web page for opening clips, seeing their cue timeline and asking about them.

The page talks to the same model and chat session as ``affectllm chat`` and takes the same model and evidence
options (``add_model_arguments`` / ``add_textualize_arguments``). The server is affectllm.ui's; this module only
reads the options, opens CLIP when given, and runs the server until Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from affectllm.cli._options import add_quiet_option
from affectllm.cli.chat import add_model_arguments, add_textualize_arguments
from affectllm.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 512.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="a local web page: open a clip, see its cue timeline and evidence, ask how someone feels and why",
        description=(
            "Serve a web page on this machine where you open a clip (video, audio or transcript, with optional "
            "AU CSV and captions), see the player, the cue timeline and the evidence list, and ask questions "
            "in a chat; each answer shows its emotions and rationale with the cited cues highlighted. The "
            "model options are chat's. Prints the page's URL; Ctrl-C stops the server and removes uploads."
        ),
    )
    parser.add_argument(
        "clip", nargs="?", help="open this clip at start (video/audio file or transcript .txt)"
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)"
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        metavar="MB",
        help=f"largest file the page accepts (default {DEFAULT_MAX_UPLOAD_MB:g} MB)",
    )
    parser.add_argument(
        "--open", dest="open_browser", action="store_true", help="open the page in the default web browser"
    )
    add_quiet_option(parser)
    add_model_arguments(parser)
    add_textualize_arguments(parser)
    parser.set_defaults(func=run)


def _check_options(args: argparse.Namespace) -> None:
    """Refuse bad options before anything loads (the model loads in the background, where an error would
    only show in the page)."""
    from affectllm.cli.chat import chosen_backend, prompt_settings

    prompt_settings(args)
    chosen_backend(args)
    if not 0 <= args.port <= 65535:
        raise InputError(None, f"--port {args.port}: expected 0-65535")
    if not args.max_upload_mb > 0:
        raise InputError(None, f"--max-upload-mb {args.max_upload_mb:g}: expected a positive size")
    if not args.clip:
        given = [flag for flag, value in (("--au-csv", args.au_csv), ("--captions", args.captions),
                                          ("--transcript", args.transcript)) if value]  # fmt: skip
        if given:
            raise InputError(None, f"{', '.join(given)} describe CLIP; name the clip too (or upload both)")


def run(args: argparse.Namespace) -> int:
    from affectllm.cli.chat import clip_settings, reasoner_from_args
    from affectllm.ui.server import start_server
    from affectllm.ui.uploads import UploadStore
    from affectllm.ui.workbench import ModelSlot, Workbench

    _check_options(args)
    workbench = Workbench(
        ModelSlot(lambda: reasoner_from_args(args)),
        clip_settings(args),
        UploadStore(int(args.max_upload_mb * 1e6)),
    )
    try:
        if args.clip:
            if not args.quiet:
                log.info("reading the evidence in %s ...", args.clip)
            workbench.open_path(
                args.clip, au_csv=args.au_csv, captions=args.captions, transcript=args.transcript
            )
        server = start_server(workbench, args.host, args.port)
    except BaseException:
        workbench.close()
        raise
    workbench.model.start()
    if server.allowed_hosts() is None:
        log.warning(
            "listening on %s: anyone who can reach this address can use the page and the model (no login)",
            args.host,
        )
    if threading.current_thread() is threading.main_thread():
        # A plain `kill` should clean up like Ctrl-C: uploads live in a temporary folder removed on exit.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"affectllm ui: {server.url}  (Ctrl-C stops it)", flush=True)
    if args.open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("affectllm ui: stopped", file=sys.stderr)
    finally:
        server.close()
    return 0
