"""Describers: frames in words (ImageNet labels, on-screen text, COCO objects), and speech
in words (:mod:`.speech`, with a recogniser from :data:`RECOGNISERS`).

:class:`FrameDescriber` combines the enabled describers and describes a frame only when the
picture changed enough since the last described frame (or ``max_interval`` passed), because
OCR and the object detector are the slowest stages of the pipeline; the detector runs at
most every ``detect_interval`` seconds on described frames.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..config import DescribeConfig
from ..errors import ConfigError
from ..registry import Registry
from ..types import Describer, Description, Frame, FrameFeatures, VisionEncoder
from .detect import COCO_CLASSES, DETECTORS, Detector, create_detector
from .labels import LabelDescriber, has_classifier, readable_label
from .ocr import LINE_SEP, OcrDescriber, TextLine, reading_order, sort_lines
from .speech import SpeechDescriber

log = logging.getLogger(__name__)

#: speech recognisers by name (the backend of :class:`SpeechDescriber`)
RECOGNISERS: Registry = Registry("speech recogniser")
RECOGNISERS.register_lazy("whisper", "streamvid.describe.whisper", package="faster-whisper")

__all__ = [
    "COCO_CLASSES", "DETECTORS", "Detector", "create_detector",
    "FrameDescriber", "LINE_SEP", "LabelDescriber", "OcrDescriber", "RECOGNISERS",
    "SpeechDescriber", "create_describer", "create_recogniser",
    "TextLine", "cell_changes", "has_classifier", "picture_change", "readable_label",
    "reading_order", "thumbnail",
]

#: side of the grey thumbnail that the change gate compares
THUMB = 32
#: the gate's change score is the largest change of any cell of a GATE_CELLS x GATE_CELLS grid
GATE_CELLS = 4
#: OCR reads the whole frame when the changed region covers more than this fraction of it
FULL_READ_AREA = 0.5


def thumbnail(image: np.ndarray, side: int = THUMB) -> np.ndarray:
    """A ``side x side`` grey float32 thumbnail in [0, 1] (area averaging)."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def cell_changes(a: np.ndarray, b: np.ndarray, cells: int = GATE_CELLS) -> np.ndarray:
    """Mean absolute difference of thumbnails ``a`` and ``b`` per cell of a ``cells x cells`` grid."""
    diff = np.abs(a - b)
    h, w = diff.shape
    ch, cw = h // cells, w // cells
    return diff[:ch * cells, :cw * cells].reshape(cells, ch, cells, cw).mean(axis=(1, 3))


def picture_change(a: np.ndarray, b: np.ndarray, cells: int = GATE_CELLS) -> float:
    """How much thumbnail ``b`` differs from ``a``, in [0, 1].

    The mean absolute difference of the cell that changed most, so that something new in one
    part of the picture (a sign, a person walking in) counts as much as a global change.
    """
    return float(cell_changes(a, b, cells).max())


def _changed_region(changed: np.ndarray, height: int, width: int,
                    lines: list[TextLine]) -> tuple[int, int, int, int]:
    """Pixels ``(top, left, bottom, right)`` around the changed cells, half a cell of margin,
    grown to contain every known text line it touches."""
    cells_y, cells_x = changed.shape
    ch, cw = height / cells_y, width / cells_x
    rows, cols = np.nonzero(changed)
    top, bottom = (rows.min() - 0.5) * ch, (rows.max() + 1.5) * ch
    left, right = (cols.min() - 0.5) * cw, (cols.max() + 1.5) * cw
    grown = True
    while grown:
        grown = False
        for ln in lines:
            y0, x0 = float(ln.box[:, 1].min()), float(ln.box[:, 0].min())
            y1, x1 = float(ln.box[:, 1].max()), float(ln.box[:, 0].max())
            touches = y0 < bottom and y1 > top and x0 < right and x1 > left
            inside = y0 >= top and y1 <= bottom and x0 >= left and x1 <= right
            if touches and not inside:
                pad = 0.25 * (y1 - y0)
                top, bottom = min(top, y0 - pad), max(bottom, y1 + pad)
                left, right = min(left, x0 - pad), max(right, x1 + pad)
                grown = True
    return (max(0, int(top)), max(0, int(left)), min(height, int(np.ceil(bottom))),
            min(width, int(np.ceil(right))))


def _outside(box: np.ndarray, region: tuple[int, int, int, int]) -> bool:
    top, left, bottom, right = region
    return bool(box[:, 1].max() <= top or box[:, 1].min() >= bottom
                or box[:, 0].max() <= left or box[:, 0].min() >= right)


class FrameDescriber(Describer):
    """Labels and/or on-screen text of a frame, gated on picture change.

    When only part of the picture changed since the last described frame, OCR reads just that
    part (at full resolution) and keeps the lines it read before elsewhere; the whole frame is
    read again on the first frame, at a cut, every ``max_interval`` and when most of the
    picture changed.
    """

    name = "frame"

    def __init__(self, config: DescribeConfig, labels: LabelDescriber | None = None,
                 ocr: OcrDescriber | None = None, detector: Detector | None = None):
        self.config = config
        self.labels = labels
        self.ocr = ocr
        self.detector = detector
        self._last_detect_pts: float | None = None
        self._last_thumb: np.ndarray | None = None
        self._last_pts: float | None = None
        self._last_full_pts: float | None = None
        self._lines: list[TextLine] | None = None
        self._last_ocr_pts: float | None = None
        self._pending: np.ndarray | None = None   # cells changed while OCR was deferred
        self.ocr_deferred = 0
        self.described = 0
        self.skipped = 0
        self.ocr_full = 0
        self.ocr_partial = 0
        self.seconds = {"labels": 0.0, "ocr": 0.0, "detect": 0.0}
        self.detected = 0

    @property
    def enabled(self) -> bool:
        """False when labels, OCR and the detector are all off (every frame then gets None)."""
        return self.labels is not None or self.ocr is not None or self.detector is not None

    def maybe_describe(self, frame: Frame, features: FrameFeatures) -> Description | None:
        """Describe ``frame`` if it changed at least ``change_threshold`` since the last described
        frame, or ``max_interval`` seconds passed, or it is the first; else None."""
        if not self.enabled:
            return None
        cfg = self.config
        thumb = thumbnail(frame.image)
        fresh = (self._last_thumb is None or self._last_pts is None or frame.pts < self._last_pts
                 or features.cut or self._last_thumb.shape != thumb.shape)
        interval = (not fresh and cfg.max_interval > 0
                    and frame.pts - self._last_pts >= cfg.max_interval - 1e-6)  # type: ignore[operator]
        cells = None if fresh else cell_changes(self._last_thumb, thumb)  # type: ignore[arg-type]
        changed = cells is not None and float(cells.max()) >= cfg.change_threshold
        # a change seen while OCR was deferred is read as soon as the OCR interval allows
        pending_due = (not fresh and self._pending is not None and self._last_ocr_pts is not None
                       and frame.pts - self._last_ocr_pts >= cfg.ocr_interval - 1e-6)
        if not (fresh or interval or changed or pending_due):
            self.skipped += 1
            return None
        self._last_thumb = thumb
        self._last_pts = frame.pts
        full_due = (fresh or self._last_full_pts is None
                    or (cfg.max_interval > 0 and frame.pts - self._last_full_pts >= cfg.max_interval - 1e-6))
        region_cells = None if full_due or cells is None else cells >= cfg.change_threshold
        return self._describe(frame, features, region_cells)

    def describe(self, frame: Frame, features: FrameFeatures | None = None) -> Description:
        """Labels and on-screen text of ``frame``, without gating (OCR reads the whole frame)."""
        return self._describe(frame, features, None)

    def _describe(self, frame: Frame, features: FrameFeatures | None,
                  changed: np.ndarray | None) -> Description:
        labels: tuple[tuple[str, float], ...] = ()
        text = ""
        if self.labels is not None:
            t0 = time.perf_counter()
            labels = self.labels.describe(frame, features).labels
            self.seconds["labels"] += time.perf_counter() - t0
        if self.ocr is not None:
            t0 = time.perf_counter()
            text = LINE_SEP.join(ln.text for ln in self._read(frame, changed))
            self.seconds["ocr"] += time.perf_counter() - t0
        objects = None
        last = self._last_detect_pts
        if self.detector is not None and (
                last is None or frame.pts < last or (features is not None and features.cut)
                or frame.pts - last >= self.config.detect_interval - 1e-6):
            t0 = time.perf_counter()
            objects = self.detector.detect(frame.image)
            self.seconds["detect"] += time.perf_counter() - t0
            self._last_detect_pts = frame.pts
            self.detected += 1
        self.described += 1
        return Description(labels=labels, text=text, objects=objects)

    def _read(self, frame: Frame, changed: np.ndarray | None) -> list[TextLine]:
        if self.ocr is None:
            return []
        iv = self.config.ocr_interval
        if (changed is not None and self._lines is not None and self._last_ocr_pts is not None
                and frame.pts - self._last_ocr_pts < iv - 1e-6):
            # OCR read recently: keep its lines, remember what changed, read it next time
            self._pending = changed.copy() if self._pending is None else (self._pending | changed)
            self.ocr_deferred += 1
            return self._lines
        if changed is not None and self._pending is not None:
            changed = changed | self._pending
        self._pending = None
        self._last_ocr_pts = frame.pts
        h, w = frame.height, frame.width
        region = None
        if changed is not None and self._lines is not None:
            if not changed.any():  # due by max_interval only, nothing moved: nothing new to read
                return self._lines
            region = _changed_region(changed, h, w, self._lines)
            top, left, bottom, right = region
            if (bottom - top) * (right - left) > FULL_READ_AREA * h * w:
                region = None
        if region is None:
            lines = self.ocr.read_lines(frame.image)
            self._last_full_pts = frame.pts
            self.ocr_full += 1
        else:
            kept = [ln for ln in self._lines or [] if _outside(ln.box, region)]
            lines = sort_lines(kept + self.ocr.read_region(frame.image, region))
            self.ocr_partial += 1
        self._lines = lines
        return lines

    @property
    def stats(self) -> dict[str, float]:
        """Frames described and skipped, and seconds spent per describer."""
        return {"described": self.described, "skipped": self.skipped, "ocr_full": self.ocr_full,
                "ocr_partial": self.ocr_partial, "ocr_deferred": self.ocr_deferred, "labels_s": self.seconds["labels"],
                "ocr_s": self.seconds["ocr"],
                "detected": self.detected, "detect_s": self.seconds["detect"]}


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
    ocr = OcrDescriber(min_score=config.ocr_min_score, max_side=config.ocr_max_side,
                       threads=config.threads) if config.ocr else None
    detector = None
    if config.detector != "none":
        detector = create_detector(config.detector, path=config.detector_path,
                                   min_score=config.detector_min_score, threads=config.threads)
    return FrameDescriber(config, labels=labels, ocr=ocr, detector=detector)


def create_recogniser(config: DescribeConfig | None = None):
    """The speech recogniser ``describe.asr_model`` names (Whisper through faster-whisper);
    load it once and give each source its own :class:`SpeechDescriber`."""
    config = config or DescribeConfig()
    return RECOGNISERS.create("whisper", model=config.asr_model, threads=config.asr_threads)
