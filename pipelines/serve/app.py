"""The HTTP API of ``streamvid serve``: a Starlette app over one :class:`LiveSession`.

Every answer is JSON; every error is ``{"error": "..."}`` with a 4xx status that names the
fix (a 500 says only that the server log has the details). With a token, every route but
the page itself needs ``Authorization: Bearer TOKEN`` (or ``?token=`` where a browser cannot
set headers: the event stream and keyframe images).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from streamvid.errors import QueryError, StreamvidError
from streamvid.types import Question

from ..ask import answer_json
from ..live import LiveSession

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
NET_SCHEMES = ("rtsp", "rtsps", "http", "https")
_SOURCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")
QUESTION_NICE = 10                 # questions run below the ingest thread's CPU priority


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


_low = threading.local()


def _at_low_priority(fn, *args, **kwargs):
    """Run ``fn`` in this worker thread reniced (Linux: per thread), so that on a busy CPU
    indexing the streams keeps up before questions are answered quickly."""
    if not getattr(_low, "done", False):
        _low.done = True
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), QUESTION_NICE)
        except (AttributeError, OSError):  # not Linux, or not allowed: run as is
            pass
    return fn(*args, **kwargs)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Guard:
    """ASGI middleware: the bearer token on every route but the page, and the body limit."""

    def __init__(self, app, *, token: str | None, max_body: int):
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        open_path = path == "/" or path.startswith("/static/")  # the page asks for the token
        if self.token and not open_path and not self._authorized(scope):
            resp = _error(401, "missing or wrong token; fix: send the header "
                               "'Authorization: Bearer TOKEN' (the token given to serve --token)")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return await resp(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            resp = _error(413, f"the request body is {int(length)} bytes, over the limit of "
                               f"{self.max_body}; fix: send a smaller image (or raise "
                               "serve --max-upload-mb)")
            return await resp(scope, receive, send)
        await self.app(scope, receive, send)

    def _authorized(self, scope) -> bool:
        headers = dict(scope.get("headers") or [])
        got = ""
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith("bearer "):
            got = auth[7:].strip()
        else:
            from urllib.parse import parse_qs

            got = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [""])[0]
        return bool(got) and hmac.compare_digest(got.encode(), self.token.encode())


# ---------------------------------------------------------------------------- inputs

async def _body(request: Request, max_body: int) -> bytes:
    body = await request.body()
    if len(body) > max_body:
        raise ApiError(413, f"the request body is {len(body)} bytes, over the limit of {max_body}; "
                            "fix: send a smaller image (or raise serve --max-upload-mb)")
    return body


async def _fields(request: Request, max_body: int) -> dict[str, Any]:
    """A JSON object (whatever the content type), or a multipart form (an image as a file)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        await _body(request, max_body)
        form = await request.form(max_part_size=max_body)
        out: dict[str, Any] = {}
        for key in form.keys():
            values = form.getlist(key)
            out[key] = values if len(values) > 1 else values[0]
        return out
    body = await _body(request, max_body)
    try:
        data = json.loads(body or b"null")
    except ValueError as err:
        raise ApiError(400, f"the body is not JSON ({err}); fix: send a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object; fix: send e.g. {\"text\": \"...\"}")
    return data


def _only(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    extra = sorted(set(data) - set(allowed))
    if extra:
        raise ApiError(400, f"unknown field {extra[0]!r}; fix: use only {', '.join(allowed)}")


def _number(data: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = data.get(key)
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ApiError(400, f"{key} must be a number, got {v!r}") from None
    if not math.isfinite(f) or not lo <= f <= hi:
        raise ApiError(400, f"{key} must be between {lo:g} and {hi:g}, got {v!r}")
    return f


def _source_ids(data: dict[str, Any]) -> list[str]:
    v = data.get("source_ids")
    if v is None or v == "":
        return []
    if isinstance(v, str):
        v = [s.strip() for s in v.split(",") if s.strip()]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ApiError(400, "source_ids must be a list of stream names")
    return v


async def _image(data: dict[str, Any]) -> np.ndarray | None:
    """An uploaded file, or a base64 string / data URL, read as an image."""
    import base64

    from ..ask import load_image

    v = data.get("image")
    if v is None or v == "":
        return None
    if isinstance(v, UploadFile):
        raw = await v.read()
    elif isinstance(v, str):
        try:
            raw = base64.b64decode(v.split(",", 1)[1] if v.startswith("data:") else v, validate=True)
        except ValueError:
            raise ApiError(400, "image must be base64 (or a data: URL) in JSON, or a file in a "
                                "multipart form") from None
    else:
        raise ApiError(400, "image must be base64 (or a data: URL) or an uploaded file")
    with tempfile.NamedTemporaryFile(suffix=".img") as fh:
        fh.write(raw)
        fh.flush()
        try:
            return load_image(fh.name)
        except QueryError:
            raise ApiError(400, "the image cannot be read; fix: send a PNG or JPEG") from None


def _question(data: dict[str, Any], image: np.ndarray | None) -> Question:
    text = data.get("text") or ""
    if not isinstance(text, str):
        raise ApiError(400, "text must be a string")
    if not text.strip() and image is None:
        raise ApiError(400, "give a text, an image or both; fix: send {\"text\": \"...\"}")
    return Question(text=text, image=image)


def _check_uri(uri: Any, roots: list[Path]) -> str:
    """Network streams and cameras pass; a file only when it lies under an allowed root."""
    if not isinstance(uri, str) or not uri.strip():
        raise ApiError(400, "uri is missing; fix: send {\"uri\": \"rtsp://host/path\", ...}")
    uri = uri.strip()
    if "://" in uri:
        scheme = uri.split("://", 1)[0].lower()
        if scheme not in NET_SCHEMES:
            raise ApiError(400, f"uri scheme {scheme!r} is not supported; fix: use "
                                f"{', '.join(NET_SCHEMES)}, a camera index, or a file under a media root")
        return uri
    if uri.isdigit() or re.fullmatch(r"/dev/video\d+", uri):
        return uri
    if not roots:
        raise ApiError(403, f"file {uri!r} refused: no media roots were given; fix: start serve "
                            "with --media-root DIR")
    p = Path(uri)
    candidates = [p] if p.is_absolute() else [r / p for r in roots]
    for c in candidates:
        real = c.resolve()
        if any(real.is_relative_to(r) for r in roots):
            if not real.is_file():
                raise ApiError(404, f"file {uri!r} does not exist under the media roots; fix: "
                                    "check the path")
            return str(real)
    raise ApiError(403, f"file {uri!r} is outside the allowed media roots; fix: use a file under "
                        f"{', '.join(str(r) for r in roots)}")


def _default_source_id(uri: str) -> str:
    name = Path(uri).name if "://" not in uri else uri.split("://", 1)[1]
    name = re.sub(r"[^A-Za-z0-9._@:-]+", "-", name).strip("-.") or "stream"
    return name[:100]


# ---------------------------------------------------------------------------- app

def create_app(session: LiveSession, *, token: str | None = None,
               media_roots: list[str | Path] = (), max_body: int = 8 << 20) -> Starlette:
    """The API and the page over ``session``."""
    roots = [Path(r).resolve() for r in media_roots]

    def stream_or_404(sid: str) -> dict[str, Any]:
        try:
            return session.stream(sid)
        except KeyError:
            raise ApiError(404, f"no stream {sid!r}; fix: GET /streams lists the streams") from None

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def add_stream(request: Request) -> Response:
        data = await _fields(request, max_body)
        _only(data, ("uri", "source_id", "fps"))
        uri = _check_uri(data.get("uri"), roots)
        sid = data.get("source_id") or _default_source_id(uri)
        if not isinstance(sid, str) or not _SOURCE_ID.match(sid):
            raise ApiError(400, f"source_id {sid!r} is not a valid name; fix: use letters, digits "
                                "and . _ @ : - (at most 100)")
        fps = _number(data, "fps", 0.001, 240.0)
        if any(s["source_id"] == sid for s in session.streams()):
            raise ApiError(409, f"a stream named {sid!r} is already running; fix: pick another "
                                f"source_id or DELETE /streams/{sid} first")
        status = await run_in_threadpool(session.add, uri, sid, fps=fps)
        return JSONResponse(status, status_code=201)

    async def list_streams(request: Request) -> Response:
        return JSONResponse({"streams": session.streams()})

    async def get_stream(request: Request) -> Response:
        return JSONResponse(stream_or_404(request.path_params["sid"]))

    async def delete_stream(request: Request) -> Response:
        sid = request.path_params["sid"]
        stream_or_404(sid)
        return JSONResponse(await run_in_threadpool(session.remove, sid))

    async def ask(request: Request) -> Response:
        data = await _fields(request, max_body)
        _only(data, ("text", "image", "source_ids", "start", "end", "top_k"))
        q = _question(data, await _image(data))
        sids = _source_ids(data)
        start, end = _number(data, "start", 0, 1e12), _number(data, "end", 0, 1e12)
        time_range = None
        if start is not None or end is not None:
            time_range = (start or 0.0, end if end is not None else 1e12)
        top_k = _number(data, "top_k", 1, 1000)
        ans = await run_in_threadpool(_at_low_priority, session.ask, q, top_k=int(top_k) if top_k else None,
                                      source_ids=sids or None, time_range=time_range)
        return JSONResponse(answer_json(ans, session.config.answer))

    async def keyframe(request: Request) -> Response:
        try:
            cid = int(request.path_params["cid"])
        except ValueError:
            raise ApiError(400, "a clip id is a number, as in the evidence's clip_id") from None
        jpeg = await run_in_threadpool(session.keyframe, cid)
        if jpeg is None:
            raise ApiError(404, f"no keyframe for clip {cid}; fix: use a clip_id from an answer "
                                "of this store")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    async def add_alert(request: Request) -> Response:
        data = await _fields(request, max_body)
        _only(data, ("text", "image", "source_ids", "threshold", "webhook"))
        image = await _image(data)
        q = _question(data, image)
        webhook = data.get("webhook") or ""
        if webhook and (not isinstance(webhook, str)
                        or not webhook.lower().startswith(("http://", "https://"))):
            raise ApiError(400, f"webhook {webhook!r} is not an http(s) URL")
        threshold = _number(data, "threshold", 0.0, 1.0)
        alert = await run_in_threadpool(
            lambda: session.add_alert(text=q.text, image=image, source_ids=_source_ids(data),
                                      threshold=0.5 if threshold is None else threshold,
                                      webhook=webhook))
        return JSONResponse(alert.to_json(), status_code=201)

    async def list_alerts(request: Request) -> Response:
        return JSONResponse({"alerts": [a.to_json() for a in session.alerts()]})

    async def delete_alert(request: Request) -> Response:
        try:
            alert = session.remove_alert(request.path_params["aid"])
        except KeyError:
            raise ApiError(404, f"no alert {request.path_params['aid']!r}; fix: GET /alerts lists "
                                "them") from None
        return JSONResponse(alert.to_json())

    async def events(request: Request) -> Response:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue(maxsize=1000)

        def push(event: dict[str, Any]) -> None:
            def put() -> None:
                if not q.full():
                    q.put_nowait(event)
            loop.call_soon_threadsafe(put)

        unsubscribe = session.subscribe(push)

        async def gen():
            try:
                yield "retry: 2000\n\n"
                n = 0
                while True:
                    try:
                        ev = await asyncio.wait_for(q.get(), timeout=10)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield ": keep-alive\n\n"
                        continue
                    n += 1
                    yield f"id: {n}\nevent: {ev['type']}\ndata: {json.dumps(ev)}\n\n"
            finally:
                unsubscribe()

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def health(request: Request) -> Response:
        ok = session.healthy()
        return JSONResponse({"status": "ok" if ok else "failing", "streams": len(session.streams()),
                             "clips": session.clips, "generation": session.generation},
                            status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(prometheus_text(session), media_type="text/plain; version=0.0.4")

    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc.status, str(exc))

    async def streamvid_error(request: Request, exc: StreamvidError) -> Response:
        return _error(400, str(exc))

    async def http_error(request: Request, exc: HTTPException) -> Response:
        msg = {404: f"no route {request.url.path}; fix: see the API list in the README",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                 str(exc.detail))
        return _error(exc.status_code, msg)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("error answering %s %s", request.method, request.url.path)
        return _error(500, "internal error; the server log has the details")

    routes = [
        Route("/", page),
        Route("/streams", add_stream, methods=["POST"]),
        Route("/streams", list_streams, methods=["GET"]),
        Route("/streams/{sid}", get_stream, methods=["GET"]),
        Route("/streams/{sid}", delete_stream, methods=["DELETE"]),
        Route("/ask", ask, methods=["POST"]),
        Route("/clips/{cid}/keyframe", keyframe, methods=["GET"]),
        Route("/alerts", add_alert, methods=["POST"]),
        Route("/alerts", list_alerts, methods=["GET"]),
        Route("/alerts/{aid}", delete_alert, methods=["DELETE"]),
        Route("/events", events, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={
        ApiError: api_error, StreamvidError: streamvid_error, HTTPException: http_error,
        Exception: server_error})
    app.add_middleware(Guard, token=token, max_body=max_body)
    return app


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(session: LiveSession) -> str:
    """Frames, drops, lag, queue, clips and ask latency in Prometheus' text format."""
    lines: list[str] = []
    per_stream = [
        ("streamvid_frames_received_total", "counter", "frames read from the source", "frames_in"),
        ("streamvid_frames_indexed_total", "counter", "frames through the indexing stages", "frames_out"),
        ("streamvid_frames_dropped_total", "counter", "live frames dropped by bounded queues", "drops"),
        ("streamvid_reconnects_total", "counter", "reconnects of the source", "reconnects"),
        ("streamvid_lag_seconds", "gauge", "receive-to-index delay of the last frame", "lag"),
        ("streamvid_queue_frames", "gauge", "frames waiting in the stream's queue", "queue"),
        ("streamvid_stream_clips", "gauge", "clips of the stream in the store", "clips"),
    ]
    streams = session.streams()
    for name, kind, help_, key in per_stream:
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for s in streams:
            lines.append(f'{name}{{source_id="{_label(s["source_id"])}"}} {float(s[key]):g}')
    lines += ["# HELP streamvid_clips clips in the store (last commit)", "# TYPE streamvid_clips gauge",
              f"streamvid_clips {session.clips}",
              "# HELP streamvid_commits_total commits of the store", "# TYPE streamvid_commits_total counter",
              f"streamvid_commits_total {session.commits}"]
    lat = sorted(session.ask_seconds)
    lines += ["# HELP streamvid_ask_seconds question latency (last 1000 questions)",
              "# TYPE streamvid_ask_seconds summary"]
    for q in (0.5, 0.95):
        v = lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
        lines.append(f'streamvid_ask_seconds{{quantile="{q}"}} {v:g}')
    lines += [f"streamvid_ask_seconds_sum {session.ask_total:g}", f"streamvid_ask_seconds_count {session.asks}"]
    return "\n".join(lines) + "\n"
