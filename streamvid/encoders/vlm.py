"""VideoLLM vision towers as streamvid encoders: the tokens stored are the ones the LLM reads.

Three families, by hub name or local directory (``encoder.model``):

- LLaVA-OneVision (``llava_onevision``): SigLIP tower at the model's ``vision_feature_layer``
  (all patches, "full"), the multimodal projector, then the 2x2 bilinear pooling the model
  applies to video frames: 27x27 patches -> 14x14 tokens per frame at 384 px.
- Qwen2.5-VL (``qwen2_5_vl``): the windowed ViT and its 2x2 patch merger; each frame is one
  temporal patch (the frame repeated, as the processor does for a still image). ``encoder.size``
  (a multiple of 28, default 448) sets the grid: 448 px -> 16x16 tokens.
- SmolVLM2 / Idefics3 (``smolvlm``, ``idefics3``): the SigLIP tower's last layer, pixel
  shuffle and the connector's projection: 512 px -> 8x8 tokens (one "global" image per frame).

Pruning therefore happens after the projector, merger or pixel shuffle, on the tokens the
LLM reads as input embeddings; the pooled vector is their mean. :class:`VLM` loads a model
once per process (the encoder and the ``hf`` answerer share it) and states what its tokens
are as a :class:`~streamvid.types.TokenSpec`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import EncoderConfig
from ..errors import ConfigError, MissingDependencyError, ModelError
from ..types import EncoderOutput, TokenSpec, VisionEncoder
from . import register_encoder
from .hf import _read_json, letterbox_normalize
from .lite import check_images

log = logging.getLogger(__name__)

# model_type -> (family, transformers class)
FAMILIES = {
    "llava_onevision": ("llava-ov", "LlavaOnevisionForConditionalGeneration"),
    "qwen2_5_vl": ("qwen2.5-vl", "Qwen2_5_VLForConditionalGeneration"),
    "smolvlm": ("smolvlm", "SmolVLMForConditionalGeneration"),
    "idefics3": ("smolvlm", "Idefics3ForConditionalGeneration"),
}
_MEAN_STD = {  # used when the model directory has no preprocessor_config.json
    "llava-ov": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "qwen2.5-vl": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "smolvlm": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
QWEN_DEFAULT_SIZE = 448


def model_name(model: str) -> str:
    """How a model is named in a store: a local directory by its absolute path, else as given."""
    p = Path(model)
    return str(p.resolve()) if p.exists() else model


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available here; fix: use cpu or auto")
    return device


class VLM:
    """One loaded VideoLLM: its vision side as a token encoder, its tokenizer and LLM."""

    def __init__(self, model: str, *, dtype: str = "float32", device: str = "cpu",
                 local_files_only: bool = False):
        try:
            import torch
            import transformers
        except ModuleNotFoundError as err:
            raise MissingDependencyError("VideoLLM models", err.name or "transformers", "hf") from err
        self._torch = torch
        self.name = model_name(model)
        if not Path(model).exists():
            log.info("model %s is not a local path; loading it from the hub", model)
        try:
            cfg = transformers.AutoConfig.from_pretrained(model, local_files_only=local_files_only)
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot read the model config of {model!r}: {str(err).splitlines()[0]}; "
                             "fix: pass a local model directory or a valid hub name") from err
        if cfg.model_type not in FAMILIES:
            raise ConfigError(f"model {model!r}: model type {cfg.model_type!r} is not a supported "
                              f"VideoLLM; supported: {', '.join(sorted(FAMILIES))}")
        self.model_type = cfg.model_type
        self.family, cls_name = FAMILIES[cfg.model_type]
        self.device = resolve_device(device)
        self.dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        try:
            self.model = getattr(transformers, cls_name).from_pretrained(model, dtype=self.dtype,
                                                                   local_files_only=local_files_only)
        except (OSError, ValueError, RuntimeError) as err:
            raise ModelError(f"cannot load the {self.family} model {model!r}: "
                             f"{str(err).splitlines()[0]}") from err
        self.model.to(self.device).eval()
        self.config = cfg
        self._model_dir = model
        self._local_only = local_files_only
        self._tokenizer: Any = None
        self.lock = threading.Lock()   # one generation at a time per loaded model
        vc = cfg.vision_config
        self.hidden = int(cfg.text_config.hidden_size)
        proc = _read_json(model, "preprocessor_config.json", local_files_only) or {}
        mean, std = _MEAN_STD[self.family]
        self.image_mean = tuple(float(x) for x in proc.get("image_mean", mean))
        self.image_std = tuple(float(x) for x in proc.get("image_std", std))
        if self.family == "llava-ov":
            self.feature_layer = (f"vision layer {cfg.vision_feature_layer} "
                                  f"({cfg.vision_feature_select_strategy}) + projector + 2x2 pool")
        elif self.family == "qwen2.5-vl":
            self.feature_layer = f"vision layer -1 + {vc.spatial_merge_size}x{vc.spatial_merge_size} merger"
        else:
            self.feature_layer = f"vision layer -1 + pixel shuffle {cfg.scale_factor} + connector"

    def geometry(self, size: int = 0) -> tuple[int, tuple[int, int]]:
        """``(input side, token grid)`` of a frame: the model's own side for LLaVA-OneVision and
        SmolVLM; ``size`` (a multiple of patch x merge, default 448) for Qwen2.5-VL."""
        cfg, vc = self.config, self.config.vision_config
        if self.family == "qwen2.5-vl":
            unit = int(vc.patch_size) * int(vc.spatial_merge_size)
            side = int(size or QWEN_DEFAULT_SIZE)
            if side % unit:
                raise ConfigError(f"config encoder.size: {side} is not a multiple of {unit} "
                                  f"(patch x merge) of {self.name!r}; fix: e.g. {side // unit * unit}")
            return side, (side // unit, side // unit)
        side = int(vc.image_size)
        if size and size != side:
            raise ConfigError(f"config encoder.size: {self.family} models read frames at their own "
                              f"size {side}; fix: leave encoder.size at 0")
        n = side // int(vc.patch_size)
        g = math.ceil(n / 2) if self.family == "llava-ov" else n // int(cfg.scale_factor)
        return side, (g, g)

    # ------------------------------------------------------------------ facts
    @property
    def space(self) -> str:
        return f"llm-input:{self.model_type}:{self.hidden}"

    def token_spec(self, grid: tuple[int, int]) -> TokenSpec:
        return TokenSpec(self.name, self.feature_layer, self.space, tuple(grid))

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            import transformers

            try:
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(
                    self._model_dir, local_files_only=self._local_only)
            except (OSError, ValueError, TypeError) as err:
                raise ModelError(f"cannot load the tokenizer of {self._model_dir!r}: "
                                 f"{str(err).splitlines()[0]}") from err
        return self._tokenizer

    # ------------------------------------------------------------------ vision
    def pixels(self, images: Sequence[np.ndarray], size: int = 0):
        """Letterboxed, normalised ``[B, 3, side, side]`` float32 frames (see :meth:`geometry`)."""
        side, _ = self.geometry(size)
        return letterbox_normalize(images, side, self.image_mean, self.image_std, self._torch.float32)

    def qwen_patches(self, px):
        """``[B, 3, S, S]`` -> the flat patch rows Qwen2.5-VL's vision tower reads (each frame
        one temporal patch, as its processor lays out a still image) and the grid per frame."""
        vc = self.config.vision_config
        p, m, tp = int(vc.patch_size), int(vc.spatial_merge_size), int(vc.temporal_patch_size)
        b, c, h, w = px.shape
        gh, gw = h // p, w // p
        x = px.reshape(b, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
        x = x[:, :, :, :, :, :, None].expand(*x.shape[:6], tp, p, p)
        return x.reshape(b * gh * gw, c * tp * p * p), (gh, gw)

    def visual_tokens(self, images: Sequence[np.ndarray], size: int = 0):
        """The tokens the LLM reads for each frame: a ``[B, N, D]`` tensor, row-major grid."""
        torch = self._torch
        px = self.pixels(images, size).to(self.device, self.dtype)
        b = px.shape[0]
        core = self.model.model
        with torch.inference_mode():
            if self.family == "llava-ov":
                out = core.get_video_features(px[None]).pooler_output   # [1, B*N + 1 newline, D]
                toks = out[0, :-1].reshape(b, -1, self.hidden)
            elif self.family == "qwen2.5-vl":
                patches, (gh, gw) = self.qwen_patches(px)
                thw = torch.tensor([[1, gh, gw]] * b, device=self.device)
                toks = torch.stack(core.get_video_features(patches, thw).pooler_output)
            else:
                toks = core.get_image_features(px[None]).pooler_output[0].reshape(b, -1, self.hidden)
        return toks

    def embed(self, ids: Sequence[int]):
        """Input embeddings of token ids: ``[len, D]``."""
        torch = self._torch
        with torch.inference_mode():
            return self.model.get_input_embeddings()(torch.tensor(list(ids), device=self.device))


_LOADED: dict[tuple, VLM] = {}
_LOAD_LOCK = threading.Lock()


def load_vlm(model: str, *, dtype: str = "float32", device: str = "cpu",
             local_files_only: bool = False) -> VLM:
    """The VLM for these settings, loaded once per process (the encoder and the answerer of
    one pipeline share it)."""
    key = (model_name(model), dtype, resolve_device(device))
    with _LOAD_LOCK:
        vlm = _LOADED.get(key)
        if vlm is None:
            vlm = _LOADED[key] = VLM(model, dtype=dtype, device=device,
                                     local_files_only=local_files_only)
        return vlm


@register_encoder("vlm")
class VLMEncoder(VisionEncoder):
    """A VideoLLM's own vision side (see the module docstring)."""

    name = "vlm"

    def __init__(self, config: EncoderConfig | None = None, *, local_files_only: bool = False):
        """``local_files_only``: load a hub model only from the local cache, never download."""
        config = config or EncoderConfig(name="vlm")
        if not config.model:
            raise ConfigError("config encoder.model: the vlm encoder needs a hub name or a local path "
                              "of a VideoLLM; fix: e.g. encoder.model: "
                              "llava-hf/llava-onevision-qwen2-0.5b-ov-hf (see configs/hf-*.yaml)")
        import torch

        if config.threads:
            torch.set_num_threads(config.threads)
        self.vlm = load_vlm(config.model, dtype=config.dtype, device="cpu",
                            local_files_only=local_files_only)
        self.config = config
        self.batch_size = config.batch_size
        self.size, self.grid = self.vlm.geometry(config.size)
        self.dim = self.pooled_dim = self.vlm.hidden
        self.input_size = (self.size, self.size)
        self.model_id = f"vlm:{self.vlm.name}@{self.size}"
        self.encode_seconds = 0.0

    @property
    def token_spec(self) -> TokenSpec:
        return self.vlm.token_spec(self.grid)

    def encode(self, images: Sequence[np.ndarray]) -> EncoderOutput:
        imgs = check_images(images, "vlm encoder")
        n = self.grid[0] * self.grid[1]
        if not imgs:
            return EncoderOutput(np.zeros((0, n, self.dim), np.float32),
                                 np.zeros((0, self.dim), np.float32), self.grid)
        t0 = time.perf_counter()
        toks = [self.vlm.visual_tokens(imgs[i:i + self.batch_size], self.size).float().cpu().numpy()
                for i in range(0, len(imgs), self.batch_size)]
        self.encode_seconds += time.perf_counter() - t0
        tokens = np.ascontiguousarray(np.concatenate(toks), dtype=np.float32)
        return EncoderOutput(tokens, np.ascontiguousarray(tokens.mean(1)), self.grid)
