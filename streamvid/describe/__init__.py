"""Describers: frames in words (ImageNet labels, on-screen text, COCO objects), and speech
in words (:mod:`.speech`, with a recogniser from :data:`RECOGNISERS`).

:class:`FrameDescriber` combines the enabled describers and describes a frame only when the
picture changed enough since the last described frame (or ``max_interval`` passed), because
OCR and the object detector are the slowest stages of the pipeline; the detector runs at
most every ``detect_interval`` seconds on described frames.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from ..config import DescribeConfig
from ..errors import ConfigError
from ..registry import Registry
from ..types import Describer, Description, Frame, FrameFeatures, VisionEncoder
from .detect import COCO_CLASSES, DETECTORS, Detector, create_detector
from .labels import LabelDescriber, has_classifier, readable_label
from .ocr import LINE_SEP, OcrDescriber, ReadMemory, TextLine, box_outside, reading_order, sort_lines
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
    "reading_order", "text_changes", "text_picture", "thumbnail",
]

#: side of the grey thumbnail that the change gate compares
THUMB = 32
#: the gate's change score is the largest change of any cell of a GATE_CELLS x GATE_CELLS grid
GATE_CELLS = 4
#: OCR reads the whole frame when the changed regions cover more than this fraction of it
FULL_READ_AREA = 0.5
#: OCR looks for what changed since it last read each part of the frame on a finer grid than
#: the gate's: OCR_CELLS x OCR_CELLS cells (45 x 25 pixels of a 720 x 405 frame, a word or two
#: of small text), compared on the grey frame at 1 / OCR_SCALE of its size ...
OCR_CELLS = 16
OCR_SCALE = 2
#: ... a cell changed when at least OCR_MIN_PIXELS of its pixels changed by OCR_PIXEL_CHANGE
#: grey levels or more: one changed character of small text changes a dozen or more by far
#: more, while coding noise on a still picture stays below it
OCR_PIXEL_CHANGE = 24
OCR_MIN_PIXELS = 3


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


def text_picture(image: np.ndarray) -> np.ndarray:
    """The grey ``uint8`` picture at 1 / :data:`OCR_SCALE` of ``image``'s size that OCR's
    change test compares."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    size = (max(OCR_CELLS, w // OCR_SCALE), max(OCR_CELLS, h // OCR_SCALE))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _cell_edges(n: int) -> np.ndarray:
    """Start of each of the :data:`OCR_CELLS` cells along a side of ``n`` pixels."""
    return np.linspace(0, n, OCR_CELLS + 1).astype(int)


def text_changes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[OCR_CELLS, OCR_CELLS]`` bool: the cells in which pictures ``a`` and ``b``
    (:func:`text_picture`) differ (see :data:`OCR_MIN_PIXELS`)."""
    big = (np.abs(a.astype(np.int16) - b) >= OCR_PIXEL_CHANGE).astype(np.int32)
    ys, xs = _cell_edges(big.shape[0])[:-1], _cell_edges(big.shape[1])[:-1]
    counts = np.add.reduceat(np.add.reduceat(big, ys, axis=0), xs, axis=1)
    return counts >= OCR_MIN_PIXELS


def _changed_regions(changed: np.ndarray, height: int, width: int,
                     lines: list[TextLine]) -> list[tuple[int, int, int, int]]:
    """Pixels ``(top, left, bottom, right)`` around each group of touching changed cells, half a
    cell of margin, grown to contain every known text line they touch; regions that overlap
    are merged into one."""
    import cv2

    cells_y, cells_x = changed.shape
    ch, cw = height / cells_y, width / cells_x
    n, labels = cv2.connectedComponents(changed.astype(np.uint8), connectivity=8)
    rects = []
    for k in range(1, n):
        rows, cols = np.nonzero(labels == k)
        rects.append(((rows.min() - 0.5) * ch, (cols.min() - 0.5) * cw,
                      (rows.max() + 1.5) * ch, (cols.max() + 1.5) * cw))
    while True:
        rects = [_grow(r, lines) for r in rects]
        merged: list[tuple[float, float, float, float]] = []
        for r in rects:
            for i, m in enumerate(merged):
                if r[0] < m[2] and r[2] > m[0] and r[1] < m[3] and r[3] > m[1]:
                    merged[i] = (min(r[0], m[0]), min(r[1], m[1]), max(r[2], m[2]), max(r[3], m[3]))
                    break
            else:
                merged.append(r)
        if len(merged) == len(rects):
            break
        rects = merged
    return [(max(0, int(t)), max(0, int(le)), min(height, int(np.ceil(b))), min(width, int(np.ceil(r))))
            for t, le, b, r in rects]


def _grow(rect: tuple[float, float, float, float],
          lines: list[TextLine]) -> tuple[float, float, float, float]:
    """``rect`` = (top, left, bottom, right) grown until every text line it touches is inside."""
    top, left, bottom, right = rect
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
    return top, left, bottom, right


class FrameDescriber(Describer):
    """Labels and/or on-screen text of a frame, gated on picture change.

    OCR reads only the parts of the frame that changed since it last read them (compared on a
    finer grid than the gate's, :data:`OCR_CELLS`), at full resolution, and keeps the lines it
    read before elsewhere; a frame in which no such part changed is not read at all. The whole
    frame is read on the first frame, at a cut and when most of the picture changed. Text
    boxes found again with the same pixels keep their words (:class:`ReadMemory`,
    ``ocr_reuse``). The detector runs at most every ``detect_interval`` seconds, and not
    when no part of the picture changed since it last ran (it found the same objects then).
    """

    name = "frame"

    def __init__(self, config: DescribeConfig, labels: LabelDescriber | None = None,
                 ocr: OcrDescriber | None = None, detector: Detector | None = None):
        self.config = config
        self.labels = labels
        self.ocr = ocr
        self.detector = detector
        self._last_detect_pts: float | None = None
        self._detect_thumb: np.ndarray | None = None   # the picture the detector last saw
        self._objects: tuple | None = None              # and what it found there
        self._last_thumb: np.ndarray | None = None
        self._last_pts: float | None = None
        self._ocr_ref: np.ndarray | None = None   # each OCR cell as it was when last read
        self._last_full_pts: float | None = None
        self.ocr_unchanged = 0
        self._lines: list[TextLine] | None = None
        self._last_ocr_pts: float | None = None
        self._pending = False   # the picture changed while OCR was deferred
        # the words of every text box read, so that unchanged boxes are not read again
        self._memory = ReadMemory() if config.ocr_reuse else None
        self.ocr_deferred = 0
        self.described = 0
        self.skipped = 0
        self.ocr_full = 0
        self.ocr_partial = 0
        self.seconds = {"labels": 0.0, "ocr": 0.0, "detect": 0.0}
        self.detected = 0
        self.detect_reused = 0

    @property
    def enabled(self) -> bool:
        """False when labels, OCR and the detector are all off (every frame then gets None)."""
        return self.labels is not None or self.ocr is not None or self.detector is not None

    def maybe_describe(self, frame: Frame, features: FrameFeatures, *,
                       objects: bool = True) -> Description | None:
        """Describe ``frame`` if it changed at least ``change_threshold`` since the last described
        frame, or ``max_interval`` seconds passed, or it is the first; else None. ``objects``
        False leaves the detector to :meth:`add_objects`."""
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
        pending_due = (not fresh and self._pending and self._last_ocr_pts is not None
                       and frame.pts - self._last_ocr_pts >= cfg.ocr_interval - 1e-6)
        if not (fresh or interval or changed or pending_due):
            self.skipped += 1
            return None
        self._last_thumb = thumb
        self._last_pts = frame.pts
        return self._describe(frame, features, not fresh, thumb, objects)

    def describe(self, frame: Frame, features: FrameFeatures | None = None) -> Description:
        """Labels and on-screen text of ``frame``, without gating (OCR reads the whole frame)."""
        return self._describe(frame, features, False)

    def _describe(self, frame: Frame, features: FrameFeatures | None, gated: bool,
                  thumb: np.ndarray | None = None, objects: bool = True) -> Description:
        """``gated``: OCR may read only what changed since it last read (else the whole frame)."""
        labels: tuple[tuple[str, float], ...] = ()
        text = ""
        if self.labels is not None:
            t0 = time.perf_counter()
            labels = self.labels.describe(frame, features).labels
            self.seconds["labels"] += time.perf_counter() - t0
        if self.ocr is not None:
            t0 = time.perf_counter()
            text = LINE_SEP.join(ln.text for ln in self._read(frame, gated))
            self.seconds["ocr"] += time.perf_counter() - t0
        self.described += 1
        desc = Description(labels=labels, text=text)
        return self.add_objects(frame, features, desc, thumb) if objects else desc

    def add_objects(self, frame: Frame, features: FrameFeatures | None, desc: Description | None,
                    thumb: np.ndarray | None = None) -> Description | None:
        """``desc`` (of ``frame``, from :meth:`maybe_describe` with ``objects=False``) with the
        detector's objects when detection is due: at most every ``detect_interval`` seconds,
        and not again on a picture in which no cell changed since the detector last ran (the
        objects found then are given). Frames in order; indexing calls it in a thread of its
        own, beside the labels and OCR of later frames."""
        if desc is None or self.detector is None:
            return desc
        last = self._last_detect_pts
        cut = features is not None and features.cut
        if not (last is None or frame.pts < last or cut
                or frame.pts - last >= self.config.detect_interval - 1e-6):
            return desc
        self._last_detect_pts = frame.pts
        if thumb is None and last is not None and not cut:
            thumb = thumbnail(frame.image)
        same = (thumb is not None and self._detect_thumb is not None and last is not None
                and frame.pts > last and not cut and self._detect_thumb.shape == thumb.shape
                and picture_change(self._detect_thumb, thumb) < self.config.change_threshold)
        if same:
            # no part of the picture changed since the detector last looked: the same objects
            objects = self._objects
            self.detect_reused += 1
        else:
            t0 = time.perf_counter()
            objects = self.detector.detect(frame.image)
            self.seconds["detect"] += time.perf_counter() - t0
            self._detect_thumb = thumb if thumb is not None else thumbnail(frame.image)
            self._objects = objects
            self.detected += 1
        return dataclasses.replace(desc, objects=objects)

    def _read(self, frame: Frame, gated: bool) -> list[TextLine]:
        if self.ocr is None:
            return []
        if (gated and self._lines is not None and self._last_ocr_pts is not None
                and self._last_ocr_pts <= frame.pts < self._last_ocr_pts + self.config.ocr_interval - 1e-6):
            # OCR read recently: keep its lines, read what changed as soon as the interval allows
            self._pending = True
            self.ocr_deferred += 1
            return self._lines
        self._pending = False
        if self._memory is not None and self._last_ocr_pts is not None and frame.pts < self._last_ocr_pts:
            self._memory.clear()   # another video
        h, w = frame.height, frame.width
        fine = text_picture(frame.image)
        regions = None
        full_every = self.config.ocr_full_interval
        full_due = full_every > 0 and (self._last_full_pts is None or frame.pts < self._last_full_pts
                                       or frame.pts - self._last_full_pts >= full_every - 1e-6)
        if gated and not full_due and self._lines is not None and self._ocr_ref is not None \
                and self._ocr_ref.shape == fine.shape:
            changed = text_changes(self._ocr_ref, fine)
            if not changed.any():   # nothing changed where it was read: the same text
                self.ocr_unchanged += 1
                return self._lines
            regions = _changed_regions(changed, h, w, self._lines)
            if sum((b - t) * (r - le) for t, le, b, r in regions) > FULL_READ_AREA * h * w:
                regions = None
        self._last_ocr_pts = frame.pts
        if regions is None:
            lines = self.ocr.read_lines(frame.image, self._memory)
            self._ocr_ref = fine
            self._last_full_pts = frame.pts
            self.ocr_full += 1
        else:
            kept = [ln for ln in self._lines or [] if all(box_outside(ln.box, r) for r in regions)]
            for region in regions:
                kept += self.ocr.read_region(frame.image, region, self._memory)
                self._remember(fine, region, h, w)
            lines = sort_lines(kept)
            self.ocr_partial += 1
        self._lines = lines
        return lines

    def _remember(self, fine: np.ndarray, region: tuple[int, int, int, int], h: int, w: int) -> None:
        """Take the OCR cells that lie wholly inside ``region`` (just read) from ``fine``."""
        top, left, bottom, right = region
        ys, xs = _cell_edges(fine.shape[0]), _cell_edges(fine.shape[1])
        sy, sx = h / fine.shape[0], w / fine.shape[1]
        rows = [i for i in range(OCR_CELLS) if ys[i] * sy >= top - 1 and ys[i + 1] * sy <= bottom + 1]
        cols = [j for j in range(OCR_CELLS) if xs[j] * sx >= left - 1 and xs[j + 1] * sx <= right + 1]
        if rows and cols and self._ocr_ref is not None:
            r = slice(ys[rows[0]], ys[rows[-1] + 1])
            c = slice(xs[cols[0]], xs[cols[-1] + 1])
            self._ocr_ref[r, c] = fine[r, c]

    @property
    def stats(self) -> dict[str, float]:
        """Frames described and skipped, and seconds spent per describer."""
        return {"described": self.described, "skipped": self.skipped, "ocr_full": self.ocr_full,
                "ocr_partial": self.ocr_partial, "ocr_deferred": self.ocr_deferred,
                "ocr_unchanged": self.ocr_unchanged,
                "ocr_boxes_read": self._memory.recognised if self._memory is not None else 0,
                "ocr_boxes_reused": self._memory.reused if self._memory is not None else 0,
                "labels_s": self.seconds["labels"],
                "ocr_s": self.seconds["ocr"],
                "detected": self.detected, "detect_reused": self.detect_reused,
                "detect_s": self.seconds["detect"]}


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
    threads = config.threads or 1   # the other stages of indexing use the other cores
    ocr = OcrDescriber(min_score=config.ocr_min_score, max_side=config.ocr_max_side,
                       threads=threads) if config.ocr else None
    detector = None
    if config.detector != "none":
        detector = create_detector(config.detector, path=config.detector_path,
                                   min_score=config.detector_min_score, threads=threads)
    return FrameDescriber(config, labels=labels, ocr=ocr, detector=detector)


def create_recogniser(config: DescribeConfig | None = None):
    """The speech recogniser ``describe.asr_model`` names (Whisper through faster-whisper);
    load it once and give each source its own :class:`SpeechDescriber`."""
    config = config or DescribeConfig()
    return RECOGNISERS.create("whisper", model=config.asr_model, threads=config.asr_threads)
