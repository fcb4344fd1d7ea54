"""On-screen text of a frame, read with rapidocr (ONNX models that ship in the package).

Reading is two steps: text detection finds the boxes of text lines, recognition reads each
box. Given a :class:`ReadMemory`, a box found again where it was at an earlier read with the
same pixels keeps that read's words (no recognition); only new or changed boxes are read.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, NamedTuple

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ..types import Describer, Description, Frame, FrameFeatures, check_array

log = logging.getLogger(__name__)

#: separator between lines of text in ``Description.text``
LINE_SEP = " | "
#: lines with fewer letters or digits than this are dropped
MIN_CHARS = 2
#: a box is the same box as a remembered one when no corner moved more than this many pixels
#: (or this fraction of its height, whichever is more)
SAME_BOX_PX = 2.0
SAME_BOX_HEIGHT = 0.1
#: ... and its pixels are the same: at most one pixel in ``SAME_PIXELS_PER`` differs by
#: more than ``PIXEL_CHANGE`` grey levels (a changed character changes dozens by far more;
#: video coding noise on still text stays well below it)
PIXEL_CHANGE = 48
SAME_PIXELS_PER = 2000


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


class _Reading(NamedTuple):
    box: np.ndarray       # [4, 2] corners, frame coordinates
    crop: np.ndarray      # the box's pixels, grey, as the recogniser saw them
    text: str
    score: float


class ReadMemory:
    """What the last reads recognised, box by box (kept or not), in frame coordinates.

    A box found again at the same place with the same pixels is given the words read
    before instead of being recognised again; :meth:`OcrDescriber.read_lines` keeps it up
    to date. One memory per video (its frames in order)."""

    def __init__(self) -> None:
        self.readings: list[_Reading] = []
        self.reused = 0       # boxes given the words of an earlier read
        self.recognised = 0   # boxes recognised

    def clear(self) -> None:
        self.readings = []

    def find(self, box: np.ndarray, crop_at: Callable[[np.ndarray], np.ndarray | None]) -> _Reading | None:
        """The remembered reading of a box at the place of ``box`` whose pixels are the same
        now: ``crop_at(old_box)`` cuts the current picture at a remembered box (the detector
        places a box a pixel or two differently from one frame to the next; the pixels are
        compared at the remembered place)."""
        height = float(np.linalg.norm(box[0] - box[3]))
        tol = max(SAME_BOX_PX, SAME_BOX_HEIGHT * height)
        for r in self.readings:
            if float(np.abs(r.box - box).max()) > tol:
                continue
            now = crop_at(r.box)
            if now is None or now.shape != r.crop.shape:
                continue
            changed = int((np.abs(r.crop.astype(np.int16) - now) > PIXEL_CHANGE).sum())
            if changed <= now.size // SAME_PIXELS_PER:
                return r
        return None

    def replace(self, readings: list[_Reading], region: tuple[int, int, int, int] | None) -> None:
        """After a read of ``region`` (None: the whole frame): its readings replace those
        that touch it."""
        kept = [] if region is None else [r for r in self.readings if box_outside(r.box, region)]
        self.readings = kept + readings


def _grey(crop: np.ndarray) -> np.ndarray:
    return crop.mean(axis=2).astype(np.uint8) if crop.ndim == 3 else crop


def box_outside(box: np.ndarray, region: tuple[int, int, int, int]) -> bool:
    """True when the ``[4, 2]`` box lies wholly outside ``region`` = (top, left, bottom, right)."""
    top, left, bottom, right = region
    return bool(box[:, 1].max() <= top or box[:, 1].min() >= bottom
                or box[:, 0].max() <= left or box[:, 0].min() >= right)


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

    def read_lines(self, image: np.ndarray, memory: ReadMemory | None = None) -> list[TextLine]:
        """Lines of text of an ``[H, W, 3]`` uint8 RGB image with their boxes, in reading order;
        boxes that ``memory`` read before (same place, same pixels) are not read again."""
        return self._read(image, memory, None)

    def _read(self, image: np.ndarray, memory: ReadMemory | None,
              region: tuple[int, int, int, int] | None) -> list[TextLine]:
        """Lines of ``image`` cut to ``region`` (None: all of it), boxes in ``image`` coordinates."""
        check_array(image, "OcrDescriber.read image", ndim=3, dtypes=(np.uint8,))
        top, left = (0, 0) if region is None else region[:2]
        part = image if region is None else image[region[0]:region[2], region[1]:region[3]]
        if part.shape[0] < 8 or part.shape[1] < 8:
            if memory is not None:
                memory.replace([], region)
            return []
        from rapidocr.ch_ppocr_rec import TextRecInput
        from rapidocr.utils.process_img import get_rotate_crop_image

        engine = self.engine
        # rapidocr takes BGR arrays, as OpenCV reads them
        bgr = np.ascontiguousarray(part[:, :, ::-1])
        found = engine(bgr, use_det=True, use_cls=False, use_rec=False)
        boxes = getattr(found, "boxes", None)
        boxes = [] if boxes is None else [np.asarray(b, np.float32) for b in boxes]
        crops = [get_rotate_crop_image(bgr, b.copy()) for b in boxes]
        offset = np.array([left, top], np.float32)
        ph, pw = bgr.shape[:2]

        def crop_at(box: np.ndarray) -> np.ndarray | None:
            b = box - offset
            if b[:, 0].min() < 0 or b[:, 1].min() < 0 or b[:, 0].max() > pw or b[:, 1].max() > ph:
                return None
            return _grey(get_rotate_crop_image(bgr, b.astype(np.float32)))

        readings: list[_Reading] = []
        todo: list[int] = []     # boxes to recognise
        for i, (b, c) in enumerate(zip(boxes, crops)):
            known = memory.find(b + offset, crop_at) if memory is not None else None
            if known is None:
                todo.append(i)
                known = _Reading(b + offset, _grey(c), "", 0.0)
            readings.append(known)
        if todo:
            # the recogniser rapidocr itself would run on these crops (rapidocr >= 3.10 loads
            # it on first use; earlier 3.x releases build it with the engine)
            load = getattr(engine, "_load_rec_model", None)
            recogniser = load() if load is not None else engine.text_rec
            rec = recogniser(TextRecInput(img=[crops[i] for i in todo]))
            for i, text, score in zip(todo, rec.txts or (), rec.scores or ()):
                readings[i] = readings[i]._replace(text=str(text), score=float(score))
        if memory is not None:
            memory.recognised += len(todo)
            memory.reused += len(readings) - len(todo)
            memory.replace(readings, region)
        out = []
        for r in readings:
            text = " ".join(r.text.split())
            # a lone character is almost always an icon or texture read as a letter
            if (sum(ch.isalnum() for ch in text) >= MIN_CHARS
                    and r.score >= max(self.min_score, engine.text_score)):
                out.append(TextLine(text, r.score, r.box))
        return sort_lines(out)

    def read(self, image: np.ndarray) -> list[tuple[str, float]]:
        """``(line, confidence)`` of an ``[H, W, 3]`` uint8 RGB image, in reading order."""
        return [(ln.text, ln.score) for ln in self.read_lines(image)]

    def read_region(self, image: np.ndarray, region: tuple[int, int, int, int],
                    memory: ReadMemory | None = None) -> list[TextLine]:
        """Lines inside ``region`` = ``(top, left, bottom, right)`` pixels, boxes in frame
        coordinates; ``memory`` as in :meth:`read_lines`."""
        return self._read(image, memory, region)

    def describe(self, frame: Frame, features: FrameFeatures | None = None) -> Description:
        return Description(text=LINE_SEP.join(ln.text for ln in self.read_lines(frame.image)))
