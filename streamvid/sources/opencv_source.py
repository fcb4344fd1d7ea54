"""OpenCV sources: video files through OpenCV's FFmpeg backend, and cameras (a device
index such as ``0`` or ``/dev/video0``) as a live source with the reconnecting reader."""

from __future__ import annotations

import logging
import re
import time
from fractions import Fraction
from typing import Any, Iterator

import cv2
import numpy as np

from ..config import SourceConfig
from ..errors import SourceError
from ..types import Frame, FrameSource, SourceStats
from . import register_source
from ._common import Sampler, identify, scaled_size
from .audio import FileAudio
from ._filebase import KnownLength, in_pts_order, note_end, probe_or_raise
from .live import LiveSource

log = logging.getLogger(__name__)


def _resize(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    nw, nh = scaled_size(w, h, max_side)
    if (nw, nh) == (w, h):
        return img
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)


def _bgr_to_rgb(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@register_source("opencv")
class OpenCVSource(KnownLength, FileAudio, FrameSource):
    """A video file read with OpenCV (``cv2.VideoCapture`` with the FFmpeg backend).

    Times are OpenCV's presentation times (``CAP_PROP_POS_MSEC``); OpenCV applies the
    rotation metadata itself. Reads from the beginning (no seeking) and samples by time.
    """

    def __init__(self, uri: str, config: SourceConfig | None = None, source_id: str | None = None) -> None:
        identify(self, uri, config, source_id)
        tried = f"OpenCV {cv2.__version__} (FFmpeg backend)"
        info = probe_or_raise(self.uri, tried) if "://" not in self.uri else {}
        self._cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            raise SourceError(f"cannot open video {self.uri}: OpenCV could not open it (tried {tried}); "
                              f"fix: use backend 'pyav', or check that OpenCV was built with FFmpeg")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self._fps = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else info.get("fps")
        self._duration: float | None = info.get("duration")
        self._closed = False
        self._used = False


    def _grabbed(self, sampler: Sampler) -> Iterator[tuple[float, np.ndarray | None]]:
        """(time, BGR image or None) for every frame; images only where a sample may fall."""
        while True:
            if not self._cap.grab():
                return
            t = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            img = None
            if t >= sampler.next_target - 1e-3 and not sampler.past_end(t):
                ok, img = self._cap.retrieve()
                if not ok:
                    self._stats.decode_errors += 1
                    continue
            yield t, img

    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise SourceError(f"video {self.uri} is closed; fix: open it again with open_source()")
        if self._used:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._used = True
        self._stats = SourceStats()
        cfg = self.config
        step_all = self._fps is not None and cfg.fps >= float(self._fps)
        end = None if cfg.duration is None else cfg.start + cfg.duration
        sampler = Sampler(None if step_all else cfg.fps, cfg.start, end)
        last_t = None
        stopped = False
        for t, img in in_pts_order(self._grabbed(sampler)):
            last_t = t
            if sampler.past_end(t):
                stopped = True
                break
            if img is None or not sampler.want(t):
                continue
            rgb = _resize(_bgr_to_rgb(img), cfg.max_side)
            frame = Frame(pts=max(0.0, t), index=self._stats.frames, image=rgb, source_id=self.source_id)
            self._stats.frames += 1
            yield frame
        note_end(self._stats, self.uri, last_t, self._duration,
                 float(self._fps) if self._fps else None, stopped)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cap.release()
        self.close_audio()


def camera_device(uri: str) -> int | str:
    """``"0"`` -> 0; ``/dev/video2`` stays a path (OpenCV's V4L2 backend opens both)."""
    if re.fullmatch(r"\d+", uri):
        return int(uri)
    return uri


@register_source("camera")
class OpenCVCamera(LiveSource):
    """A camera read with OpenCV in a producer thread: bounded queue, drops the oldest frames
    when the consumer is slow, reopens the device when it stops delivering.

    Times are the wall-clock seconds since the first frame (cameras give no reliable
    presentation time); ``recv_time`` is the wall-clock time of capture.
    """

    kind = "camera"
    fix_hint = "check that the camera is connected and free, and the device index or path"

    def __init__(self, uri: str, config: SourceConfig | None = None, source_id: str | None = None) -> None:
        super().__init__(uri, config, source_id)
        self._device = camera_device(self.uri)

    def _session(self) -> Iterator[tuple[float | None, Any]]:
        cap = cv2.VideoCapture(self._device)
        try:
            if not cap.isOpened():
                raise SourceError("OpenCV could not open the device")
            fps = cap.get(cv2.CAP_PROP_FPS)
            if fps and fps > 0 and self._fps is None:
                self._fps = Fraction(fps).limit_denominator(1001)
            t0 = time.monotonic()
            failures = 0
            while not self._stop.is_set():
                ok, img = cap.read()
                if not ok:
                    failures += 1
                    if failures >= 3:
                        return  # the device stopped delivering: the reader reopens it
                    continue
                failures = 0
                yield time.monotonic() - t0, img
        finally:
            cap.release()

    def _to_image(self, picture: Any) -> np.ndarray:
        return _resize(_bgr_to_rgb(picture), self.config.max_side)
