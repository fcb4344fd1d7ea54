"""Live sources: a producer thread reads the stream into a bounded queue that drops its
oldest frames when the consumer falls behind, reconnects with exponential backoff, and
gives up with a clear error after a while without frames.

``LiveSource`` holds that machinery; ``PyAVLiveSource`` (registered as ``rtsp``) reads
RTSP and other network streams FFmpeg can open. The OpenCV camera builds on the same base.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from abc import abstractmethod
from fractions import Fraction
from typing import Any, Iterator

import numpy as np

from ..config import SourceConfig
from ..errors import SourceError
from ..types import AudioChunk, Frame, FrameSource
from . import register_source
from ._common import Sampler, ffmpeg_reason, first_line, identify, rotate_upright, scaled_size
from .audio import CHUNK_SECONDS, RATE, resampled, resampler

log = logging.getLogger(__name__)


class DropOldestQueue:
    """A bounded FIFO: ``put`` never blocks; when full the oldest item is dropped and counted."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.high_water = 0

    def put(self, item: Any) -> int:
        """Add ``item``; return how many items were dropped to make room (0 or 1)."""
        with self._cond:
            dropped = 0
            while len(self._items) >= self.maxsize:
                self._items.popleft()
                dropped += 1
            self._items.append(item)
            self.dropped += dropped
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify()
            return dropped

    def get(self, timeout: float) -> Any | None:
        """The oldest item, or None when nothing arrived within ``timeout`` seconds."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def clear(self) -> int:
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class LiveSource(FrameSource):
    """Base of sources that never end on their own (streams, cameras).

    Subclasses implement :meth:`_session`, which connects and yields ``(time_s, picture)``
    until the connection ends (``time_s`` may be None when the device gives no time;
    ``picture`` is what :meth:`_to_image` turns into an RGB array). ``pts`` delivered
    start at 0 and stay increasing across reconnects: a new session continues from the last
    time plus the wall-clock gap, and the gap is recorded in ``stats.gaps``.
    """

    kind = "stream"
    fix_hint = "check that the source is running and the address is right"

    def __init__(self, uri: str, config: SourceConfig | None = None, source_id: str | None = None) -> None:
        identify(self, uri, config, source_id)
        self._queue = DropOldestQueue(self.config.queue_size)
        # audio side channel: chunks of about a second, the oldest dropped when nobody reads
        self._audio_q = DropOldestQueue(self.config.queue_size)
        self._has_audio = False
        self._stop = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._fps: Fraction | None = None
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ interface
    @property
    def fps(self) -> Fraction | None:
        return self._fps

    @property
    def duration(self) -> float | None:
        return None

    @property
    def is_live(self) -> bool:
        return True

    @property
    def queue_high_water(self) -> int:
        """The most frames the queue ever held (never more than ``config.queue_size``)."""
        return self._queue.high_water

    @property
    def has_audio(self) -> bool:
        """True once a connection found an audio track."""
        return self._has_audio

    def read_audio(self, until: float) -> list[AudioChunk]:
        """The audio chunks that arrived since the last call (``until`` is not waited for)."""
        out = []
        while (item := self._audio_q.get(0.0)) is not None:
            out.append(item)
        return out

    @abstractmethod
    def _session(self) -> Iterator[tuple[float | None, Any]]:
        """Connect and yield ``(time_s, picture)``; raise on failure; return when it ends.
        Audio comes the same way, as ``(time_s, AudioChunk)`` (its own start is ignored)."""

    def _to_image(self, picture: Any) -> np.ndarray:
        return picture

    def _read_timeout(self) -> float:
        return max(0.5, min(self.config.open_timeout, 5.0))

    # ------------------------------------------------------------------ producer
    def start(self) -> None:
        """Start the producer thread (iteration starts it too)."""
        with self._lock:
            if self._closed:
                raise SourceError(f"{self.kind} {self.uri} is closed; fix: open it again with open_source()")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"streamvid-source-{self.source_id}",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as err:  # noqa: BLE001 - forwarded to the consumer
            self._error = err
        finally:
            self._done.set()
            self._queue.wake()

    def _produce(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_initial
        started = time.monotonic()
        last_frame_wall: float | None = None
        last_pts: float | None = None
        attempts = 0
        last_err: BaseException | None = None
        end = None if cfg.duration is None else cfg.start + cfg.duration
        sampler = Sampler(cfg.fps, cfg.start, end)
        while not self._stop.is_set():
            attempts += 1
            session_first: float | None = None
            offset = 0.0
            prev_raw: float | None = None
            got_any = False
            gen = None
            try:
                gen = self._session()
                for raw_t, picture in gen:
                    if self._stop.is_set():
                        return
                    if isinstance(picture, AudioChunk):
                        # on the frames' clock; audio before a session's first frame is dropped
                        if session_first is not None and raw_t is not None:
                            t = offset + (raw_t - session_first)
                            if t >= 0 and self._audio_q.put(AudioChunk(
                                    t, picture.samples, picture.rate, self.source_id)):
                                self._stats.audio_dropped += 1
                        continue
                    now_wall = time.time()
                    now_mono = time.monotonic()
                    if raw_t is None:
                        raw_t = (prev_raw + self._nominal_step()) if prev_raw is not None else 0.0
                    if session_first is None:
                        session_first = raw_t
                        if last_pts is None:
                            offset = 0.0
                        else:
                            gap = max(now_mono - (last_frame_wall or now_mono), self._nominal_step())
                            offset = last_pts + gap
                    elif prev_raw is not None and raw_t <= prev_raw:
                        # the stream's clock jumped back: continue from the last time
                        offset += (prev_raw - raw_t) + self._nominal_step()
                    prev_raw = raw_t
                    pts = offset + (raw_t - session_first)
                    if last_pts is not None and pts <= last_pts:
                        pts = last_pts + 1e-3
                    if not got_any:
                        got_any = True
                        if last_pts is not None:
                            self._stats.reconnects += 1
                            self._stats.gaps.append((last_pts, pts))
                            log.warning("%s %s: reconnected after %.1f s without frames", self.kind,
                                        self.uri, now_mono - (last_frame_wall or now_mono))
                        delay = cfg.reconnect_initial
                    last_pts = pts
                    last_frame_wall = now_mono
                    if sampler.past_end(pts):
                        return
                    if not sampler.want(pts):
                        continue
                    image = self._to_image(picture)
                    if self._queue.put((pts, image, now_wall)):
                        self._stats.dropped += 1
                        if self._stats.dropped == 1:
                            log.warning("%s %s: the consumer is slower than the stream; dropping the "
                                        "oldest frames (queue_size=%d), counted in stats.dropped",
                                        self.kind, self.uri, cfg.queue_size)
                last_err = None
            except SourceError as err:
                last_err = err
            except Exception as err:  # noqa: BLE001 - any failure of a connection leads to a retry
                last_err = err
            finally:
                if gen is not None:
                    try:
                        gen.close()
                    except Exception:  # noqa: BLE001
                        pass
            if self._stop.is_set():
                return
            since = time.monotonic() - (last_frame_wall if last_frame_wall is not None else started)
            why = f"; last error: {first_line(last_err)}" if last_err is not None else ""
            if since >= cfg.give_up_after:
                if last_pts is None:
                    raise SourceError(
                        f"cannot open {self.kind} {self.uri}: no frames within {cfg.give_up_after:g} s "
                        f"({attempts} attempts{why}); fix: {self.fix_hint}, or raise source.give_up_after")
                raise SourceError(
                    f"{self.kind} {self.uri} stopped: no frames for {since:.1f} s after "
                    f"{attempts} reconnect attempts{why}; fix: {self.fix_hint}, or raise source.give_up_after")
            wait = min(delay, max(0.0, cfg.give_up_after - since))
            log.info("%s %s: connection ended%s; reconnecting in %.2f s", self.kind, self.uri, why, wait)
            if self._stop.wait(wait):
                return
            delay = min(max(delay * 2, 1e-3), cfg.reconnect_max)

    def _nominal_step(self) -> float:
        return float(1 / self._fps) if self._fps else 0.04

    # ------------------------------------------------------------------ consumer
    def __iter__(self) -> Iterator[Frame]:
        self.start()
        try:
            yield from self._consume()
        except KeyboardInterrupt:
            self.close()
            raise

    def _consume(self) -> Iterator[Frame]:
        poll = 0.1
        while True:
            item = self._queue.get(poll)
            if item is None:
                if self._error is not None and not len(self._queue):
                    err, self._error = self._error, None
                    raise err
                if self._done.is_set() and not len(self._queue):
                    return
                continue
            pts, image, recv = item
            frame = Frame(pts=pts, index=self._stats.frames, image=image, source_id=self.source_id,
                          recv_time=recv)
            self._stats.frames += 1
            yield frame

    def close(self) -> None:
        """Stop the producer, drop what is queued and wait for the thread to end."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._stop.set()
        self._queue.clear()
        self._queue.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._read_timeout() + 5.0)
            if thread.is_alive():
                log.warning("%s %s: the reader thread did not stop within %.0f s", self.kind, self.uri,
                            self._read_timeout() + 5.0)
        self._queue.clear()


@register_source("rtsp")
class PyAVLiveSource(LiveSource):
    """An RTSP (or other live network) stream read with PyAV over TCP, reconnecting."""

    kind = "stream"

    def __init__(self, uri: str, config: SourceConfig | None = None, source_id: str | None = None,
                 **options: Any) -> None:
        import av  # noqa: F401 - fail early when PyAV is missing

        super().__init__(uri, config, source_id)
        self._options = {k: str(v) for k, v in options.items()}

    def _av_options(self) -> dict[str, str]:
        opts: dict[str, str] = {}
        if self.uri.lower().startswith(("rtsp://", "rtsps://")):
            opts["rtsp_transport"] = "tcp"
            # socket I/O timeout (microseconds) so a dead server does not hang the reader
            opts["timeout"] = str(int(self.config.open_timeout * 1_000_000))
        opts.update(self._options)
        return opts

    def _session(self) -> Iterator[tuple[float | None, Any]]:
        import av

        try:
            container = av.open(self.uri, options=self._av_options(),
                                timeout=(self.config.open_timeout, self._read_timeout()))
        except (av.error.FFmpegError, OSError) as err:
            raise SourceError(f"FFmpeg could not open it: {ffmpeg_reason(err)}") from err
        try:
            if not container.streams.video:
                raise SourceError("it has no video stream (check the URL's path)")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if rate and self._fps is None:
                self._fps = Fraction(rate)
            errors = 0
            astream = container.streams.audio[0] if container.streams.audio else None
            self._has_audio = self._has_audio or astream is not None
            rs = resampler() if astream is not None else None
            abuf: list[np.ndarray] = []
            abuf_t: float | None = None
            for packet in container.demux(*[s for s in (stream, astream) if s is not None]):
                if self._stop.is_set():
                    return
                if astream is not None and packet.stream.index == astream.index:
                    try:
                        afs = packet.decode()
                    except (av.error.FFmpegError, ValueError) as err:
                        self._stats.audio_errors += 1
                        if self._stats.audio_errors == 1:
                            log.warning("%s: skipping undecodable audio (%s); the frames go on",
                                        self.uri, first_line(err))
                        continue
                    for af in afs:
                        if af.time is None:
                            continue
                        if abuf_t is None:
                            abuf_t = float(af.time)
                        abuf.append(resampled(rs, af))
                        if sum(len(b) for b in abuf) >= CHUNK_SECONDS * RATE:
                            yield abuf_t, AudioChunk(0.0, np.concatenate(abuf), RATE)
                            abuf, abuf_t = [], None
                    continue
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as err:
                    errors += 1
                    self._stats.decode_errors += 1
                    if errors == 1:
                        log.warning("%s: skipping undecodable data (%s); further errors are only counted",
                                    self.uri, first_line(err))
                    continue
                for fr in frames:
                    yield (float(fr.time) if fr.time is not None else None), fr
        finally:
            container.close()

    def _to_image(self, picture: Any) -> np.ndarray:
        w, h = scaled_size(picture.width, picture.height, self.config.max_side)
        if (w, h) == (picture.width, picture.height):
            img = picture.to_ndarray(format="rgb24")
        else:
            img = picture.to_ndarray(format="rgb24", width=w, height=h)
        return rotate_upright(img, picture.rotation)
