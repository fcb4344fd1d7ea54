"""On-screen text of a frame, read with rapidocr (ONNX models that ship in the package)."""

from __future__ import annotations

import logging
import threading
from typing import Any, NamedTuple

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ..types import Describer, Description, Frame, FrameFeatures, check_array

log = logging.getLogger(__name__)

#: separator between lines of text in ``Description.text``
LINE_SEP = " | "
#: lines with fewer letters or digits than this are dropped
MIN_CHARS = 2


class TextLine(NamedTuple):
    """One line of on-screen text: the words, the recogniser's confidence, the ``[4, 2]`` box."""

    text: str
    score: float
    box: np.ndarray


def sort_lines(lines: list[TextLine]) -> list[TextLine]:
    """Lines in reading order (see :func:`reading_order`)."""
    return [lines[i] for i in reading_order([ln.box for ln in lines])]


def reading_order(boxes: list[np.ndarray]) -> list[int]:
    """Indices of text boxes (``[4, 2]`` corner points) top to bottom, then left to right.

    Boxes whose vertical centres are within half a line height of each other form one row.
    """
    if not boxes:
        return []
    tops = [float(np.min(b[:, 1])) for b in boxes]
    bottoms = [float(np.max(b[:, 1])) for b in boxes]
    lefts = [float(np.min(b[:, 0])) for b in boxes]
    centres = [(t + b) / 2 for t, b in zip(tops, bottoms)]
    heights = [max(1.0, b - t) for t, b in zip(tops, bottoms)]
    order = sorted(range(len(boxes)), key=lambda i: (centres[i], lefts[i]))
    rows: list[list[int]] = []
    for i in order:
        if rows:
            last = rows[-1]
            ref = float(np.mean([centres[j] for j in last]))
            if abs(centres[i] - ref) <= 0.5 * max(heights[i], np.mean([heights[j] for j in last])):
                last.append(i)
                continue
        rows.append([i])
    return [i for row in rows for i in sorted(row, key=lambda j: lefts[j])]


class OcrDescriber(Describer):
    """Lines of on-screen text with confidence of at least ``min_score``, in reading order.

    Detection runs on the frame shrunk so that its longer side is at most ``max_side``
    pixels (0 = full size); plain footage then costs one small detection pass.
    """

    name = "ocr"

    def __init__(self, *, min_score: float = 0.6, max_side: int = 960, threads: int = 0):
        self.min_score = min_score
        self.max_side = max_side
        self.threads = threads
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Any:
        """The rapidocr engine, built on first use (no download: the models ship in the package)."""
        with self._lock:
            if self._engine is None:
                try:
                    from rapidocr import RapidOCR
                except ImportError as err:
                    raise MissingDependencyError("OCR (describe.ocr)", "rapidocr") from err
                params: dict[str, Any] = {"Global.log_level": "error", "Global.use_cls": False}
                if self.max_side > 0:
                    params.update({"Det.limit_type": "max", "Det.limit_side_len": self.max_side})
                if self.threads > 0:
                    params.update({"EngineConfig.onnxruntime.intra_op_num_threads": self.threads})
                try:
                    self._engine = RapidOCR(params=params)
                except Exception as err:  # rapidocr raises plain exceptions for broken installs
                    raise ModelError(f"rapidocr could not load its models: {err}; "
                                     "fix: pip install --force-reinstall rapidocr onnxruntime") from err
            return self._engine

    def read_lines(self, image: np.ndarray) -> list[TextLine]:
        """Lines of text of an ``[H, W, 3]`` uint8 RGB image with their boxes, in reading order."""
        check_array(image, "OcrDescriber.read image", ndim=3, dtypes=(np.uint8,))
        if image.shape[0] < 8 or image.shape[1] < 8:
            return []
        # rapidocr takes BGR arrays, as OpenCV reads them
        result = self.engine(np.ascontiguousarray(image[:, :, ::-1]))
        txts = getattr(result, "txts", None) or ()
        scores = getattr(result, "scores", None) or ()
        boxes = getattr(result, "boxes", None)
        if not txts:
            return []
        if boxes is None or len(boxes) != len(txts):
            h, w = image.shape[:2]
            boxes = [np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)] * len(txts)
        out = []
        for text, score, box in zip(txts, scores, boxes):
            text = " ".join(str(text).split())
            # a lone character is almost always an icon or texture read as a letter
            if sum(ch.isalnum() for ch in text) >= MIN_CHARS and float(score) >= self.min_score:
                out.append(TextLine(text, float(score), np.asarray(box, np.float32)))
        return sort_lines(out)

    def read(self, image: np.ndarray) -> list[tuple[str, float]]:
        """``(line, confidence)`` of an ``[H, W, 3]`` uint8 RGB image, in reading order."""
        return [(ln.text, ln.score) for ln in self.read_lines(image)]

    def read_region(self, image: np.ndarray, region: tuple[int, int, int, int]) -> list[TextLine]:
        """Lines inside ``region`` = ``(top, left, bottom, right)`` pixels, boxes in frame coordinates."""
        top, left, bottom, right = region
        lines = self.read_lines(np.ascontiguousarray(image[top:bottom, left:right]))
        return [TextLine(ln.text, ln.score, ln.box + np.array([left, top], np.float32)) for ln in lines]

    def describe(self, frame: Frame, features: FrameFeatures | None = None) -> Description:
        return Description(text=LINE_SEP.join(ln.text for ln in self.read_lines(frame.image)))
