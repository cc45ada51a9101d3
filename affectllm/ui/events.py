"""How a long step (model load, extraction with ASR, decoding) tells the page how it is going.

A job runs in its own thread and reports through a :class:`Reporter`; :func:`run_job` yields its events to the
request that started it, adding a heartbeat with the elapsed time whenever the job is quiet, so the page never
looks hung. When the request goes away (the tab was closed), ``Reporter.cancelled`` is set and a job that
checks it stops early.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from affectllm.errors import InputError, MissingExtraError

log = logging.getLogger(__name__)

# The errors whose message is already the whole story for a user (the ones `affectllm` prints without a
# traceback); anything else is a bug, logged with its traceback in the terminal.
USER_ERRORS = (InputError, MissingExtraError, FileNotFoundError, ConnectionError)


@dataclass
class Event:
    """One message to the page: ``kind`` is progress, token, clip, answer or error."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


class Cancelled(Exception):
    """The page that asked stopped listening; the job gives up quietly."""


class Reporter:
    """What a job calls to report progress and results."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.stage = ""
        self._queue: queue.Queue[Event | None] = queue.Queue()

    def progress(self, message: str) -> None:
        self.stage = message
        self.send("progress", message=message)

    def send(self, kind: str, **data: Any) -> None:
        self._queue.put(Event(kind, data))

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled


def user_message(exc: BaseException) -> str:
    """The message the page shows for a failed step: the CLI's own wording for bad input."""
    if isinstance(exc, USER_ERRORS):
        return str(exc)
    return f"internal error ({type(exc).__name__}: {exc}); the terminal running affectllm ui has the details"


def run_job(job: Callable[[Reporter], None], heartbeat_s: float = 1.0) -> Iterator[Event]:
    """Run ``job`` in a thread and yield what it reports, then stop when it ends. A failure becomes one
    ``error`` event; every event carries ``elapsed`` (seconds since the job started)."""
    reporter = Reporter()
    started = time.monotonic()

    def target() -> None:
        try:
            job(reporter)
        except Cancelled:
            pass
        except BaseException as exc:
            if not isinstance(exc, USER_ERRORS):
                log.error("a page request failed", exc_info=exc)
            reporter.send("error", message=user_message(exc))
        finally:
            reporter._queue.put(None)

    threading.Thread(target=target, name="affectllm-ui-job", daemon=True).start()
    try:
        while True:
            try:
                event = reporter._queue.get(timeout=heartbeat_s)
            except queue.Empty:
                event = Event("progress", {"message": reporter.stage, "heartbeat": True})
            if event is None:
                return
            event.data["elapsed"] = round(time.monotonic() - started, 1)
            yield event
    finally:
        reporter.cancelled.set()
