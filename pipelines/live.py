"""Live sessions: many sources into one store, questioned while it grows.

A :class:`LiveSession` loads the models once and owns the store's single writer. Each source
added to it gets a reader thread that fills a bounded queue (a live stream drops its oldest
frames when ingest falls behind and counts them; a file waits). One ingest thread takes
frames from every queue in turn, runs the indexing stages of that source and commits the
store on one schedule; after every commit the standing questions (alerts) are checked.
Questions are answered from another thread against the last commit.

``streamvid live``, ``demos/watch_a_stream.py`` and ``streamvid serve`` are clients of it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from streamvid.config import Config
from streamvid.errors import QueryError, SourceError, StoreError
from streamvid.io import atomic_write_json
from streamvid.sources.live import DropOldestQueue
from streamvid.types import Answer, Frame, Question

from .index import IndexSummary, Indexer, _fill, _Timer, check_same_config
from .models import Models

log = logging.getLogger(__name__)

STATE_FILE = "live.json"       # streams and alerts of a session, beside the store's manifest
ALERT_DIR = "live-alerts"      # images of image alerts
_RATE_WINDOW = 10.0            # seconds over which fps in/out are measured


@dataclass
class Alert:
    """A standing question, checked against the new clips of every commit."""

    id: str
    text: str = ""
    image_path: str = ""       # a PNG the alert keeps beside the store
    source_ids: tuple[str, ...] = ()
    threshold: float = 0.5
    webhook: str = ""
    created: float = field(default_factory=time.time)
    fired: int = 0
    checked_to: int = -1       # clips with ids up to this one were checked already

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "image": bool(self.image_path),
                "source_ids": list(self.source_ids), "threshold": self.threshold,
                "webhook": self.webhook, "created": self.created, "fired": self.fired}


class _Rate:
    """Events per second over the last few seconds."""

    def __init__(self) -> None:
        self._t: collections.deque[float] = collections.deque()

    def tick(self, now: float) -> None:
        self._t.append(now)

    def value(self, now: float) -> float:
        while self._t and self._t[0] < now - _RATE_WINDOW:
            self._t.popleft()
        if not self._t:
            return 0.0
        return len(self._t) / _RATE_WINDOW


class _Stream:
    """One source of a session: its reader thread, queue, indexer and counters."""

    def __init__(self, session: "LiveSession", uri: str, source_id: str, config: Config,
                 source: Any, offset: float, clips_before: int) -> None:
        self.uri, self.source_id, self.config, self.source = uri, source_id, config, source
        self.is_live = bool(source.is_live)
        self.offset = offset                      # pts shift so a resumed stream's times go on
        size = config.source.queue_size
        self.queue: Any = DropOldestQueue(size) if self.is_live else queue.Queue(size)
        self.state = "starting"
        self.persisted = True                     # resumed after a restart
        self.error = ""
        self.exception: BaseException | None = None
        self.started = time.time()
        self.lag = 0.0
        self.rate_in, self.rate_out = _Rate(), _Rate()
        self.frames_in = self.frames_out = 0
        self.queue_dropped = 0
        self.last_commit: float | None = None
        self.clips_before = clips_before
        self.reader_done = threading.Event()
        self.stop = threading.Event()
        self.flushed = threading.Event()        # the ingest thread has indexed all it held
        self.finished = threading.Event()       # ... and committed it (alerts checked)
        self.timer = _Timer()
        self.indexer = Indexer(config, session._writer, session.models, source_id, self.timer,
                               batch_size=1)
        self.summary = IndexSummary(source_id=source_id, store=str(session.store_dir))
        self.first_pts: float | None = None
        self.last_pts = 0.0
        self.t_start = time.perf_counter()
        self._seen_drops = self._seen_reconnects = 0
        self.reader = threading.Thread(target=self._read, name=f"streamvid-reader-{source_id}",
                                       daemon=True)

    def _read(self) -> None:
        try:
            for frame in self.source:
                if self.stop.is_set():
                    break
                now = time.time()
                if self.offset:
                    frame = dataclasses.replace(frame, pts=frame.pts + self.offset)
                self.frames_in += 1
                self.rate_in.tick(now)
                item = (frame, frame.recv_time or now)
                if self.is_live:
                    self.queue_dropped += self.queue.put(item)
                else:
                    while not self.stop.is_set():
                        try:
                            self.queue.put(item, timeout=0.2)
                            break
                        except queue.Full:
                            continue
        except BaseException as err:  # noqa: BLE001 - reported in the stream's status
            self.exception = err
            self.error = str(err) or err.__class__.__name__
            log.warning("stream %s (%s) failed: %s", self.source_id, self.uri, self.error)
        finally:
            self.source.close()
            self.reader_done.set()

    def request_stop(self) -> None:
        """Ask the reader to end; a live source is closed at once to wake it."""
        self.stop.set()
        if self.is_live:
            self.source.close()

    def take(self) -> tuple[Frame, float] | None:
        if self.is_live:
            return self.queue.get(0)
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            return None

    def status(self, clips_committed: int) -> dict[str, Any]:
        now = time.time()
        st = self.source.stats
        return {"source_id": self.source_id, "uri": self.uri, "state": self.state,
                "live": self.is_live, "lag": round(self.lag, 3),
                "fps_in": round(self.rate_in.value(now), 3),
                "fps_out": round(self.rate_out.value(now), 3),
                "frames_in": self.frames_in, "frames_out": self.frames_out,
                "queue": len(self.queue) if self.is_live else self.queue.qsize(),
                "drops": int(st.dropped) + self.queue_dropped, "reconnects": int(st.reconnects),
                "decode_errors": int(st.decode_errors), "last_commit": self.last_commit,
                "clips": clips_committed, "error": self.error, "started": self.started,
                "fps": self.config.source.fps}


class LiveSession:
    """Sources into one store, asked while it grows; use as a context manager.

    ``commit_every`` (seconds) is the one commit schedule of all sources (default:
    ``memory.commit_every``). With ``persist=True`` the streams and alerts are written beside
    the store (``live.json``) and :meth:`resume` starts them again after a restart.
    """

    def __init__(self, store_dir: str | Path, config: Config, *, models: Models | None = None,
                 commit_every: float | None = None, persist: bool = False) -> None:
        from memory.store import MemoryStore

        from .ask import Asker

        self.store_dir = Path(store_dir)
        self.config = config
        self.models = models or Models(config)
        self.commit_every = float(config.memory.commit_every if commit_every is None else commit_every)
        self.persist = persist
        if (self.store_dir / "manifest.json").exists():
            check_same_config(self.store_dir, config)
        _ = self.models.encoder, self.models.text_encoder, self.models.describer
        self._writer = MemoryStore.open(self.store_dir, self.models.store_spec(), mode="a",
                                        config=config.memory)
        try:
            config.save(self.store_dir / "config.yaml")
            self._asker = Asker(self.store_dir, config, models=self.models)
        except BaseException:
            self._writer.close()
            raise
        self._ask_lock = threading.Lock()       # the reader store and retriever are not shared
        self._lock = threading.RLock()          # streams, alerts, state file
        self._streams: dict[str, _Stream] = {}
        self._alerts: dict[str, Alert] = {}
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._committed = threading.Condition()
        self.generation = self._writer.generation
        self.clips = len(self._writer)
        self._commit_soon = False
        self.commits = 0
        self.ask_seconds: collections.deque[float] = collections.deque(maxlen=1000)
        self.asks = 0
        self.ask_total = 0.0
        self._ingest = threading.Thread(target=self._run, name="streamvid-ingest", daemon=True)
        self._ingest.start()

    # ------------------------------------------------------------------ events
    def subscribe(self, fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``fn(event)`` for every event (from the ingest thread); returns unsubscribe."""
        with self._lock:
            self._subscribers.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)
        return unsubscribe

    def _emit(self, kind: str, **data: Any) -> None:
        event = {"type": kind, "time": time.time(), **data}
        with self._lock:
            subs = list(self._subscribers)
        for fn in subs:
            try:
                fn(event)
            except Exception:  # noqa: BLE001 - a subscriber never stops ingest
                log.exception("event subscriber failed")

    # ------------------------------------------------------------------ streams
    def add(self, uri: str, source_id: str | None = None, *, fps: float | None = None,
            save: bool = True) -> dict[str, Any]:
        """Start indexing ``uri`` under ``source_id``; returns its status.

        A source id already in the store continues after its last time (a resumed stream).
        """
        from streamvid.sources import open_source

        cfg = self.config
        if fps is not None:
            cfg = cfg.replace(source=dataclasses.replace(cfg.source, fps=float(fps)))
        with self._lock:
            if self._stop.is_set():
                raise SourceError("the live session is closed; fix: start a new one")
            source = open_source(str(uri), cfg.source)
            sid = source_id or source.source_id or str(uri)
            old = self._streams.get(sid)
            if old is not None and old.finished.is_set():
                del self._streams[sid]
            elif old is not None:
                source.close()
                raise SourceError(f"a stream named {sid!r} is already running; fix: pass another "
                                  "source_id or remove that stream first")
            offset, before = self._resume_point(sid)
            if offset and not source.is_live:
                # a file goes on from where its committed clips end, in its own times
                source.close()
                cfg = cfg.replace(source=dataclasses.replace(cfg.source, start=offset))
                source = open_source(str(uri), cfg.source)
                offset = 0.0
            stream = _Stream(self, str(uri), sid, cfg, source, offset, before)
            self._streams[sid] = stream
            stream.reader.start()
            if save:
                self._save_state()
        self._emit("stream", source_id=sid, state="starting", uri=str(uri))
        self._wake.set()
        return stream.status(before)

    def _resume_point(self, sid: str) -> tuple[float, int]:
        """Where a source already in the store goes on: after its last committed time."""
        with self._ask_lock:
            self._asker.store.refresh()
            store = self._asker.store
            if sid not in store.sources():
                return 0.0, 0
            t = store.table()
            code = list(t["source_names"]).index(sid)
            mask = t["source"] == code
            end = float(t["end"][mask].max())
            return end + 1.0 / self.config.source.fps, int(mask.sum())

    def remove(self, source_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """Stop a stream; what it indexed is committed and stays in the store."""
        with self._lock:
            stream = self._streams.get(source_id)
            if stream is None:
                raise KeyError(source_id)
            stream.request_stop()
            stream.persisted = False
            self._save_state()
        self._wake.set()
        stream.finished.wait(timeout)
        with self._lock:
            self._streams.pop(source_id, None)
        return self._status_of(stream)

    def streams(self) -> list[dict[str, Any]]:
        with self._lock:
            streams = list(self._streams.values())
        return [self._status_of(s) for s in streams]

    def stream(self, source_id: str) -> dict[str, Any]:
        with self._lock:
            s = self._streams.get(source_id)
        if s is None:
            raise KeyError(source_id)
        return self._status_of(s)

    def _status_of(self, s: _Stream) -> dict[str, Any]:
        return s.status(s.clips_before + int(s.summary.clips))

    def summary(self, source_id: str) -> IndexSummary:
        with self._lock:
            return self._streams[source_id].summary

    def exception(self, source_id: str) -> BaseException | None:
        """The error that ended a stream, if one did."""
        with self._lock:
            return self._streams[source_id].exception

    def running(self) -> bool:
        """True while any stream is still reading or has frames to index."""
        with self._lock:
            return any(not s.finished.is_set() for s in self._streams.values())

    # ------------------------------------------------------------------ alerts
    def add_alert(self, *, text: str = "", image: np.ndarray | None = None,
                  source_ids: Iterable[str] = (), threshold: float = 0.5, webhook: str = "",
                  alert_id: str | None = None, image_path: str = "") -> Alert:
        """Register a standing question; it is checked on every commit."""
        if not text.strip() and image is None and not image_path:
            raise QueryError("an alert needs a text or an image; fix: give one of them")
        if not 0.0 <= float(threshold) <= 1.0:
            raise QueryError(f"alert threshold must be in 0..1, got {threshold}; fix: pass e.g. 0.5")
        aid = alert_id or uuid.uuid4().hex[:12]
        if image is not None:
            from PIL import Image

            d = self.store_dir / ALERT_DIR
            d.mkdir(exist_ok=True)
            image_path = str(d / f"{aid}.png")
            Image.fromarray(image).save(image_path)
        with self._ask_lock:  # an alert watches the clips that come after it
            self._asker.store.refresh()
            ids = self._asker.store.ids()
        alert = Alert(aid, text=text, image_path=image_path, source_ids=tuple(source_ids),
                      threshold=float(threshold), webhook=webhook,
                      checked_to=int(ids.max()) if len(ids) else -1)
        with self._lock:
            self._alerts[aid] = alert
            self._save_state()
        return alert

    def alerts(self) -> list[Alert]:
        with self._lock:
            return list(self._alerts.values())

    def remove_alert(self, alert_id: str) -> Alert:
        with self._lock:
            alert = self._alerts.pop(alert_id)
            self._save_state()
        if alert.image_path:
            Path(alert.image_path).unlink(missing_ok=True)
        return alert

    def _check_alerts(self) -> None:
        """Fire each alert on the committed clips it has not seen that score at or above its
        threshold (among the best ``retrieval.candidates`` clips of its question)."""
        from .ask import load_image

        ids = self._writer.ids()
        if not len(ids):
            return
        top = int(ids.max())
        for alert in self.alerts():
            if top <= alert.checked_to:
                continue
            try:
                image = load_image(alert.image_path) if alert.image_path else None
                q = Question(text=alert.text, image=image, image_path=alert.image_path)
                ans = self.ask(q, source_ids=alert.source_ids or None, after_clip=alert.checked_to,
                               record=False)
            except Exception as err:  # noqa: BLE001 - an alert that cannot run is reported
                self._emit("error", alert_id=alert.id, error=str(err))
                continue
            alert.checked_to = top
            for ev in ans.evidence:
                if ev.score < alert.threshold:
                    continue
                alert.fired += 1
                event = {"alert_id": alert.id, "text": alert.text, "clip_id": ev.clip_id,
                         "source_id": ev.source_id, "start": ev.start, "end": ev.end,
                         "score": round(ev.score, 4)}
                self._emit("alert", **event)
                if alert.webhook:
                    threading.Thread(target=_post_webhook, args=(alert.webhook, event),
                                     daemon=True).start()
        with self._lock:
            self._save_state()

    # ------------------------------------------------------------------ asking
    def ask(self, question: Question, *, top_k: int | None = None,
            source_ids: Iterable[str] | None = None,
            time_range: tuple[float, float] | None = None, after_clip: int | None = None,
            record: bool = True) -> Answer:
        """Answer ``question`` from the last commit (safe from any thread).

        ``source_ids``, ``time_range`` (seconds, overlapping clips) and ``after_clip`` (only
        clips with a higher id) restrict the evidence.
        """
        sids = list(source_ids or ())
        t0 = time.perf_counter()
        with self._ask_lock:
            asker = self._asker
            asker.store.refresh()
            known = asker.store.sources()
            unknown = [s for s in sids if s not in known]
            if unknown:
                raise QueryError(f"source {unknown[0]!r} has no clips in the store yet; "
                                 f"sources: {', '.join(known) or 'none'}")
            if len(sids) <= 1 and time_range is None and after_clip is None:
                ans = asker.ask(question, top_k=top_k, source=sids[0] if sids else None)
            else:
                ans = self._ask_filtered(question, top_k, sids, time_range, after_clip)
        if record:
            dt = time.perf_counter() - t0
            self.asks += 1
            self.ask_total += dt
            self.ask_seconds.append(dt)
        return ans

    def keyframe(self, clip_id: int) -> bytes | None:
        """The JPEG keyframe the store keeps for a clip, or None (no such clip, or a store
        without keyframes)."""
        with self._ask_lock:
            store = self._asker.store
            store.refresh()
            read = getattr(store, "keyframe", None)
            if read is None:
                return None
            try:
                return read(int(clip_id))
            except (KeyError, IndexError, StoreError):
                return None

    def healthy(self) -> bool:
        """False once the ingest thread has died."""
        return self._ingest is not None and self._ingest.is_alive()

    def _ask_filtered(self, question: Question, top_k: int | None, sids: list[str],
                      time_range: tuple[float, float] | None, after_clip: int | None) -> Answer:
        """Retrieve widely, keep the clips of ``sids`` within ``time_range`` (and after
        ``after_clip``), then answer."""
        from streamvid.types import Context

        asker = self._asker
        k = int(top_k or asker.config.retrieval.top_k)
        t0 = time.perf_counter()
        wide = max(k * 4, asker.config.retrieval.candidates)
        ctx = asker.retriever.retrieve(question, top_k=wide,
                                       source=sids[0] if len(sids) == 1 else None)

        def keep(c) -> bool:
            if sids and c.source_id not in sids:
                return False
            if after_clip is not None and c.id <= after_clip:
                return False
            return time_range is None or (c.end >= time_range[0] and c.start <= time_range[1])

        items = [it for it in ctx.items if keep(it.clip)]
        hits = sorted((it for it in items if not it.is_anchor), key=lambda it: -it.score)[:k]
        chosen = set(map(id, hits)) | {id(it) for it in items if it.is_anchor}
        ctx = Context(items=tuple(it for it in items if id(it) in chosen), budget=ctx.budget,
                      question=question)
        t1 = time.perf_counter()
        ans = asker.answerer.answer(question, ctx)
        timings = {"retrieve": t1 - t0, "answer": time.perf_counter() - t1,
                   "tokens_used": float(ctx.tokens_used), **ans.timings}
        return type(ans)(ans.answer, ans.evidence[:k], timings)

    def wait_commit(self, timeout: float | None = None, *, after: int | None = None) -> bool:
        """Wait until a commit newer than ``after`` (default: the current one) holds clips."""
        after = self.generation if after is None else after
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._committed:
            while not (self.generation > after and self.clips > 0):
                if self._stop.is_set() or (not self.running() and self.generation > after):
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._committed.wait(0.2 if left is None else min(left, 0.2))
            return self.generation > after

    # ------------------------------------------------------------------ ingest
    def _run(self) -> None:
        last_commit = time.monotonic()
        dirty = False
        try:
            while not self._stop.is_set():
                with self._lock:
                    streams = list(self._streams.values())
                worked = False
                for s in streams:
                    if s.flushed.is_set():
                        continue
                    item = None if s.stop.is_set() else s.take()
                    if item is not None:
                        self._push(s, *item)
                        worked = dirty = True
                    elif s.stop.is_set() or s.reader_done.is_set():
                        self._finish(s)
                        dirty = True
                    else:
                        self._watch(s)
                if dirty and (self._commit_soon
                              or time.monotonic() - last_commit >= self.commit_every):
                    self._commit_soon = False
                    self._commit()
                    last_commit = time.monotonic()
                    dirty = False
                if not worked:
                    self._wake.wait(0.05)
                    self._wake.clear()
        except BaseException as err:  # noqa: BLE001 - reported to the clients
            log.exception("live ingest failed")
            self._emit("error", error=str(err))
        finally:
            self._stop.set()

    def _push(self, s: _Stream, frame: Frame, received: float) -> None:
        if s.state in ("starting", "reconnecting"):
            s.state = "live"
            self._emit("stream", source_id=s.source_id, state="live")
        if s.first_pts is None:
            s.first_pts = frame.pts
        s.indexer.push(frame)
        s.last_pts = frame.pts
        s.summary.frames += 1
        now = time.time()
        s.lag = max(0.0, now - received)
        s.frames_out += 1
        s.rate_out.tick(now)
        self._watch(s)

    def _watch(self, s: _Stream) -> None:
        st = s.source.stats
        drops = int(st.dropped) + s.queue_dropped
        if st.reconnects > s._seen_reconnects:
            s._seen_reconnects = int(st.reconnects)
            self._emit("reconnect", source_id=s.source_id, reconnects=s._seen_reconnects)
        if drops > s._seen_drops:
            s._seen_drops = drops
            self._emit("drop", source_id=s.source_id, drops=drops)

    def _finish(self, s: _Stream) -> None:
        """Index what a stream still holds; it ended, failed or was stopped."""
        try:
            s.indexer.flush()
        except Exception as err:  # noqa: BLE001
            s.error = s.error or str(err)
        s.state = "stopped" if s.stop.is_set() else "error" if s.error else "ended"
        _fill(s.summary, s.indexer, s.source, s.timer, s.t_start, s.first_pts, s.last_pts)
        s.summary.stopped = s.stop.is_set()
        if s.error:
            self._emit("error", source_id=s.source_id, error=s.error)
        self._emit("stream", source_id=s.source_id, state=s.state)
        self._commit_soon = True
        if not s.is_live and s.state == "ended":
            with self._lock:  # a file read to its end is not read again after a restart
                s.persisted = False
                self._save_state()
        s.flushed.set()

    def _commit(self) -> None:
        with self._lock:
            streams = list(self._streams.values())
        for s in streams:
            if not s.flushed.is_set():
                s.indexer.add_pending()
        t = time.perf_counter()
        self._writer.commit()
        seconds = time.perf_counter() - t
        now = time.time()
        for s in streams:
            s.last_commit = now
            if not s.flushed.is_set():
                _fill(s.summary, s.indexer, s.source, s.timer, s.t_start, s.first_pts, s.last_pts)
        with self._committed:
            changed = self._writer.generation != self.generation
            self.generation = self._writer.generation
            self.clips = len(self._writer)
            self.commits += int(changed)
            self._committed.notify_all()
        if changed:  # else nothing new was indexed since the last commit
            self._emit("commit", generation=self.generation, clips=self.clips,
                       seconds=round(seconds, 3))
            if self._alerts:
                self._check_alerts()
        for s in streams:
            if s.flushed.is_set():
                s.finished.set()

    # ------------------------------------------------------------------ state
    def _save_state(self) -> None:
        if not self.persist:
            return
        streams = [{"uri": s.uri, "source_id": s.source_id, "fps": s.config.source.fps}
                   for s in self._streams.values() if s.persisted]
        alerts = [{"id": a.id, "text": a.text, "image_path": a.image_path,
                   "source_ids": list(a.source_ids), "threshold": a.threshold,
                   "webhook": a.webhook, "created": a.created, "fired": a.fired,
                   "checked_to": a.checked_to} for a in self._alerts.values()]
        atomic_write_json(self.store_dir / STATE_FILE, {"streams": streams, "alerts": alerts})

    def resume(self) -> list[str]:
        """Start the streams and register the alerts saved by an earlier session here."""
        p = self.store_dir / STATE_FILE
        if not p.is_file():
            return []
        try:
            state = json.loads(p.read_text())
        except (OSError, ValueError) as err:
            raise StoreError(f"{p} cannot be read ({err}); fix: remove it to start without the "
                             "saved streams and alerts") from err
        for a in state.get("alerts", []):
            with self._lock:
                self._alerts[a["id"]] = Alert(a["id"], text=a.get("text", ""),
                                              image_path=a.get("image_path", ""),
                                              source_ids=tuple(a.get("source_ids", ())),
                                              threshold=float(a.get("threshold", 0.5)),
                                              webhook=a.get("webhook", ""),
                                              created=float(a.get("created", time.time())),
                                              fired=int(a.get("fired", 0)),
                                              checked_to=int(a.get("checked_to", -1)))
        started = []
        for st in state.get("streams", []):
            try:
                self.add(st["uri"], st["source_id"], fps=st.get("fps"), save=False)
                started.append(st["source_id"])
            except Exception as err:  # noqa: BLE001 - one bad stream does not stop the others
                log.warning("cannot resume stream %s: %s", st.get("source_id"), err)
                self._emit("error", source_id=st.get("source_id"), error=str(err))
        return started

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Stop every stream, index what they hold, commit, and release the store."""
        if self._ingest is None:
            return
        with self._lock:
            streams = list(self._streams.values())
        for s in streams:
            s.request_stop()
        self._wake.set()
        deadline = time.monotonic() + 30
        while self._ingest.is_alive() and any(not s.finished.is_set() for s in streams) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._ingest.join(timeout=30)
        self._ingest = None  # type: ignore[assignment]
        try:
            self._writer.commit()
        finally:
            self._writer.close()
            with self._ask_lock:
                self._asker.close()

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _post_webhook(url: str, event: dict[str, Any]) -> None:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()
    except Exception as err:  # noqa: BLE001 - a webhook that fails is logged, not fatal
        log.warning("alert webhook %s failed: %s", url, err)
