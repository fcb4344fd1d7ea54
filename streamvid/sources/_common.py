"""Pieces shared by the frame sources: sampling by presentation time, sizing, rotation,
path checks and one-line error messages."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from ..errors import SourceError

log = logging.getLogger(__name__)

# A frame whose time is within this much before a sample target still counts as "at" it
# (containers store times in ticks; 1/30 s is 0.0333.. and may round down by a tick).
TIME_EPS = 1e-3


class Sampler:
    """Decides, frame by frame in presentation order, which frames to keep.

    Targets are ``start, start + 1/fps, start + 2/fps, ...``; for each target the first
    frame whose time is at or after it is kept. When several targets fall into one gap
    (variable frame rate, dropped frames) a single frame serves them all. ``end`` (exclusive)
    bounds the read. ``fps=None`` keeps every frame in ``[start, end)``.
    """

    def __init__(self, fps: float | None, start: float = 0.0, end: float | None = None):
        self.step = (1.0 / fps) if fps else 0.0
        self.start = float(start)
        self.end = end
        self.next_target = self.start

    def past_end(self, t: float) -> bool:
        return self.end is not None and t >= self.end - 1e-9

    def want(self, t: float) -> bool:
        """True when the frame at time ``t`` is to be kept (call in increasing ``t``)."""
        if t < self.next_target - TIME_EPS or self.past_end(t):
            return False
        if self.step <= 0:
            self.next_target = t + TIME_EPS
            return True
        # advance past every target this frame covers
        k = math.floor((t + TIME_EPS - self.next_target) / self.step) + 1
        self.next_target += max(k, 1) * self.step
        return True


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) shrunk so the longer side is at most ``max_side`` (0 keeps the size)."""
    longer = max(width, height)
    if max_side <= 0 or longer <= max_side:
        return width, height
    s = max_side / longer
    return max(1, round(width * s)), max(1, round(height * s))


def rotate_upright(img: np.ndarray, rotation: float | int | None) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise, as in the display matrix)."""
    if not rotation:
        return img
    k = int(round(float(rotation) / 90.0)) % 4
    if k == 0:
        return img
    return np.ascontiguousarray(np.rot90(img, k))


def file_size_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a video file before any decoder looks at it, or None."""
    if not path.exists():
        return "the file does not exist"
    if path.is_dir():
        return "it is a directory"
    if not os.access(path, os.R_OK):
        return "the file is not readable (permissions)"
    if path.stat().st_size == 0:
        return "the file is empty (0 bytes)"
    return None


FIXES = {
    "the file does not exist": "check the path",
    "it is a directory": "pass a video file, or a folder of images with backend 'images'",
    "the file is not readable (permissions)": "check the file permissions",
    "the file is empty (0 bytes)": "check the recording",
}


def open_error(path: str | Path, reason: str, tried: str, fix: str | None = None) -> SourceError:
    """A one-line SourceError: what failed, what was tried, and the fix."""
    fix = fix or FIXES.get(reason, "check that the file is a complete, playable video")
    msg = f"cannot open video {path}: {reason} (tried {tried}); fix: {fix}"
    return SourceError(" ".join(msg.split()))


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def identify(src: object, uri: str, config: object, source_id: str | None) -> None:
    """Set what every source carries: ``uri``, ``config`` (defaults when None),
    ``source_id`` (from the URI when not given) and fresh ``_stats``."""
    from ..config import SourceConfig
    from ..types import SourceStats

    src.uri = str(uri)
    src.config = config or SourceConfig()
    src.source_id = source_id or default_source_id(src.uri)
    src._stats = SourceStats()


def default_source_id(uri: str) -> str:
    if "://" in uri:
        return uri
    return Path(uri).name or uri


def ffmpeg_reason(err: BaseException) -> str:
    """An FFmpeg/OS error in a few words, without the error number and the repeated URL."""
    text = getattr(err, "strerror", None)
    return str(text) if text else first_line(err)
