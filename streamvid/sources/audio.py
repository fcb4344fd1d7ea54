"""The audio side channel of file sources: the first audio track decoded with PyAV from a
second handle on the file, resampled to 16 kHz mono, delivered in step with the frames
(``read_audio(until)`` decodes only up to the time asked for).

A file without an audio track has no audio (no error); an audio track that cannot be
decoded is logged once and skipped while the frames go on; a file with audio and no video
is read by :class:`AudioOnlySource`, which delivers no frames and all the audio.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..config import SourceConfig
from ..types import AudioChunk, Frame, FrameSource
from . import register_source
from ._common import first_line, identify, open_error

log = logging.getLogger(__name__)

RATE = 16000           # samples per second delivered (what speech models take)
CHUNK_SECONDS = 1.0    # audio is delivered in chunks of about this length


def _av():
    import av

    return av


def resampler() -> Any:
    """A PyAV resampler to float32 mono at :data:`RATE`."""
    return _av().AudioResampler(format="flt", layout="mono", rate=RATE)


def resampled(rs: Any, frame: Any) -> np.ndarray:
    """``frame`` (or None to drain) through resampler ``rs`` as float32 mono samples."""
    out = [f.to_ndarray().reshape(-1) for f in rs.resample(frame)]
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, np.float32)


class AudioTrack:
    """Sequential reader of a file's first audio track (see the module docstring)."""

    def __init__(self, owner: FrameSource):
        self.owner = owner
        uri, config = owner.uri, owner.config  # type: ignore[attr-defined]
        self.uri = uri
        self.config = config
        self.source_id = owner.source_id
        self._container: Any = None
        self._it: Iterator[AudioChunk] | None = None
        self._next: AudioChunk | None = None
        self.available = False
        self.failed = False
        av = _av()
        try:
            self._container = av.open(uri, timeout=(config.open_timeout, config.open_timeout))
        except (av.error.FFmpegError, OSError) as err:
            log.warning("%s: cannot open the audio track (%s); going on without audio", uri,
                        first_line(err))
            return
        if not self._container.streams.audio:
            self._container.close()
            self._container = None
            return
        self.available = True

    def _chunks(self) -> Iterator[AudioChunk]:
        av = _av()
        c = self._container
        stream = c.streams.audio[0]
        tb = stream.time_base or Fraction(1, RATE)
        origin = c.start_time / 1_000_000 if c.start_time is not None else 0.0
        start, dur = self.config.start, self.config.duration
        end = math.inf if dur is None else start + dur
        if start > 0:
            try:
                c.seek(int((start + origin) / tb), stream=stream, backward=True)
            except (av.error.FFmpegError, OSError):
                pass
        rs = resampler()
        t0: float | None = None   # time of the first resampled sample
        done = 0                  # samples resampled so far
        buf: list[np.ndarray] = []
        buf_start = 0.0
        step = int(CHUNK_SECONDS * RATE)
        logged = False

        def pieces(samples: np.ndarray) -> Iterator[AudioChunk]:
            nonlocal done, buf, buf_start
            if t0 is None or not len(samples):
                return
            t = t0 + done / RATE
            done += len(samples)
            lo = max(0, int(math.ceil((start - t) * RATE)))
            hi = len(samples) if end == math.inf else max(0, min(len(samples), int((end - t) * RATE)))
            if lo >= hi:
                return
            if not buf:
                buf_start = t + lo / RATE
            buf.append(samples[lo:hi])
            if sum(len(b) for b in buf) >= step:
                yield AudioChunk(max(0.0, buf_start), np.concatenate(buf), RATE, self.source_id)
                buf = []

        packets = c.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError) as err:
                log.warning("%s: the audio track ends early (%s)", self.uri, first_line(err))
                break
            if packet.size == 0:
                continue
            try:
                frames = packet.decode()
            except (av.error.FFmpegError, ValueError) as err:
                self.owner.stats.audio_errors += 1
                if not logged:
                    logged = True
                    log.warning("%s: skipping undecodable audio (%s); the frames go on, further "
                                "errors are only counted in stats.audio_errors", self.uri, first_line(err))
                continue
            for fr in frames:
                if t0 is None:
                    if fr.pts is None:
                        continue
                    t0 = float(fr.pts * fr.time_base) - origin if fr.time_base else float(fr.time or 0.0)
                yield from pieces(resampled(rs, fr))
            if t0 is not None and t0 + done / RATE >= end:
                break
        try:
            yield from pieces(resampled(rs, None))
        except (av.error.FFmpegError, ValueError):
            pass
        if buf:
            yield AudioChunk(max(0.0, buf_start), np.concatenate(buf), RATE, self.source_id)

    def read(self, until: float) -> list[AudioChunk]:
        """Chunks not yet delivered that start before ``until`` seconds."""
        if not self.available or self.failed:
            return []
        if self._it is None:
            self._it = self._chunks()
        out: list[AudioChunk] = []
        try:
            while True:
                if self._next is None:
                    self._next = next(self._it)
                if self._next.start >= until:
                    break
                out.append(self._next)
                self._next = None
        except StopIteration:
            self.close()
        except Exception as err:  # noqa: BLE001 - broken audio must never stop the frames
            self.failed = True
            self.owner.stats.audio_errors += 1
            log.warning("%s: the audio track cannot be read (%s); going on without audio",
                        self.uri, first_line(err))
            self.close()
        return out

    def close(self) -> None:
        self._it = None
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - closing a broken container
                pass
            self._container = None


class FileAudio:
    """``has_audio`` and ``read_audio`` for file sources (list it before ``FrameSource``).

    Needs ``uri``, ``config``, ``source_id`` and ``stats`` on the source.
    """

    _audio_track: AudioTrack | None = None

    def _audio(self) -> AudioTrack:
        if self._audio_track is None:
            self._audio_track = AudioTrack(self)  # type: ignore[arg-type]
        return self._audio_track

    @property
    def has_audio(self) -> bool:
        return "://" not in self.uri and self._audio().available  # type: ignore[attr-defined]

    def read_audio(self, until: float) -> list[AudioChunk]:
        return self._audio().read(until) if self.has_audio else []

    def close_audio(self) -> None:
        if self._audio_track is not None:
            self._audio_track.close()


def is_audio_only(path: str) -> bool:
    """True when ``path`` is a media file with an audio track and no video track."""
    p = Path(path)
    if not p.is_file():
        return False
    av = _av()
    try:
        with av.open(str(p)) as c:
            return not c.streams.video and bool(c.streams.audio)
    except (av.error.FFmpegError, OSError):
        return False


@register_source("audio")
class AudioOnlySource(FileAudio, FrameSource):
    """A file with an audio track and no video: no frames, only the audio side channel."""

    def __init__(self, uri: str, config: SourceConfig | None = None, source_id: str | None = None,
                 **_: Any) -> None:
        identify(self, uri, config, source_id)
        av = _av()
        try:
            with av.open(self.uri) as c:
                if not c.streams.audio:
                    raise open_error(self.uri, "it has no audio track", "PyAV",
                                     "pass a video file, or an audio file with a sound track")
                self._duration = c.duration / 1_000_000 if c.duration else None
        except (av.error.FFmpegError, OSError) as err:
            raise open_error(self.uri, f"FFmpeg failed: {first_line(err)}", "PyAV") from err

    @property
    def fps(self) -> Fraction | None:
        return None

    @property
    def duration(self) -> float | None:
        return self._duration

    @property
    def audio_only(self) -> bool:
        return True

    def __iter__(self) -> Iterator[Frame]:
        return iter(())

    def close(self) -> None:
        self.close_audio()
