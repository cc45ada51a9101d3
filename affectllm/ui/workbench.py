"""What the page works on: the model, the clips opened in it and a chat session per clip.

No HTTP here (``server.py`` maps requests onto these calls), so the page's behaviour is the chat command's:
clips are read by ``affectllm.clips.clip_from_path`` with the command's ``ClipSettings``, questions go through
the same ``ChatSession`` (first turn: the task's structured answer; then prose follow-ups), answers are the
same prediction records. The model loads in the background when the server starts, so a clip can be opened
(and its evidence read) while it loads.
"""

from __future__ import annotations

import logging
import mimetypes
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectllm.errors import InputError
from affectllm.schema import Clip, Prediction
from affectllm.settings import ClipSettings
from affectllm.ui.events import USER_ERRORS, Cancelled, Reporter, user_message
from affectllm.ui.uploads import UploadStore

log = logging.getLogger(__name__)

# The sidecars a clip may come with, as ``clip_from_path`` names them.
SIDECARS = ("au_csv", "captions", "transcript")


class ModelSlot:
    """The reasoner, loaded once in a background thread; ``wait`` blocks a question until it is ready."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        self._ready = threading.Event()
        self.reasoner: Any = None
        self.error: BaseException | None = None
        self.stage = "waiting to load the model"
        # One reply at a time: a backend holds one model and is not safe to call from two threads.
        self.generate_lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._run, name="affectllm-ui-model", daemon=True).start()

    def _run(self) -> None:
        self.stage = "loading the model"
        try:
            self.reasoner = self._load()
        except BaseException as exc:
            if not isinstance(exc, USER_ERRORS):
                log.error("the model could not be loaded", exc_info=exc)
            self.error = exc
        finally:
            self._ready.set()

    @property
    def status(self) -> str:
        if not self._ready.is_set():
            return "loading"
        return "failed" if self.error is not None else "ready"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.reasoner is not None:
            from affectllm.reasoner import model_name

            backend = self.reasoner.backend
            name = model_name(backend)
            out.update(
                backend=getattr(backend, "name", type(backend).__name__), name=name, label=_short_model(name)
            )
        if self.error is not None:
            out["error"] = user_message(self.error)
        return out

    def wait(self, reporter: Reporter) -> Any:
        while not self._ready.wait(0.25):
            if reporter.stage != self.stage:
                reporter.progress(self.stage)
            reporter.check()
        if self.error is not None:
            if isinstance(self.error, USER_ERRORS):
                raise self.error
            raise InputError(
                None, f"the model could not be loaded ({type(self.error).__name__}: {self.error})"
            )
        return self.reasoner

    def close(self) -> None:
        if self.reasoner is not None:
            self.reasoner.backend.close()


def _short_model(name: str | None) -> str | None:
    """``/cache/gemma-3-270m.gguf + /pkg/adapters/gemma3-270m-ov/adapter.gguf`` → ``gemma-3-270m.gguf +
    gemma3-270m-ov``: what fits in the page's header (the full name is its tooltip)."""
    if not name:
        return name
    parts = []
    for part in name.split(" + "):
        path = Path(part)
        if "/" not in part:
            parts.append(part)
        elif path.name.startswith("adapter") and path.parent.name:
            parts.append(path.parent.name)  # a PEFT or GGUF adapter is named by its folder
        else:
            parts.append(path.name)
    return " + ".join(parts)


@dataclass
class OpenClip:
    """A clip opened in the page, with its conversation and the timelines drawn for it."""

    key: str
    clip: Clip
    session: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    timelines: dict[int | None, bytes] = field(default_factory=dict)

    @property
    def media_kind(self) -> str | None:
        """``video``/``audio`` when the clip has a media file the browser can be given, else None."""
        if not self.clip.media or not Path(self.clip.media).is_file():
            return None
        kind = (mimetypes.guess_type(self.clip.media)[0] or "").split("/")[0]
        return kind if kind in ("video", "audio") else None

    def answers(self) -> list[Any]:
        """The conversation's answers (``reasoner.Turn`` with its parsed prediction), oldest first."""
        if self.session is None:
            return []
        return [t for t in self.session.turns if t.role == "assistant" and t.prediction is not None]


class Workbench:
    """The clips open in the page and the questions asked about them."""

    def __init__(self, model: ModelSlot, clip_settings: ClipSettings, uploads: UploadStore) -> None:
        self.model = model
        self.clip_settings = clip_settings
        self.uploads = uploads
        self.clips: dict[str, OpenClip] = {}
        # Extractors (ASR, prosody) load models of their own and share a cache: one clip is read at a time.
        self._extract_lock = threading.Lock()
        self._plot_lock = threading.Lock()

    # -- opening clips -----------------------------------------------------------------------------------
    def open_path(
        self, path: str | Path, reporter: Reporter | None = None, **sidecars: str | Path | None
    ) -> OpenClip:
        """Read a clip from disk as ``affectllm chat`` does (sidecars: ``au_csv``, ``captions``,
        ``transcript``)."""
        from affectllm.clips import clip_from_path

        unknown = set(sidecars) - set(SIDECARS)
        if unknown:
            raise ValueError(f"unknown sidecars {sorted(unknown)}")
        reporter = reporter or Reporter()
        if self._extract_lock.locked():
            reporter.progress("waiting for the clip being read to finish")
        with self._extract_lock:
            reporter.check()
            reporter.progress(f"reading the evidence in {self.uploads.user_name(path) or Path(path).name}")
            clip = clip_from_path(
                path,
                self.clip_settings,
                au_csv=sidecars.get("au_csv"),
                captions=sidecars.get("captions"),
                transcript_file=sidecars.get("transcript"),
            )
        opened = OpenClip(secrets.token_hex(6), clip)
        self.clips[opened.key] = opened
        return opened

    def open_uploads(self, tokens: Mapping[str, str | None], reporter: Reporter | None = None) -> OpenClip:
        """Open an uploaded clip: ``{"clip": token, "au_csv"?: token, "captions"?: token, "transcript"?: token}``.
        Errors name the file as the user uploaded it, not its private copy."""
        if not tokens.get("clip"):
            raise InputError(None, "choose a video, audio or transcript file to open")
        clip_file = self.uploads.get(str(tokens["clip"]))
        sidecars = {
            key: self.uploads.get(str(tokens[key])).path
            for key in SIDECARS
            if tokens.get(key) not in (None, "")
        }
        try:
            return self.open_path(clip_file.path, reporter, **sidecars)
        except InputError as exc:
            # Name the files as the user uploaded them, not by their private copies.
            name = self.uploads.user_name(exc.path)
            path = name if name is not None else exc.path
            raise InputError(path, self.uploads.redact(exc.problem), line=exc.line) from None

    def get(self, key: str) -> OpenClip:
        opened = self.clips.get(key)
        if opened is None:
            raise InputError(None, f"no open clip {key!r} (open it again)")
        return opened

    # -- what the page shows -----------------------------------------------------------------------------
    def clip_view(self, opened: OpenClip) -> dict[str, Any]:
        clip = opened.clip
        evidence = [
            {
                "id": e.id,
                "modality": e.cue.modality,
                "text": e.text.split(" ", 1)[1] if " " in e.text else e.text,
                "start": e.cue.start,
                "end": e.cue.end,
            }
            for e in clip.evidence()
        ]
        return {
            "key": opened.key,
            "clip": clip.clip_id,
            "media_kind": opened.media_kind,
            "media_url": f"/api/clips/{opened.key}/media" if opened.media_kind else None,
            "timeline_url": f"/api/clips/{opened.key}/timeline.png",
            "transcript": clip.transcript,
            "duration": clip.duration,
            "warnings": list(clip.warnings),
            "evidence": evidence,
            "answers": [self.answer_view(opened, i, turn) for i, turn in enumerate(opened.answers())],
        }

    def answer_view(self, opened: OpenClip, index: int, turn: Any) -> dict[str, Any]:
        """One answer as the page shows it: the prediction record plus the ids it cites (grounded or not)."""
        from affectllm.records import prediction_record
        from affectllm.timeline import cited_ids

        prediction: Prediction = turn.prediction
        # The timeline's reading of the citations, so the page and the picture highlight the same ids.
        evidence_ids = {e.id for e in opened.clip.evidence()}
        cited = cited_ids(prediction)
        record = prediction_record(opened.clip.clip_id, prediction, include_raw=False)
        return {
            "turn": index,
            "seconds": None if turn.seconds is None else round(turn.seconds, 1),
            "record": record,
            "emotions": record["emotions"],
            "answer": record["answer"],
            "rationale": record["rationale"],
            "cited": [i for i in cited if i in evidence_ids],
            "ungrounded": [i for i in cited if i not in evidence_ids],
            # Only the first answer of the ov/closed tasks has a format to follow; follow-ups are prose.
            "structured": index == 0 and self.model.reasoner.settings.task != "chat",
            "format_ok": prediction.format_ok,
            "problems": list(prediction.errors),
            "timeline_url": f"/api/clips/{opened.key}/timeline.png?turn={index}",
        }

    def info(self) -> dict[str, Any]:
        return {
            "model": self.model.describe(),
            "max_upload_bytes": self.uploads.max_bytes,
            "clips": [self.clip_view(c) for c in self.clips.values()],
        }

    def timeline_png(self, key: str, turn: int | None = None) -> bytes:
        """The clip's cue timeline, with the cues answer ``turn`` cites highlighted (drawn once, then kept)."""
        opened = self.get(key)
        answers = opened.answers()
        if turn is not None and not 0 <= turn < len(answers):
            raise InputError(None, f"clip {opened.clip.clip_id} has no answer {turn}")
        if turn not in opened.timelines:
            from affectllm.timeline import render_timeline

            with self._plot_lock:  # matplotlib's font cache and state are not thread-safe
                opened.timelines[turn] = render_timeline(
                    opened.clip, answers[turn].prediction if turn is not None else None
                )
        return opened.timelines[turn]

    # -- asking ------------------------------------------------------------------------------------------
    def ask(self, key: str, question: str | None, reporter: Reporter) -> dict[str, Any]:
        """Answer ``question`` about an open clip, streaming the reply's pieces as ``token`` events; returns
        the answer's view. The first question gets the task's structured answer (``None``: the default
        analysis), later ones prose follow-ups, as in ``affectllm chat``."""
        opened = self.get(key)
        question = (question or "").strip() or None
        reasoner = self.model.wait(reporter)
        if self.model.generate_lock.locked() or opened.lock.locked():
            reporter.progress("waiting for the reply being written to finish")
        with opened.lock, self.model.generate_lock:
            reporter.check()
            if opened.session is None:
                opened.session = reasoner.chat(opened.clip)
            session = opened.session
            if session.turns and question is None:
                raise InputError(None, "type a question (the first answer already analysed the clip)")
            reporter.progress("decoding the reply")
            # A ranked (likelihood) first answer comes from one scoring pass: the stream yields it whole.
            pieces = session.stream_reply(question)
            try:
                for piece in pieces:
                    reporter.check()
                    reporter.send("token", text=piece)
            except Cancelled:
                pieces.close()  # the turn is not recorded, as when chat's Ctrl-C stops a reply
                raise
        answers = opened.answers()
        return self.answer_view(opened, len(answers) - 1, answers[-1])

    def close(self) -> None:
        self.model.close()
        self.uploads.close()
