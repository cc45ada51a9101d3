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
import re
import sys
from pathlib import Path
from typing import Any

from affectllm.errors import InputError

BACKEND_CHOICES = ("transformers", "llamacpp", "vllm", "openai")
REPL_HELP = """\
Ask anything about the clip; the model sees the evidence and the conversation so far.
  /cues           show the evidence extracted from the clip (ids the model cites)
  /save [FILE]    write the conversation (.md for Markdown, anything else JSON)
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
        "--few-shot", dest="few_shot", action="store_true", default=None, help="prepend examples"
    )
    group.add_argument("--no-few-shot", dest="few_shot", action="store_false", help="never prepend examples")
    if decoding_defaults:
        group.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
        group.add_argument("--max-tokens", type=int, default=384, help="maximum new tokens per reply")
    else:
        group.add_argument("--max-tokens", type=int, help="override the task's max_new_tokens")
        group.add_argument("--temperature", type=float, help="override the task's temperature")
    if prompt_options:
        group.add_argument("--max-cue-tokens", type=int, help="cap on the evidence block's length in tokens")


def add_textualize_arguments(parser: argparse.ArgumentParser) -> None:
    """Options passed to affectllm.textualize.textualize_clip."""
    group = parser.add_argument_group("evidence")
    group.add_argument(
        "--modalities",
        nargs="+",
        metavar="M",
        help="extractors to run: audio face scene (default: all available)",
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


def reasoner_from_args(args: argparse.Namespace):
    """Load the backend the options name (defaults from affectllm.models) as an EmotionReasoner."""
    from affectllm.reasoner import default_generation, load_reasoner

    if args.max_tokens < 1:
        raise InputError(None, "--max-tokens must be at least 1")
    generation = default_generation(args.task, args.max_tokens, args.temperature)
    return load_reasoner(
        backend=chosen_backend(args),
        model=args.model,
        adapter=args.adapter,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        task=args.task,
        generation=generation,
        few_shot=args.few_shot,
        labels=parse_labels(args.labels),
        max_cue_tokens=args.max_cue_tokens,
    )


def textualize_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"use_cache": not args.no_cache}
    if args.modalities:
        options["modalities"] = tuple(args.modalities)
    if args.au_csv:
        options["au_csv"] = args.au_csv
    if args.captions:
        options["captions"] = args.captions
    if args.transcript:
        path = Path(args.transcript)
        read_transcript(path)
        options["transcript"] = str(path)
    options["asr"] = None if str(args.asr).lower() in ("none", "off", "") else args.asr
    if args.asr_model:
        options["asr_model"] = args.asr_model
    return options


def read_transcript(path: Path) -> str:
    if not path.is_file():
        raise InputError(path, "transcript file not found")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(path, "transcript is not UTF-8 text") from None
    if not text:
        raise InputError(path, "transcript is empty")
    return " ".join(text.split())


def load_clip(clip: str, options: dict[str, Any]):
    """Textualize CLIP; a ``.txt`` is a transcript-only clip (linguistic cues, no media to analyse)."""
    from affectllm.textualize import textualize_clip

    path = Path(clip).expanduser()
    if not path.exists():
        raise InputError(path, "clip not found")
    if path.suffix.lower() == ".txt" and not path.name.lower().endswith(".transcript.txt"):
        read_transcript(path)  # fail early, naming the file, on an empty or non-UTF-8 transcript
        row = {"id": path.stem, "transcript": str(path.resolve())}
        return require_evidence(textualize_clip(row, **{**options, "modalities": (), "asr": None}))
    return require_evidence(textualize_clip(str(path), **options))


def require_evidence(clip):
    """A clip from which nothing at all could be extracted (e.g. a corrupt video) is an input error: asking a
    model about it would only produce a guess dressed up as an analysis."""
    if clip.cues or (clip.transcript and clip.transcript.strip()):
        return clip
    reasons = "; ".join(clip.warnings) or "no cues and no transcript"
    raise InputError(clip.media or clip.clip_id, f"no evidence could be extracted ({reasons})")


# ------------------------------------------------------------------------------------------------- output
def answer_text(prediction) -> str:
    """The reply as prose: the model's own free text when it wrote some (a chat reply, the think part),
    otherwise one sentence rendered from the structured answer, so ``answer`` is never empty when the model
    did answer."""
    if prediction.answer and prediction.answer.strip():
        return prediction.answer.strip()
    if not prediction.emotions:
        return prediction.raw.strip()
    words = list(prediction.emotions)
    named = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    text = f"The speaker seems {named}."
    cited = [f"{r.cue} [{r.cue_id}]" if r.cue_id else r.cue for r in prediction.rationale if r.cue]
    if cited:
        text += " Evidence: " + "; ".join(cited) + "."
    return text


def json_answer(prediction) -> dict[str, Any]:
    """The scriptable contract: exactly emotions, rationale and answer."""
    return {
        "emotions": list(prediction.emotions),
        "rationale": [r.to_dict() for r in prediction.rationale],
        "answer": answer_text(prediction),
    }


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2}


def summary_lines(prediction, clip=None) -> list[str]:
    """Emotions and cited evidence. When the model's description of a cited cue shares almost no words with
    the evidence line it cites, the evidence is shown too: small models invent or copy citations, and a
    reader should see that without running the grounding metric."""
    evidence: dict[str, str] = {}
    if clip is not None:
        from affectllm.textualize.render import assign_ids, cue_line

        evidence = {cid: cue_line(cid, cue).split(" ", 1)[1] for cid, cue in assign_ids(clip.cues)}
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
    """Stream one reply; for structured tasks follow it with the parsed emotions and cited evidence."""
    try:
        _stream_to(out, session.stream_reply(text))
    except KeyboardInterrupt:
        out.write("\n(stopped)\n")
        return
    pred = session.last_prediction
    if session.reasoner.task != "chat" and pred is not None and session.turns[-1].prediction is pred:
        lines = summary_lines(pred, session.clip)
        if lines:
            out.write("\n".join(lines) + "\n")


def _command(session, text: str, out) -> None:
    name, _, arg = text.partition(" ")
    arg = arg.strip()
    if name == "/cues":
        out.write(session.evidence_text() + "\n")
        if session.clip.transcript:
            out.write(f'Transcript: "{session.clip.transcript}"\n')
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
            "session with streaming replies. --json prints {emotions, rationale, answer}."
        ),
    )
    parser.add_argument("clip", help="video/audio file, or a transcript-only .txt")
    parser.add_argument(
        "question", nargs="?", help="answer this and exit (default: interactive session); right after CLIP"
    )
    # argparse cannot take an optional positional after options, so scripts may prefer the flag form.
    parser.add_argument("-q", "--question", dest="question_flag", metavar="QUESTION", help="same as QUESTION")
    parser.add_argument("--json", action="store_true", help="print {emotions, rationale, answer} as JSON")
    add_model_arguments(parser)
    add_textualize_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.question_flag:
        if args.question:
            raise InputError(None, "give the question once: as QUESTION or with --question")
        args.question = args.question_flag
    clip = load_clip(args.clip, textualize_options(args))
    try:
        return _run(args, clip)
    except ConnectionError as exc:
        # A server that is down or refuses the key: say so plainly, as for bad input.
        print(f"affectllm: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, clip) -> int:
    reasoner = reasoner_from_args(args)
    try:
        session = reasoner.chat(clip)
        if args.json:
            # One structured answer, even without a question: scripts need the contract, not a REPL.
            session.ask(args.question)
            print(json.dumps(json_answer(session.last_prediction), ensure_ascii=False))
            return 0
        if args.question:
            _stream_to(sys.stdout, session.stream_reply(args.question))
            pred = session.last_prediction
            if pred is not None and args.task != "chat":
                print("\n".join(summary_lines(pred, clip)))
            return 0
        # Piped stdin drives the same loop, so sessions can be scripted (and tested).
        print(_clip_header(clip, reasoner), file=sys.stderr)
        return repl(session)
    finally:
        reasoner.backend.close()
