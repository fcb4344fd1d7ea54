"""Keyframes (frames that bring something new) and shot boundaries.

Shot boundaries come from PySceneDetect's detectors, driven frame by frame on the sampled
frames' pixels: ``content`` (HSV difference against the previous frame, ``shot_threshold``
on PySceneDetect's 0-255 scale) or ``adaptive`` (the same score relative to its
neighbours, which tolerates camera motion; decisions lag two frames). A keyframe is the first
frame, the first frame of a shot, a frame whose pooled features moved at least
``keyframe_threshold`` (cosine distance) from the last keyframe, or the first frame
``keyframe_interval`` seconds after the last keyframe.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import numpy as np

from ..config import CompressConfig
from ..errors import MissingDependencyError, ValidationError
from ..types import FrameFeatures, KeyframeSelector, check_array

log = logging.getLogger(__name__)

#: frames are shrunk to this width before the shot detector sees them
DETECT_WIDTH = 320


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``1 - cos(a, b)`` for two vectors (1.0 when either is zero)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-12 or nb < 1e-12:
        return 1.0
    return float(1.0 - np.dot(a, b) / (na * nb))


def _make_detector(config: CompressConfig) -> Any | None:
    if config.shot_detector == "none":
        return None
    try:
        from scenedetect.detectors import AdaptiveDetector, ContentDetector
    except ImportError as err:  # pragma: no cover - scenedetect is a core dependency
        raise MissingDependencyError("shot detection (compress.shot_detector)", "scenedetect") from err
    if config.shot_detector == "adaptive":
        return AdaptiveDetector(adaptive_threshold=config.adaptive_ratio, min_scene_len=1,
                                window_width=2, min_content_val=config.shot_threshold)
    # min_scene_len=0 turns the flash filter off: a cut is reported on the frame it happens
    return ContentDetector(threshold=config.shot_threshold, min_scene_len=0)


class ShotKeyframeSelector(KeyframeSelector):
    """Marks keyframes and shot boundaries of a stream of sampled frames.

    Pass each frame's image (``[H, W, 3]`` uint8 RGB) with its features; without an image
    the frame's ``cut`` flag (from the feature cache) stands for the detector. Frames come
    back in order, after the detector's lag (none for ``content``, two frames for
    ``adaptive``).
    """

    def __init__(self, config: CompressConfig | None = None):
        self.config = config or CompressConfig()
        self._detector = _make_detector(self.config)
        self._lag = int(getattr(self._detector, "event_buffer_length", 0) or 0) \
            if self.config.shot_detector == "adaptive" else 0
        self._pending: deque[list[Any]] = deque()  # [features, frame_number, boundary]
        self._n = 0
        self._last_kf_pooled: np.ndarray | None = None
        self._last_kf_pts: float | None = None
        self._warned_no_image = False
        self._shape: tuple[int, ...] | None = None
        self.keyframes = 0
        self.boundaries = 0

    def push(self, features: FrameFeatures, image: np.ndarray | None = None
             ) -> list[tuple[FrameFeatures, bool, bool]]:
        """Add a frame; return ``(features, is_keyframe, is_shot_boundary)`` for decided frames."""
        number = self._n
        self._n += 1
        entry = [features, number, False]
        self._pending.append(entry)
        if self._detector is not None:
            if image is None:
                if not self._warned_no_image:
                    log.debug("shot detection without frame images: using the feature cache's cut flags")
                    self._warned_no_image = True
                entry[2] = bool(features.cut) and number > 0
            else:
                self._detect(number, image)
        return self._release(self._lag)

    def flush(self) -> list[tuple[FrameFeatures, bool, bool]]:
        """Decide every pending frame (the detector's last frames cannot be cuts any more)."""
        return self._release(0)

    # ------------------------------------------------------------------ internals
    def _detect(self, number: int, image: np.ndarray) -> None:
        from scenedetect import FrameTimecode

        check_array(image, "KeyframeSelector.push image", ndim=3, dtypes=(np.uint8,))
        if image.shape[2] != 3:
            raise ValidationError(f"KeyframeSelector.push image: expected [H, W, 3] RGB, got {list(image.shape)}")
        import cv2

        h, w = image.shape[:2]
        if w > DETECT_WIDTH:
            image = cv2.resize(image, (DETECT_WIDTH, max(1, round(h * DETECT_WIDTH / w))),
                               interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        if self._shape is not None and bgr.shape != self._shape:
            # a new picture size (a reconnected stream, spliced inputs) starts a new shot
            log.debug("frame size changed from %s to %s at pts %.3f: shot boundary",
                      self._shape, bgr.shape, self._pending[-1][0].pts)
            self._detector = _make_detector(self.config)
            self._pending[-1][2] = number > 0
        self._shape = bgr.shape
        cuts = self._detector.process_frame(FrameTimecode(number, fps=1.0), bgr)
        for cut in cuts:
            frame_no = int(cut.frame_num)
            for e in self._pending:
                if e[1] == frame_no and frame_no > 0:
                    e[2] = True

    def _release(self, keep: int) -> list[tuple[FrameFeatures, bool, bool]]:
        out = []
        while len(self._pending) > keep:
            features, number, boundary = self._pending.popleft()
            out.append((features, self._is_keyframe(features, boundary, number), boundary))
            self.boundaries += int(boundary)
        return out

    def _is_keyframe(self, features: FrameFeatures, boundary: bool, number: int) -> bool:
        cfg = self.config
        kf = (number == 0 or boundary or self._last_kf_pooled is None
              or cosine_distance(features.pooled, self._last_kf_pooled) >= cfg.keyframe_threshold
              or (cfg.keyframe_interval > 0 and self._last_kf_pts is not None
                  and features.pts - self._last_kf_pts >= cfg.keyframe_interval - 1e-6))
        if kf:
            self._last_kf_pooled = features.pooled
            self._last_kf_pts = features.pts
            self.keyframes += 1
        return kf
