"""On-screen text of a frame, read with rapidocr (ONNX models that ship in the package)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ..types import Describer, Description, Frame, FrameFeatures, check_array

log = logging.getLogger(__name__)

#: separator between lines of text in ``Description.text``
LINE_SEP = " | "
#: lines with fewer letters or digits than this are dropped
MIN_CHARS = 2


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

    def read(self, image: np.ndarray) -> list[tuple[str, float]]:
        """``(line, confidence)`` of an ``[H, W, 3]`` uint8 RGB image, in reading order."""
        check_array(image, "OcrDescriber.read image", ndim=3, dtypes=(np.uint8,))
        # rapidocr takes BGR arrays, as OpenCV reads them
        result = self.engine(np.ascontiguousarray(image[:, :, ::-1]))
        txts = getattr(result, "txts", None) or ()
        scores = getattr(result, "scores", None) or ()
        boxes = getattr(result, "boxes", None)
        if not txts:
            return []
        boxes_list = [np.asarray(b, np.float32) for b in boxes] if boxes is not None else []
        idx = reading_order(boxes_list) if len(boxes_list) == len(txts) else list(range(len(txts)))
        out = []
        for i in idx:
            text = " ".join(str(txts[i]).split())
            # a lone character is almost always an icon or texture read as a letter
            if sum(ch.isalnum() for ch in text) >= MIN_CHARS and float(scores[i]) >= self.min_score:
                out.append((text, float(scores[i])))
        return out

    def describe(self, frame: Frame, features: FrameFeatures | None = None) -> Description:
        lines = self.read(frame.image)
        return Description(text=LINE_SEP.join(t for t, _ in lines))
