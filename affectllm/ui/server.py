"""The page's HTTP server: the standard library's threaded server, one static page and a small JSON API.

    GET  /                                   the page (static/index.html, app.js, style.css)
    GET  /api/info                           the model's state, the upload limit, the clips already open
    POST /api/files?name=NAME                one file as the raw request body → {"file": token, ...}
    POST /api/clips                          {"clip": token, "au_csv"?, "captions"?, "transcript"?} → events
    POST /api/clips/KEY/ask                  {"question": "..."} → events (progress, token..., answer)
    GET  /api/clips/KEY/media                the clip's video or audio (byte ranges, so the player can seek)
    GET  /api/clips/KEY/timeline.png?turn=N  the cue timeline, with answer N's citations highlighted

"events" answers are server-sent events (``text/event-stream``) read by ``fetch``: ``progress`` (with the
elapsed seconds, at least once a second), ``token`` (a piece of the reply), then ``clip``/``answer`` or
``error`` (the message the CLI would print). Uploads are raw bodies, not multipart forms, so the server needs
no form parser and writes each file to disk as it arrives.

The server binds 127.0.0.1 by default. Because any web page the user visits may send requests to a local
port, POSTs must carry the ``X-Affectllm-UI`` header (a cross-site request cannot add one without a CORS
preflight, which this server refuses), and on a loopback address the Host header must name it (so a
DNS-rebinding site cannot reach the API).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from affectllm.errors import InputError
from affectllm.ui.events import USER_ERRORS, Event, Reporter, run_job, user_message
from affectllm.ui.workbench import Workbench

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
CSRF_HEADER = "X-Affectllm-UI"
MAX_JSON_BYTES = 64 * 1024
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
_CLIP_ROUTE = re.compile(r"^/api/clips/([0-9a-f]+)/(media|timeline\.png|ask)$")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class UIServer(ThreadingHTTPServer):
    """The page's server; ``url`` is where to point a browser. ``close()`` stops it and removes uploads."""

    daemon_threads = True

    def __init__(self, workbench: Workbench, host: str = "127.0.0.1", port: int = 0) -> None:
        self.workbench = workbench
        self.bound_host = host
        super().__init__((host, port), PageHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = self.bound_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/"

    def allowed_hosts(self) -> set[str] | None:
        """Host header values accepted on a loopback bind (None: any, when the user chose another address)."""
        if self.bound_host not in LOOPBACK_NAMES:
            return None
        return {f"{name}:{self.port}" for name in LOOPBACK_NAMES}

    def close(self) -> None:
        self.server_close()
        self.workbench.close()


class PageHandler(BaseHTTPRequestHandler):
    server: UIServer
    server_version = "affectllm-ui"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- dispatch ----------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_HEAD(self) -> None:
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def _dispatch(self, route) -> None:
        try:
            self._check_host()
            route(urlsplit(self.path))
        except HTTPError as exc:
            self._send_json({"error": str(exc)}, exc.status)
        except USER_ERRORS as exc:
            self._send_json({"error": user_message(exc)}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away
        except Exception as exc:
            log.error("%s %s failed", self.command, self.path, exc_info=exc)
            self._send_json({"error": user_message(exc)}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _check_host(self) -> None:
        allowed = self.server.allowed_hosts()
        if allowed is not None and self.headers.get("Host", "").lower() not in allowed:
            raise HTTPError(HTTPStatus.FORBIDDEN, "this page is served on a loopback address only")

    def _get(self, url) -> None:
        if url.path in STATIC_FILES:
            name, content_type = STATIC_FILES[url.path]
            self._send_bytes((STATIC_DIR / name).read_bytes(), content_type)
            return
        if url.path == "/favicon.ico":
            self._send_bytes(b"", "image/x-icon", HTTPStatus.NO_CONTENT)
            return
        if url.path == "/api/info":
            self._send_json(self.server.workbench.info())
            return
        match = _CLIP_ROUTE.match(url.path)
        if match and match.group(2) == "media":
            self._send_media(match.group(1))
            return
        if match and match.group(2) == "timeline.png":
            self._send_timeline(match.group(1), parse_qs(url.query).get("turn", [None])[0])
            return
        raise HTTPError(HTTPStatus.NOT_FOUND, f"no page {url.path}")

    def _post(self, url) -> None:
        if self.headers.get(CSRF_HEADER) != "1":
            raise HTTPError(HTTPStatus.FORBIDDEN, f"requests to the API need the {CSRF_HEADER} header")
        workbench = self.server.workbench
        if url.path == "/api/files":
            self._receive_file(parse_qs(url.query).get("name", [""])[0])
            return
        if url.path == "/api/clips":
            tokens = self._read_json()

            def open_clip(reporter: Reporter) -> None:
                opened = workbench.open_uploads(tokens, reporter)
                reporter.send("clip", **workbench.clip_view(opened))

            self._send_events(run_job(open_clip))
            return
        match = _CLIP_ROUTE.match(url.path)
        if match and match.group(2) == "ask":
            key, body = match.group(1), self._read_json()
            question = body.get("question")
            if question is not None and not isinstance(question, str):
                raise HTTPError(HTTPStatus.BAD_REQUEST, "question must be text")
            workbench.get(key)  # an unknown clip is a plain 400, before the event stream starts

            def answer(reporter: Reporter) -> None:
                reporter.send("answer", **workbench.ask(key, question, reporter))

            self._send_events(run_job(answer))
            return
        raise HTTPError(HTTPStatus.NOT_FOUND, f"no API {url.path}")

    # -- request bodies ----------------------------------------------------------------------------------
    def _content_length(self) -> int:
        value = self.headers.get("Content-Length")
        if value is None:
            raise HTTPError(HTTPStatus.LENGTH_REQUIRED, "the request needs a Content-Length")
        try:
            length = int(value)
        except ValueError:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "Content-Length is not a number") from None
        if length < 0:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "Content-Length is negative")
        return length

    def _read_json(self) -> dict[str, Any]:
        length = self._content_length()
        if length > MAX_JSON_BYTES:
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
        return body

    def _receive_file(self, name: str) -> None:
        if not name:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "name the uploaded file (?name=...)")
        length = self._content_length()
        store = self.server.workbench.uploads
        try:
            store.check_size(name, length)
        except InputError as exc:
            # Refused before reading: the connection closes with the rest of the body unread.
            self.close_connection = True
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc)) from None
        stored = store.save(name, self.rfile, length)
        self._send_json({"file": stored.token, "name": stored.name, "size": stored.size})

    # -- responses ---------------------------------------------------------------------------------------
    def _send_bytes(
        self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK, **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, data: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(data, ensure_ascii=False).encode("utf-8")
        self._send_bytes(body, "application/json; charset=utf-8", status)

    def _send_events(self, events: Iterator[Event]) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.close_connection = True  # the stream's end is the connection's end (HTTP/1.0)
        try:
            for event in events:
                payload = json.dumps(event.data, ensure_ascii=False)
                self.wfile.write(f"event: {event.kind}\ndata: {payload}\n\n".encode())
                self.wfile.flush()
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # a reader that went away cancels the job

    def _send_timeline(self, key: str, turn_text: str | None) -> None:
        try:
            turn = None if turn_text in (None, "") else int(turn_text)
        except ValueError:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"turn must be a number, not {turn_text!r}") from None
        try:
            png = self.server.workbench.timeline_png(key, turn)
        except ImportError as exc:
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, f"the timeline cannot be drawn: {exc}") from None
        self._send_bytes(png, "image/png")

    def _send_media(self, key: str) -> None:
        opened = self.server.workbench.get(key)
        if opened.media_kind is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"clip {opened.clip.clip_id} has no video or audio")
        path = Path(opened.clip.media or "")
        size = path.stat().st_size
        content_type = _media_type(path)
        start, end = 0, size - 1
        status = HTTPStatus.OK
        requested = self.headers.get("Range")
        if requested:
            match = _RANGE_RE.match(requested.strip())
            if not match or not (match.group(1) or match.group(2)):
                raise HTTPError(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, f"unsupported range {requested}")
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:  # "bytes=-N": the last N bytes
                start = max(0, size - int(match.group(2)))
            if start > end or start >= size:
                raise HTTPError(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, f"range {requested} is outside the file"
                )
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with path.open("rb") as media:
            media.seek(start)
            _copy(media, self.wfile, end - start + 1)


def _media_type(path: Path) -> str:
    import mimetypes

    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _copy(source, target, count: int) -> None:
    while count > 0:
        chunk = source.read(min(1 << 20, count))
        if not chunk:
            return
        target.write(chunk)
        count -= len(chunk)


def start_server(workbench: Workbench, host: str = "127.0.0.1", port: int = 0) -> UIServer:
    """Bind the page's server (``port=0``: a free port); the caller runs ``serve_forever`` and ``close``."""
    try:
        return UIServer(workbench, host, port)
    except OSError as exc:
        raise InputError(None, f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
