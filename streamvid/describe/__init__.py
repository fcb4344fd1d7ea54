"""Describers: frames in words (ImageNet labels, on-screen text).

:class:`FrameDescriber` combines the enabled describers and describes a frame only when the
picture changed enough since the last described frame (or ``max_interval`` passed), because
OCR is the slowest stage of the pipeline.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..config import DescribeConfig
from ..errors import ConfigError
from ..types import Describer, Description, Frame, FrameFeatures, VisionEncoder
from .labels import LabelDescriber, has_classifier, readable_label
from .ocr import LINE_SEP, OcrDescriber, reading_order

log = logging.getLogger(__name__)

__all__ = [
    "FrameDescriber", "LINE_SEP", "LabelDescriber", "OcrDescriber", "create_describer",
    "has_classifier", "picture_change", "readable_label", "reading_order", "thumbnail",
]

#: side of the grey thumbnail that the change gate compares
THUMB = 32
#: the gate's change score is the largest change of any cell of a GATE_CELLS x GATE_CELLS grid
GATE_CELLS = 4


def thumbnail(image: np.ndarray, side: int = THUMB) -> np.ndarray:
    """A ``side x side`` grey float32 thumbnail in [0, 1] (area averaging)."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def picture_change(a: np.ndarray, b: np.ndarray, cells: int = GATE_CELLS) -> float:
    """How much thumbnail ``b`` differs from ``a``, in [0, 1].

    The mean absolute difference of the cell that changed most, so that something new in one
    part of the picture (a sign, a person walking in) counts as much as a global change.
    """
    diff = np.abs(a - b)
    h, w = diff.shape
    ch, cw = h // cells, w // cells
    per_cell = diff[:ch * cells, :cw * cells].reshape(cells, ch, cells, cw).mean(axis=(1, 3))
    return float(per_cell.max())


class FrameDescriber(Describer):
    """Labels and/or on-screen text of a frame, gated on picture change."""

    name = "frame"

    def __init__(self, config: DescribeConfig, labels: LabelDescriber | None = None,
                 ocr: OcrDescriber | None = None):
        self.config = config
        self.labels = labels
        self.ocr = ocr
        self._last_thumb: np.ndarray | None = None
        self._last_pts: float | None = None
        self.described = 0
        self.skipped = 0
        self.seconds = {"labels": 0.0, "ocr": 0.0}

    @property
    def enabled(self) -> bool:
        """False when neither labels nor OCR are on (every frame then gets None)."""
        return self.labels is not None or self.ocr is not None

    def maybe_describe(self, frame: Frame, features: FrameFeatures) -> Description | None:
        """Describe ``frame`` if it changed at least ``change_threshold`` since the last described
        frame, or ``max_interval`` seconds passed, or it is the first; else None."""
        if not self.enabled:
            return None
        thumb = thumbnail(frame.image)
        due = (self._last_thumb is None or self._last_pts is None or frame.pts < self._last_pts
               or features.cut
               or (self.config.max_interval > 0
                   and frame.pts - self._last_pts >= self.config.max_interval - 1e-6)
               or picture_change(self._last_thumb, thumb) >= self.config.change_threshold)
        if not due:
            self.skipped += 1
            return None
        self._last_thumb = thumb
        self._last_pts = frame.pts
        return self.describe(frame, features)

    def describe(self, frame: Frame, features: FrameFeatures | None = None) -> Description:
        """Labels and on-screen text of ``frame``, without gating."""
        labels: tuple[tuple[str, float], ...] = ()
        text = ""
        if self.labels is not None:
            t0 = time.perf_counter()
            labels = self.labels.describe(frame, features).labels
            self.seconds["labels"] += time.perf_counter() - t0
        if self.ocr is not None:
            t0 = time.perf_counter()
            text = self.ocr.describe(frame, features).text
            self.seconds["ocr"] += time.perf_counter() - t0
        self.described += 1
        return Description(labels=labels, text=text)

    @property
    def stats(self) -> dict[str, float]:
        """Frames described and skipped, and seconds spent per describer."""
        return {"described": self.described, "skipped": self.skipped,
                "labels_s": self.seconds["labels"], "ocr_s": self.seconds["ocr"]}


def create_describer(config: DescribeConfig | None = None,
                     encoder: VisionEncoder | None = None) -> FrameDescriber:
    """The describer a ``DescribeConfig`` asks for; labels need an encoder with a classifier."""
    config = config or DescribeConfig()
    labels = None
    if config.labels:
        if encoder is None:
            raise ConfigError("describe.labels is on but no vision encoder was given; "
                              "fix: pass the pipeline's encoder, or set describe.labels: false")
        labels = LabelDescriber(encoder, top_k=config.top_k, min_prob=config.min_prob)
    ocr = OcrDescriber(min_score=config.ocr_min_score, max_side=config.ocr_max_side) if config.ocr else None
    return FrameDescriber(config, labels=labels, ocr=ocr)
