"""Video files through decord: frame times come from its index, so the frames to keep are
chosen before anything is decoded and then read in batches.

decord crashes the process on some codecs (VP9, AV1), so the file is probed with PyAV first
and codecs outside :data:`DECORD_CODECS` are refused with a clear error.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from typing import Any, Iterator

import decord
import numpy as np
from PIL import Image

from ..config import SourceConfig
from ..errors import SourceError
from ..types import Frame, FrameSource, SourceStats
from . import register_source
from ._common import Sampler, first_line, identify, rotate_upright, scaled_size
from .audio import FileAudio
from ._filebase import KnownLength, probe_or_raise

log = logging.getLogger(__name__)

# Codecs decord decodes without crashing (FFmpeg names, as PyAV reports them).
DECORD_CODECS = frozenset({"h264", "hevc", "mpeg4", "msmpeg4v2", "msmpeg4v3", "mjpeg",
                           "mpeg1video", "mpeg2video"})
BATCH = 16


def _decord_reason(err: BaseException) -> str:
    """decord's message without its timestamp and source-file prefix."""
    text = first_line(err)
    return re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*(Error:\s*)?", "", text) or text


def _resize(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    nw, nh = scaled_size(w, h, max_side)
    if (nw, nh) == (w, h):
        return img
    return np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR, reducing_gap=2.0))


@register_source("decord")
class DecordSource(KnownLength, FileAudio, FrameSource):
    """A video file read with decord (CPU)."""

    def __init__(self, uri: str, config: SourceConfig | None = None, source_id: str | None = None) -> None:
        identify(self, uri, config, source_id)
        tried = f"decord {decord.__version__}"
        info = probe_or_raise(self.uri, tried)
        if info["codec"] not in DECORD_CODECS:
            raise SourceError(
                f"cannot open video {self.uri} with decord: its codec {info['codec']} is not one decord "
                f"decodes safely ({', '.join(sorted(DECORD_CODECS))}); fix: use backend 'pyav' (the default)")
        self._rotation = info["rotation"]
        try:
            self._vr = decord.VideoReader(self.uri, ctx=decord.cpu(0))
        except decord.DECORDError as err:
            raise SourceError(f"cannot open video {self.uri}: decord failed ({_decord_reason(err)}); decord "
                              f"cannot read damaged or truncated files (tried {tried}); fix: use backend "
                              f"'pyav', which reads what still decodes") from err
        self._rotation = self._rotation_left(info)
        self._times = np.asarray(self._vr.get_frame_timestamp(range(len(self._vr))))[:, 0].astype(np.float64)
        fps = self._vr.get_avg_fps()
        self._fps = info.get("fps") or (Fraction(fps).limit_denominator(1001) if fps else None)
        self._duration = info.get("duration")
        self._closed = False

    def _rotation_left(self, info: dict[str, Any]) -> int:
        """The rotation still to apply: builds of decord differ in whether they honour the
        display matrix, so look at what it returns."""
        rot = int(info["rotation"]) % 360
        if rot == 0 or len(self._vr) == 0:
            return 0
        first = self._vr[0].asnumpy()
        if rot in (90, 270):
            return 0 if first.shape[:2] == (info["width"], info["height"]) else rot
        from .pyav_source import PyAVSource  # 180 degrees: compare pixels with FFmpeg's frame

        with PyAVSource(self.uri, SourceConfig(fps=240.0, max_side=64)) as src:
            ref = next(iter(src)).image.astype(np.float32)
        mine = _resize(first, 64).astype(np.float32)
        if mine.shape != ref.shape:
            return rot
        same = np.abs(mine - ref).mean()
        flipped = np.abs(np.rot90(mine, 2) - ref).mean()
        return 0 if same <= flipped else rot


    def _indices(self) -> list[int]:
        cfg = self.config
        every = self._fps is not None and cfg.fps >= float(self._fps)
        end = None if cfg.duration is None else cfg.start + cfg.duration
        sampler = Sampler(None if every else cfg.fps, cfg.start, end)
        order = np.argsort(self._times, kind="stable")
        out: list[int] = []
        last = float("-inf")
        for i in order:
            t = float(self._times[i])
            if t <= last + 1e-9:
                continue
            last = t
            if sampler.past_end(t):
                break
            if sampler.want(t):
                out.append(int(i))
        return out

    def _read(self, idx: list[int]) -> tuple[list[np.ndarray], BaseException | None]:
        try:
            return list(self._vr.get_batch(idx).asnumpy()), None
        except decord.DECORDError as err:
            imgs: list[np.ndarray] = []
            for i in idx:  # read one by one to keep what still decodes
                try:
                    imgs.append(self._vr[i].asnumpy())
                except decord.DECORDError:
                    return imgs, err
            return imgs, err

    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise SourceError(f"video {self.uri} is closed; fix: open it again with open_source()")
        self._stats = SourceStats()
        wanted = self._indices()
        last_t: float | None = None
        for k in range(0, len(wanted), BATCH):
            idx = wanted[k:k + BATCH]
            imgs, err = self._read(idx)
            for i, img in zip(idx, imgs):
                t = float(self._times[i])
                last_t = t
                img = rotate_upright(_resize(img, self.config.max_side), self._rotation)
                frame = Frame(pts=max(0.0, t), index=self._stats.frames, image=img, source_id=self.source_id)
                self._stats.frames += 1
                yield frame
            if err is not None:
                self._stats.truncated = True
                self._stats.ended_at = last_t
                log.warning("%s: the file ends early, at %.2f s of %.2f s; it is probably truncated — "
                            "frames up to there were read (%s)", self.uri, last_t or 0.0,
                            self._duration or float("nan"), _decord_reason(err))
                return

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._vr = None  # decord frees the reader with the object
        self.close_audio()
