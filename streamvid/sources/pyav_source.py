"""Video files (and finite network streams FFmpeg can read) through PyAV — the default source.

Frames come out upright (the display rotation is applied), RGB, downscaled while converting
from the decoder's pixel format, at presentation times in seconds measured from the
container's start. Sparse sampling skips groups of frames by seeking when the file has a
keyframe index (``decode_mode="auto"``), or decodes keyframes only on request.
"""

from __future__ import annotations

import bisect
import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

from ..config import SourceConfig
from ..errors import SourceError
from ..types import Frame, FrameSource, SourceStats
from . import register_source
from ._common import (
    TIME_EPS,
    Sampler,
    file_size_problem,
    first_line,
    identify,
    open_error,
    rotate_upright,
    scaled_size,
)
from ._filebase import KnownLength, in_pts_order
from .audio import FileAudio

log = logging.getLogger(__name__)

# Frames a decoder may hand out of presentation order (streams that under-declare their
# reordering depth); they are put back in order through a buffer this deep.
REORDER_DEPTH = 4

# Containers whose keyframe index is complete when the file is opened, so a seek lands on
# the keyframe asked for (MPEG-PS/TS build theirs while reading and seek by bisection).
SEEKABLE_FORMATS = {"mov", "mp4", "matroska", "webm", "avi"}


def _av():
    import av

    return av


def describe_av_open_error(path: str, err: BaseException) -> tuple[str, str]:
    """(reason, fix) for an FFmpeg failure to open ``path``, in plain words."""
    text = first_line(err)
    p = Path(path)
    head = b""
    try:
        with open(p, "rb") as fh:
            head = fh.read(64)
    except OSError:
        pass
    if b"ftyp" in head[:12] and "Invalid data" in text:
        return ("the MP4 index (moov box) is missing, so the recording was probably cut off "
                "before it was finalised", "re-export or re-record it; a cut-off MP4 can only be "
                "repaired with a tool such as untrunc and an intact file from the same camera")
    if "Invalid data" in text:
        return ("FFmpeg does not recognise it as a video (invalid data)",
                "check that the file is a video and is not damaged")
    if isinstance(err, FileNotFoundError) or "No such file" in text:
        return ("the file does not exist", "check the path")
    return (f"FFmpeg failed: {text}", "check that the file is a complete, playable video")


@register_source("pyav")
class PyAVSource(KnownLength, FileAudio, FrameSource):
    """A video file read with PyAV (FFmpeg).

    ``uri`` is a path or a URL FFmpeg can read to its end (``http(s)://`` files). Sampling
    follows ``config.fps`` by presentation time, from ``config.start`` for
    ``config.duration`` seconds.
    """

    def __init__(self, uri: str, config: SourceConfig | None = None, source_id: str | None = None,
                 **options: Any) -> None:
        av = _av()
        identify(self, uri, config, source_id)
        self._logged_decode_error = False
        self._is_url = "://" in self.uri
        if not self._is_url:
            problem = file_size_problem(Path(self.uri))
            if problem:
                raise open_error(self.uri, problem, "PyAV")
        open_kw: dict[str, Any] = {"timeout": (self.config.open_timeout, self.config.open_timeout)}
        if options:
            open_kw["options"] = {k: str(v) for k, v in options.items()}
        try:
            self._container = av.open(self.uri, **open_kw)
        except (av.error.FFmpegError, OSError) as err:
            reason, fix = describe_av_open_error(self.uri, err)
            raise open_error(self.uri, reason, f"PyAV/FFmpeg {_ffmpeg_version()}", fix) from err
        if not self._container.streams.video:
            self._container.close()
            raise open_error(self.uri, "it has no video stream", "PyAV",
                             "pass a file with a video track")
        self._stream = self._container.streams.video[0]
        self._tb = self._stream.time_base or Fraction(1, 1000)
        if self._container.start_time is not None:
            self._origin = self._container.start_time / 1_000_000
        elif self._stream.start_time is not None:
            self._origin = float(self._stream.start_time * self._tb)
        else:
            self._origin = 0.0
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._fps = Fraction(rate) if rate else None
        if self._stream.duration:
            self._duration: float | None = float(self._stream.duration * self._tb)
        elif self._container.duration:
            self._duration = self._container.duration / 1_000_000
        else:
            self._duration = None
        self._codec = self._stream.codec_context.name
        self._stream.codec_context.thread_type = "AUTO"
        self._closed = False
        self._iterated = False
        self.frames_decoded = 0
        self._last_packet_t = None
        self._reorder_depth = -1  # decided on the first read
        self._keyframe_ts: list[int] = []
        self._keyframes = self._keyframe_times()
        self.mode = self._choose_mode()

    # ------------------------------------------------------------------ properties

    @property
    def is_seekable(self) -> bool:
        return not self._is_url or bool(self._duration)

    @property
    def codec(self) -> str:
        return self._codec

    @property
    def width(self) -> int:
        return int(self._stream.codec_context.width)

    @property
    def height(self) -> int:
        return int(self._stream.codec_context.height)

    # ------------------------------------------------------------------ mode
    def _keyframe_times(self) -> list[float]:
        """Keyframe times from the container's index (decode times, a few frames early)."""
        try:
            entries = self._stream.index_entries
        except Exception:  # noqa: BLE001 - demuxers without an index
            return []
        if not entries:
            return []
        self._keyframe_ts = sorted(int(e.timestamp) for e in entries if e.is_keyframe)
        return [float(ts * self._tb) - self._origin for ts in self._keyframe_ts]

    def _choose_mode(self) -> str:
        mode = self.config.decode_mode
        fmt = set((self._container.format.name or "").split(","))
        indexed = bool(fmt & SEEKABLE_FORMATS)
        if mode in ("seek", "auto") and (not self.is_seekable or not indexed or len(self._keyframes) < 2):
            if mode == "seek":
                log.info("%s: no keyframe index to seek with; decoding sequentially", self.uri)
            return "sequential"
        if mode == "auto":
            step = self._sample_step()
            if step <= 0:
                return "sequential"
            # Seek: it jumps only when a keyframe group holds no sample, so it decodes no
            # more than sequential reading and, with sparse samples, far less (measured in
            # benchmarks/decode.py). Decoding keyframes only is faster still where keyframes
            # are rarer than samples, but gives other frames, so it is never chosen here.
            return "seek"
        return mode

    def _sample_step(self) -> float:
        if self._fps and self.config.fps >= float(self._fps):
            return 0.0
        return 1.0 / self.config.fps

    def _sampler(self) -> Sampler:
        step = self._sample_step()
        end = None if self.config.duration is None else self.config.start + self.config.duration
        return Sampler(1.0 / step if step > 0 else None, self.config.start, end)

    # ------------------------------------------------------------------ decoding
    def _decode_error(self, err: BaseException, where: float | None) -> None:
        self._stats.decode_errors += 1
        if not self._logged_decode_error:
            self._logged_decode_error = True
            at = f" near {where:.2f} s" if where is not None else ""
            log.warning("%s: skipping undecodable data%s (%s); further errors are only counted "
                        "in stats.decode_errors", self.uri, at, first_line(err))

    def _raw_frames(self, state: dict[str, Any], drain_at: float | None = None) -> Iterator[Any]:
        """Decoded frames in decoder order; read errors end the stream (state['read_error']).

        ``drain_at``: right after a seek, when the first packet is a keyframe shown exactly at
        this time (the sample wanted), decode it alone and drain the decoder instead of
        feeding it the packets its reordering delay would otherwise wait for; the segment
        then ends with ``state['drained']`` set.
        """
        av = _av()
        demux = self._container.demux(self._stream)
        cc = self._stream.codec_context
        last_t: float | None = None
        first = True
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as err:
                state["read_error"] = err
                try:
                    yield from cc.decode(None)
                except (av.error.FFmpegError, ValueError):
                    pass
                return
            if packet.pts is not None:
                pt = float(packet.pts * self._tb) - self._origin
                if self._last_packet_t is None or pt > self._last_packet_t:
                    self._last_packet_t = pt
            if drain_at is not None and first and packet.size and packet.is_keyframe \
                    and packet.pts is not None and not packet.is_corrupt \
                    and abs(float(packet.pts * self._tb) - self._origin - drain_at) <= TIME_EPS:
                try:
                    frames = list(packet.decode()) + list(cc.decode(None))
                except av.error.FFmpegError:
                    frames = []
                if frames:
                    state["drained"] = True
                    for fr in frames:
                        self.frames_decoded += 1
                        yield fr
                    return
            if packet.size:
                first = False
            if packet.is_corrupt and packet.size:
                # a damaged or cut-off packet: the demuxer says so, so the decoder never sees it
                # (a decoder error would also discard frames still in flight in its threads)
                self._decode_error(SourceError(f"damaged packet of {packet.size} bytes"), last_t)
                state["corrupt_packets"] = state.get("corrupt_packets", 0) + 1
                continue
            try:
                frames = packet.decode()
            except av.error.FFmpegError as err:
                self._decode_error(err, last_t)
                continue
            for fr in frames:
                self.frames_decoded += 1
                if fr.pts is not None:
                    last_t = float(fr.pts * self._tb) - self._origin
                yield fr

    def _needs_reordering(self, packets: int = 16) -> bool:
        """True when the decoder hands out the first ``packets`` frames out of presentation
        order (streams whose container times disagree with the coded order)."""
        av = _av()
        self._seek(0.0)
        out: list[int] = []
        n = 0
        try:
            for pkt in self._container.demux(self._stream):
                out.extend(f.pts for f in pkt.decode() if f.pts is not None)
                n += 1
                if n >= packets:
                    break
        except (av.error.FFmpegError, OSError):
            pass
        self._seek(0.0)
        return any(b <= a for a, b in zip(out, out[1:]))

    def _ordered(self, state: dict[str, Any], drain_at: float | None = None) -> Iterator[tuple[float, Any]]:
        """(time, frame) in presentation order."""
        step = float(1 / self._fps) if self._fps else 0.04

        def timed() -> Iterator[tuple[float, Any]]:
            newest = -1.0
            for fr in self._raw_frames(state, drain_at):
                if fr.pts is not None:
                    t = float(fr.pts * self._tb) - self._origin
                else:  # a frame without a timestamp: right after the newest one seen
                    t = newest + step
                newest = max(newest, t)
                yield t, fr

        def late() -> None:
            state["late"] = state.get("late", 0) + 1

        yield from in_pts_order(timed(), self._reorder_depth, start=-1.0, on_late=late)

    def _to_frame(self, t: float, fr: Any) -> Frame:
        w, h = scaled_size(fr.width, fr.height, self.config.max_side)
        if (w, h) == (fr.width, fr.height):
            img = fr.to_ndarray(format="rgb24")
        else:
            img = fr.to_ndarray(format="rgb24", width=w, height=h)
        img = rotate_upright(img, fr.rotation)
        frame = Frame(pts=max(0.0, t), index=self._stats.frames, image=img, source_id=self.source_id)
        self._stats.frames += 1
        return frame

    def _guard_overshoot(self, seg: Iterator[tuple[float, Any]], state: dict[str, Any],
                         target: float, resume: float) -> Iterator[tuple[float, Any]]:
        """After a seek: if it landed past ``target``, go back to ``resume`` and decode on
        from there without seeking again (the sampler skips what it already delivered)."""
        first = next(seg, None)
        if first is None:
            return
        if first[0] <= target + TIME_EPS:
            yield first
            yield from seg
            return
        seg.close()  # type: ignore[attr-defined]
        log.info("%s: a seek to %.3f s landed at %.3f s; decoding sequentially from here",
                 self.uri, target, first[0])
        self.mode = "sequential"
        self._seek(resume)
        state.clear()
        yield from self._ordered(state)

    def _seek(self, t: float) -> None:
        self._seek_ts(round((t + self._origin) / self._tb))

    def _seek_ts(self, ts: int) -> None:
        """Seek to the keyframe at or before ``ts`` (in stream time base units)."""
        self._container.seek(max(int(ts), 0), stream=self._stream, backward=True)

    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise SourceError(f"video {self.uri} is closed; fix: open it again with open_source()")
        self._stats = SourceStats()
        self.frames_decoded = 0  # decoder output, kept or not (shows what seeking saved)
        self._last_packet_t: float | None = None
        cc = self._stream.codec_context
        cc.skip_frame = "NONKEY" if self.mode == "keyframes" else "DEFAULT"
        sampler = self._sampler()
        state: dict[str, Any] = {}
        t0 = time.perf_counter()
        last_t: float | None = None
        stopped = False
        if self._reorder_depth < 0:
            self._reorder_depth = REORDER_DEPTH
            if self.is_seekable and not self._needs_reordering():
                self._reorder_depth = 0
            self._iterated = True  # the probe moved the read position
        if self.config.start > 0 and self.is_seekable:
            self._seek(self.config.start)
        elif self.is_seekable and self._iterated:
            self._seek(0.0)
        self._iterated = True
        seg = self._ordered(state)
        while True:
            try:
                t, fr = next(seg)
            except StopIteration:
                if not state.get("drained"):
                    break
                # the decoder was drained after a lone keyframe: go on from the next sample
                nxt = sampler.next_target
                if sampler.past_end(nxt):
                    stopped = True
                    break
                prev = last_t if last_t is not None else nxt
                self._seek(nxt)
                state = {}
                seg = self._guard_overshoot(self._ordered(state, nxt), state, nxt, prev)
                continue
            last_t = t
            if sampler.past_end(t):
                stopped = True
                break
            if sampler.want(t):
                yield self._to_frame(t, fr)
                if self.mode == "seek":
                    nxt = sampler.next_target
                    if sampler.past_end(nxt):
                        stopped = True
                        break
                    k = bisect.bisect_right(self._keyframes, nxt + TIME_EPS) - 1
                    if k >= 0 and self._keyframes[k] > t + TIME_EPS:
                        # the next sample lies in a later keyframe group: jump there
                        # (index times are decode times; FFmpeg finds the keyframe at or
                        # before the sample time itself)
                        seg.close()
                        self._seek(nxt)
                        state = {}
                        seg = self._guard_overshoot(self._ordered(state, nxt), state, nxt, t)
        seg.close()
        if state.get("late"):
            log.info("%s: %d frames arrived after later ones and were skipped", self.uri, state["late"])
        self._finish(last_t, stopped, state, time.perf_counter() - t0)

    def _finish(self, last_t: float | None, stopped: bool, state: dict[str, Any], elapsed: float) -> None:
        if stopped:
            return
        err = state.get("read_error")
        expected = self._duration
        short = False
        # judged by the last packet read, not the last frame decoded (keyframes-only and
        # seeking modes decode only some frames)
        reached = self._last_packet_t if self._last_packet_t is not None else last_t
        if expected and reached is not None:
            frame_dur = float(1 / self._fps) if self._fps else 0.1
            short = reached + max(3 * frame_dur, 0.5) < expected
        if err is not None or short:
            self._stats.truncated = True
            self._stats.ended_at = last_t
            of = f" of {expected:.2f} s" if expected else ""
            why = f" ({first_line(err)})" if err is not None else ""
            log.warning("%s: the file ends early, at %.2f s%s%s; it is probably truncated — "
                        "frames up to there were read", self.uri, last_t or 0.0, of, why)
        log.debug("%s: %d frames in %.2f s (mode %s)", self.uri, self._stats.frames, elapsed, self.mode)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - closing twice or a dead stream
                pass
        self.close_audio()


def _ffmpeg_version() -> str:
    av = _av()
    return str(getattr(av, "ffmpeg_version_info", "") or "")


def probe(path: str) -> dict[str, Any]:
    """Codec, size, rotation, frame rate, duration and time origin of a file's first video
    stream; a SourceError (one line, naming the file) when it cannot be opened."""
    av = _av()
    problem = file_size_problem(Path(path))
    if problem:
        raise open_error(path, problem, "a PyAV probe")
    try:
        c = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        reason, fix = describe_av_open_error(str(path), err)
        raise open_error(path, reason, "a PyAV probe", fix) from err
    try:
        if not c.streams.video:
            raise open_error(path, "it has no video stream", "a PyAV probe", "pass a file with a video track")
        s = c.streams.video[0]
        rotation = 0
        try:
            for fr in c.decode(s):
                rotation = int(fr.rotation or 0)
                break
        except av.error.FFmpegError:
            pass
        origin = (c.start_time / 1_000_000) if c.start_time is not None else 0.0
        if s.duration and s.time_base:
            duration: float | None = float(s.duration * s.time_base)
        else:
            duration = (c.duration / 1_000_000) if c.duration else None
        return {"codec": s.codec_context.name, "width": s.codec_context.width, "duration": duration,
                "height": s.codec_context.height, "rotation": rotation,
                "fps": Fraction(s.average_rate or s.guessed_rate) if (s.average_rate or s.guessed_rate) else None,
                "origin": origin}
    finally:
        c.close()
