"""``affectllm chat CLIP [QUESTION]``: ask an LLM about the emotions in a clip and see the evidence it cites.

The clip is textualized (cached per clip), then either QUESTION is answered once (``--json`` for scripts) or an
interactive session opens with streaming replies, ``/cues``, ``/save`` and follow-up questions. CLIP may be a
video, an audio file, or a transcript-only ``.txt``.

The model options here (``add_model_arguments`` / ``reasoner_from_args``) are shared with ``affectllm predict``
(and ``add_model_arguments`` with ``eval run``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from affectllm.cli._options import positive_int
from affectllm.errors import InputError

BACKEND_CHOICES = ("transformers", "llamacpp", "vllm", "openai", "mock")
REPL_HELP = """\
Ask anything about the clip; the model sees the evidence and the conversation so far.
  /cues           show the evidence extracted from the clip (ids the model cites)
  /save [FILE]    write the conversation (.md for Markdown, anything else JSON)
  /plot [FILE]    draw the cue timeline as a PNG, with the last answer's cited cues highlighted
  /help           this help
  exit, quit      leave (Ctrl-D works too; Ctrl-C stops a reply)"""


# ---------------------------------------------------------------------------------------------- options
def add_model_arguments(
    parser: argparse.ArgumentParser, prompt_options: bool = True, decoding_defaults: bool = True
) -> None:
    """Backend, model and decoding options shared by chat, predict and ``eval run``.

    ``eval run`` takes the prompt (task, labels, cue budget) and decoding settings from its task YAML, so it
    passes ``prompt_options=False`` (no --task/--labels/--max-cue-tokens) and ``decoding_defaults=False``
    (--max-tokens/--temperature default to None, meaning "keep the task's value").
    """
    group = parser.add_argument_group("model")
    group.add_argument(
        "--backend", choices=BACKEND_CHOICES, help="default: llamacpp if installed, else transformers"
    )
    group.add_argument("--model", help="model dir, hub id, .gguf file, or served model name (openai)")
    group.add_argument("--adapter", help="a LoRA adapter (PEFT folder; LoRA .gguf for llamacpp)")
    group.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    group.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env variable holding the API key")
    if prompt_options:
        group.add_argument(
            "--task", default="ov", choices=("ov", "closed", "chat"), help="prompt template (default ov)"
        )
        group.add_argument("--labels", help="comma-separated label set for --task closed")
        group.add_argument(
            "--label-prior",
            metavar="FILE",
            help="closed set chosen by likelihood with the label prior `eval run` fitted (OUT/label_prior.json);"
            " implies --task closed and, without --labels, the prior's labels",
        )
    group.add_argument(
        "--few-shot", dest="few_shot", action="store_true", default=None, help="prepend examples"
    )
    group.add_argument("--no-few-shot", dest="few_shot", action="store_false", help="never prepend examples")
    group.add_argument(
        "--decoding",
        choices=("auto", "generate", "likelihood"),
        default=None,
        help="generate the emotions, or rank candidates by likelihood (auto: by model; "
        + ("the task's value" if not decoding_defaults else "likelihood for the embedded model's ov answers")
        + ")",
    )
    if decoding_defaults:
        group.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
        group.add_argument(
            "--max-tokens", type=positive_int, default=384, help="maximum new tokens per reply"
        )
    else:
        group.add_argument("--max-tokens", type=positive_int, help="override the task's max_new_tokens")
        group.add_argument("--temperature", type=float, help="override the task's temperature")
    if prompt_options:
        group.add_argument("--max-cue-tokens", type=int, help="cap on the evidence block's length in tokens")
        group.add_argument(
            "--modalities",
            metavar="LIST",
            help="comma-separated cue modalities the prompt shows: acoustic,facial,visual-scene,linguistic",
        )


def add_textualize_arguments(parser: argparse.ArgumentParser) -> None:
    """How clips are read: the extractors that run on media, sidecars and ASR (``ClipSettings``)."""
    group = parser.add_argument_group("evidence")
    group.add_argument(
        "--extractors",
        metavar="LIST",
        help="comma-separated extractors to run on media: audio,face,scene (default: all; 'none' for none)",
    )
    group.add_argument("--au-csv", help="OpenFace AU CSV (default: <stem>.openface.csv beside the clip)")
    group.add_argument(
        "--captions", help="scene captions JSON (default: <stem>.captions.json beside the clip)"
    )
    group.add_argument("--transcript", help="transcript .txt to use instead of ASR")
    group.add_argument("--asr", default="faster-whisper", help="ASR engine ('none' to skip)")
    group.add_argument("--asr-model", help="ASR model name or path")
    group.add_argument("--no-cache", action="store_true", help="re-extract even when a cached result exists")


def parse_labels(value: str | None) -> list[str] | None:
    if not value:
        return None
    labels = [x.strip() for x in value.split(",") if x.strip()]
    return labels or None


def chosen_backend(args: argparse.Namespace) -> str | None:
    """The backend the model options name: ``--base-url`` alone implies an OpenAI-compatible server."""
    if args.base_url and args.backend not in (None, "openai"):
        raise InputError(None, f"--base-url needs --backend openai (got --backend {args.backend})")
    return "openai" if args.base_url and args.backend is None else args.backend


def label_prior(args: argparse.Namespace):
    """The LabelPrior ``--label-prior`` names, or None."""
    if not getattr(args, "label_prior", None):
        return None
    from affectllm.choice import LabelPrior

    return LabelPrior.read(args.label_prior)


def prompt_settings(args: argparse.Namespace):
    """The PromptSettings the chat/predict options describe."""
    from affectllm.settings import PromptSettings

    labels = tuple(parse_labels(args.labels) or ())
    task, decoding, calibration = args.task, args.decoding or "auto", "content_free"
    prior = label_prior(args)
    if prior is not None:
        # A prior only offsets the scores of a likelihood choice over its own labels.
        if args.task == "chat" or args.decoding == "generate":
            raise InputError(args.label_prior, "a label prior applies to closed sets chosen by likelihood")
        if labels and set(labels) != set(prior.labels):
            raise InputError(
                args.label_prior,
                f"the label prior was fitted for {', '.join(prior.labels)}, not for --labels {', '.join(labels)}",
            )
        task, labels, decoding, calibration = "closed", labels or prior.labels, "likelihood", "label_prior"
    return PromptSettings(
        task=task,
        labels=labels,
        modalities=args.modalities,
        max_cue_tokens=args.max_cue_tokens,
        decoding=decoding,
        calibration=calibration,
    )


def reasoner_from_args(args: argparse.Namespace):
    """Load the backend the options name (defaults from affectllm.models) as an EmotionReasoner."""
    from affectllm.reasoner import default_generation, load_reasoner

    settings = prompt_settings(args)
    reasoner = load_reasoner(
        backend=chosen_backend(args),
        model=args.model,
        adapter=args.adapter,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        settings=settings,
        generation=default_generation(settings.task, args.max_tokens, args.temperature),
        few_shot=args.few_shot,
    )
    reasoner.label_prior = label_prior(args)
    return reasoner


def clip_settings(args: argparse.Namespace):
    """The ClipSettings the evidence options describe."""
    from affectllm.settings import ClipSettings

    asr = None if str(args.asr).lower() in ("none", "off", "") else args.asr
    return ClipSettings(
        extractors=args.extractors if args.extractors is not None else ClipSettings().extractors,
        asr=asr,
        asr_model=args.asr_model,
        use_cache=not args.no_cache,
    )


def load_clip(args: argparse.Namespace):
    """CLIP as the options say: a video or audio file with its sidecars, or a transcript-only ``.txt``."""
    from affectllm.clips import clip_from_path

    return clip_from_path(
        args.clip,
        clip_settings(args),
        au_csv=args.au_csv,
        captions=args.captions,
        transcript_file=args.transcript,
    )


# ------------------------------------------------------------------------------------------------- output
def json_answer(prediction, clip_id: str) -> dict[str, Any]:
    """The scriptable contract: the one prediction record (``emotions``, ``rationale``, ``answer``, ``id``...)."""
    from affectllm.records import prediction_record

    return prediction_record(clip_id, prediction, include_raw=False)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2}


def summary_lines(prediction, clip=None) -> list[str]:
    """Emotions and cited evidence. When the model's description of a cited cue shares almost no words with
    the evidence line it cites, the evidence is shown too: small models invent or copy citations, and a
    reader should see that without running the grounding metric."""
    evidence: dict[str, str] = {}
    if clip is not None:
        evidence = {e.id: e.text.split(" ", 1)[1] for e in clip.evidence()}
    lines = []
    if prediction.emotions:
        lines.append("Emotions: " + ", ".join(prediction.emotions))
    for item in prediction.rationale:
        where = f" ({item.time})" if item.time else ""
        label = f"[{item.cue_id}] " if item.cue_id else ""
        modality = f"{item.modality}: " if item.modality else ""
        lines.append(f"  {label}{modality}{item.cue}{where}")
        cited = evidence.get(item.cue_id or "")
        if cited and item.cue and len(_words(item.cue) & _words(cited)) < 2:
            lines.append(f"      ! does not match the cited evidence: {cited}")
    if not prediction.format_ok and prediction.errors:
        lines.append("(the reply did not follow the answer format: " + "; ".join(prediction.errors[:2]) + ")")
    return lines


def _clip_header(clip, reasoner) -> str:
    counts: dict[str, int] = {}
    for cue in clip.cues:
        counts[cue.modality] = counts.get(cue.modality, 0) + 1
    found = ", ".join(f"{n} {m}" for m, n in counts.items()) or "no cues"
    from affectllm.reasoner import model_name

    backend = reasoner.backend
    return (
        f"{clip.clip_id}: {found}; model {getattr(backend, 'name', '?')} {model_name(backend) or ''}".rstrip()
    )


def _stream_to(out, pieces) -> str:
    chunks = []
    for piece in pieces:
        chunks.append(piece)
        out.write(piece)
        out.flush()
    out.write("\n")
    return "".join(chunks)


# --------------------------------------------------------------------------------------------------- REPL
def _setup_readline() -> Path | None:
    """Line editing and a persistent history when the terminal supports it."""
    if not sys.stdin.isatty():
        return None
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline
        return None
    from affectllm.resources import user_cache_dir

    history = user_cache_dir() / "chat_history"
    try:
        history.parent.mkdir(parents=True, exist_ok=True)
        if history.exists():
            readline.read_history_file(history)
        readline.set_history_length(1000)
    except OSError:
        return None
    return history


def _save_readline(history: Path | None) -> None:
    if history is None:
        return
    try:
        import readline

        readline.write_history_file(history)
    except (ImportError, OSError):
        pass


def repl(session, out=None, analyse_first: bool = True) -> int:
    """Interactive loop over stdin. Commands: /cues, /save [FILE], /help, exit/quit/Ctrl-D."""
    out = out or sys.stdout
    history_file = _setup_readline()
    out.write(REPL_HELP + "\n\n")
    echo = not sys.stdin.isatty()  # piped input is not echoed by a terminal; show it so transcripts read well
    if analyse_first:
        _reply(session, None, out)
    try:
        while True:
            try:
                line = input("\nyou> ")
                if echo:
                    out.write(line + "\n")
            except EOFError:
                out.write("\n")
                break
            except KeyboardInterrupt:
                out.write("\n")
                continue
            text = line.strip()
            if not text:
                continue
            if text.lower() in ("exit", "quit", "/exit", "/quit", ":q"):
                break
            if text.startswith("/"):
                _command(session, text, out)
                continue
            _reply(session, text, out)
    finally:
        _save_readline(history_file)
    return 0


def _reply(session, text: str | None, out) -> None:
    """One reply. Prose replies stream as they are decoded; a structured answer (the first turn of the ov and
    closed tasks) is shown as a sentence with the emotions and the evidence it cites, not as raw JSON."""
    from affectllm.records import answer_text

    try:
        if session.expects_structured_reply():
            session.ask(text)
        else:
            _stream_to(out, session.stream_reply(text))
            return
    except KeyboardInterrupt:
        out.write("\n(stopped)\n")
        return
    pred = session.last_prediction
    if pred is None:
        return
    out.write(answer_text(pred) + "\n")
    lines = summary_lines(pred, session.clip)
    if lines:
        out.write("\n".join(lines) + "\n")


def _command(session, text: str, out) -> None:
    name, _, arg = text.partition(" ")
    arg = arg.strip()
    if name == "/cues":
        out.write(session.evidence_text() + "\n")
        for warning in session.clip.warnings:
            out.write(f"(warning: {warning})\n")
    elif name == "/save":
        target = Path(arg) if arg else Path(f"{session.clip.clip_id}.chat.json")
        try:
            written = session.save(target)
        except OSError as exc:
            out.write(f"could not save to {target}: {exc}\n")
            return
        out.write(f"saved {len(session.turns)} turns to {written}\n")
    elif name == "/plot":
        from affectllm.timeline import render_timeline, ungrounded_ids

        target = Path(arg) if arg else Path(f"{session.clip.clip_id}.timeline.png")
        try:
            render_timeline(session.clip, session.last_prediction, path=target)
        except (ImportError, InputError) as exc:  # a missing extra or an unwritable path; the session goes on
            out.write(f"could not plot to {target}: {exc}\n")
            return
        missing = ungrounded_ids(session.clip, session.last_prediction)
        note = f" (cited but not in the evidence: {', '.join(missing)})" if missing else ""
        out.write(f"wrote the cue timeline to {target}{note}\n")
    elif name in ("/help", "/?"):
        out.write(REPL_HELP + "\n")
    else:
        out.write(f"unknown command {name}; /help lists the commands\n")


# -------------------------------------------------------------------------------------------------- entry
def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="ask about the emotions in a clip (one question, or an interactive session)",
        description=(
            "Textualize CLIP (video, audio, or a transcript .txt; sidecars <stem>.openface.csv and "
            "<stem>.captions.json are picked up), then answer QUESTION and exit, or open an interactive "
            "session with streaming replies. --json prints the prediction record {id, emotions, rationale, "
            "answer, ...}; without it the answer is shown as prose with the evidence it cites."
        ),
    )
    parser.add_argument("clip", help="video/audio file, or a transcript-only .txt")
    parser.add_argument(
        "question", nargs="?", help="answer this and exit (default: interactive session); right after CLIP"
    )
    # argparse cannot take an optional positional after options, so scripts may prefer the flag form.
    parser.add_argument("--question", dest="question_flag", metavar="QUESTION", help="same as QUESTION")
    parser.add_argument("--json", action="store_true", help="print the prediction record as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no status lines on stderr")
    add_model_arguments(parser)
    add_textualize_arguments(parser)
    parser.set_defaults(func=run)


def _status(args: argparse.Namespace, message: str) -> None:
    # A one-shot answer on a CPU takes seconds to minutes: say what is happening, on stderr so --json stays clean.
    if not args.quiet:
        logging.getLogger(__name__).info(message)


def run(args: argparse.Namespace) -> int:
    if args.question_flag:
        if args.question:
            raise InputError(None, "give the question once: as QUESTION or with --question")
        args.question = args.question_flag
    settings = prompt_settings(args)  # validate the prompt options before any heavy work
    _status(args, f"reading the evidence in {args.clip} ...")
    clip = load_clip(args)
    _status(args, f"{len(clip.evidence())} evidence lines; loading the model ...")
    try:
        return _run(args, clip, settings.task)
    except ConnectionError as exc:
        # A server that is down or refuses the key: say so plainly, as for bad input.
        print(f"affectllm: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, clip, task: str) -> int:
    reasoner = reasoner_from_args(args)
    try:
        session = reasoner.chat(clip)
        if args.json:
            # One structured answer, even without a question: scripts need the contract, not a REPL.
            _status(args, "answering ...")
            session.ask(args.question)
            print(json.dumps(json_answer(session.last_prediction, clip.clip_id), ensure_ascii=False))
            return 0
        if args.question:
            _status(args, "answering ...")
            _reply(session, args.question, sys.stdout)
            return 0
        # Piped stdin drives the same loop, so sessions can be scripted (and tested).
        print(_clip_header(clip, reasoner), file=sys.stderr)
        return repl(session)
    finally:
        reasoner.backend.close()
