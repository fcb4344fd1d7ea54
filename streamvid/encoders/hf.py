"""Hugging Face vision towers (CLIP, SigLIP, ViT, DINOv2) as streamvid encoders.

``EncoderConfig.model`` is a hub name or a local directory; a hub name is downloaded only
because the user named it. Outputs:

- tokens: the patch tokens of the last layer after the model's final norm, row-major, with
  the CLS and register tokens dropped. CLIP's tokens are also passed through the visual
  projection, so that tokens, pooled vectors and text vectors share CLIP's joint space.
- pooled: CLIP the projected image embedding, SigLIP the attention-pooling head's output,
  ViT and DINOv2 the normalised CLS token.

Preprocessing (size, mean, std) comes from the model's ``preprocessor_config.json``; when
that file is absent, the model config's ``image_size`` and the family's usual statistics are
used (CLIP: OpenAI CLIP mean/std; SigLIP and ViT: 0.5/0.5; DINOv2: ImageNet). Frames are
letterboxed (aspect kept, centred, padded with the mean colour) rather than centre-cropped,
so nothing at the edges of a frame is lost. ``EncoderConfig.size`` overrides the side
(position embeddings are interpolated); it must be a multiple of the patch size.

CLIP and SigLIP checkpoints with a text tower give ``supports_text`` and ``encode_text``
(unit vectors in the pooled space; the tokenizer is loaded from the same place).

:attr:`HFEncoder.token_runner` exposes the model's pre-norm transformer blocks one operation
at a time; the token-level feature cache (:mod:`streamvid.cache`) runs its own layer loop
over them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..config import EncoderConfig
from ..errors import ConfigError, MissingDependencyError, ModelError, ValidationError
from ..types import EncoderOutput, VisionEncoder
from . import register_encoder
from .lite import check_images, letterbox_geometry

log = logging.getLogger(__name__)

_STATS = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_FAMILIES = {
    "clip": "clip", "clip_vision_model": "clip",
    "siglip": "siglip", "siglip_vision_model": "siglip",
    "vit": "vit", "dinov2": "dinov2", "dinov2_with_registers": "dinov2",
}


# --------------------------------------------------------------------------- block ops


@dataclass
class BlockOps:
    """One pre-norm transformer block, split into the operations a layer loop needs.

    ``h + ls1(out(attn(ln1(h))))`` then ``h + ls2(mlp(ln2(h)))``; ``ls1``/``ls2`` are layer
    scales (DINOv2) or identity.
    """

    ln1: Callable[[Any], Any]
    q: Callable[[Any], Any]
    k: Callable[[Any], Any]
    v: Callable[[Any], Any]
    out: Callable[[Any], Any]
    ln2: Callable[[Any], Any]
    mlp: Callable[[Any], Any]
    num_heads: int
    head_dim: int
    scale: float
    ls1: Callable[[Any], Any] | None = None
    ls2: Callable[[Any], Any] | None = None
    module: Any = None  # the transformers layer, for reference checks
    qkv_weight: Any = None  # [3*H*d, D]: the q, k and v projections stacked (one matmul)
    qkv_bias: Any = None    # [3*H*d]

    def __post_init__(self) -> None:
        import torch

        mods = (self.q, self.k, self.v)
        if all(isinstance(m, torch.nn.Linear) for m in mods):
            self.qkv_weight = torch.cat([m.weight.detach() for m in mods]).contiguous()
            self.qkv_bias = torch.cat([m.bias.detach() if m.bias is not None
                                       else torch.zeros(m.out_features, dtype=m.weight.dtype)
                                       for m in mods])

    @property
    def width(self) -> int:
        """``H * d``, the width of queries, keys and values."""
        return self.num_heads * self.head_dim

    def split(self, x):
        """``[B, T, H*d]`` -> ``[B, H, T, d]``."""
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def qkv_packed(self, h):
        """``ln1`` then the three projections as one ``[..., 3*H*d]`` tensor (q | k | v)."""
        import torch
        import torch.nn.functional as F

        a = self.ln1(h)
        if self.qkv_weight is None:
            return torch.cat([self.q(a), self.k(a), self.v(a)], dim=-1)
        return F.linear(a, self.qkv_weight, self.qkv_bias)

    def qkv(self, h):
        w = self.width
        packed = self.qkv_packed(h)
        return (self.split(packed[..., :w]), self.split(packed[..., w:2 * w]),
                self.split(packed[..., 2 * w:]))

    def finish(self, h, q, k, v):
        """Given the block input rows ``h`` and their queries, attend to ``k``/``v``."""
        import torch.nn.functional as F

        o = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        b, _, t, _ = o.shape
        return self.after_attention(h, o.transpose(1, 2).reshape(b, t, self.width))

    def after_attention(self, h, o):
        """Output projection, residual and MLP, given the heads' outputs ``o`` ``[..., H*d]``
        of the rows ``h`` (any leading shape)."""
        o = self.out(o)
        h = h + (self.ls1(o) if self.ls1 is not None else o)
        m = self.mlp(self.ln2(h))
        return h + (self.ls2(m) if self.ls2 is not None else m)

    def forward(self, h):
        """The full block: ``(output, keys, values)``."""
        q, k, v = self.qkv(h)
        return self.finish(h, q, k, v), k, v


@dataclass
class TokenRunner:
    """A vision tower as ``embed -> blocks -> finalize``, for token-level caching.

    ``embed(pixels)`` returns the block input ``[B, T, D]`` (prefix tokens first);
    ``finalize(h)`` turns the last block's output into ``(tokens [B, N, Dt], pooled [B, Dp])``.
    """

    embed: Callable[[Any], Any]
    blocks: list[BlockOps]
    finalize: Callable[[Any], tuple[Any, Any]]
    n_prefix: int
    preprocess: Callable[[Sequence[np.ndarray]], Any]

    def forward(self, pixels):
        h = self.embed(pixels)
        for blk in self.blocks:
            h, _, _ = blk.forward(h)
        return self.finalize(h)


def _clip_block(layer) -> BlockOps:
    at = layer.self_attn
    return BlockOps(layer.layer_norm1, at.q_proj, at.k_proj, at.v_proj, at.out_proj,
                    layer.layer_norm2, layer.mlp, at.num_heads, at.head_dim, float(at.scale),
                    module=layer)


def _vit_block(layer) -> BlockOps:
    at = layer.attention
    return BlockOps(layer.layernorm_before, at.q_proj, at.k_proj, at.v_proj, at.o_proj,
                    layer.layernorm_after, layer.mlp, at.num_attention_heads, at.head_dim,
                    float(at.scaling), module=layer)


def _dinov2_block(layer) -> BlockOps:
    at = layer.attention
    return BlockOps(layer.norm1, at.q_proj, at.k_proj, at.v_proj, at.o_proj, layer.norm2,
                    layer.mlp, at.num_attention_heads, at.head_dim, float(at.scaling),
                    ls1=layer.layer_scale1, ls2=layer.layer_scale2, module=layer)


def _layers(vm) -> list:
    """The transformer blocks of a vision model, wherever this transformers version keeps them."""
    for path in ("encoder.layers", "encoder.layer", "layers", "layer"):
        obj = vm
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return list(obj)
    raise ModelError(f"cannot find the transformer blocks of {type(vm).__name__}; the token-level "
                     "cache does not support this transformers version; fix: set cache.mode: frame")


# --------------------------------------------------------------------------- loading


def letterbox_normalize(images: Sequence[np.ndarray], size: int, mean: Sequence[float],
                        std: Sequence[float], dtype: Any):
    """Images letterboxed into ``size`` x ``size`` (aspect kept, centred, padded with the mean
    colour), scaled to [0, 1] and normalised: a ``[B, 3, size, size]`` tensor of ``dtype``."""
    import cv2
    import torch

    fill = np.array([round(255 * m) for m in mean], np.uint8)
    batch = np.empty((len(images), size, size, 3), np.uint8)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        _, nh, nw, top, left = letterbox_geometry(h, w, size)
        interp = cv2.INTER_AREA if nh < h else cv2.INTER_CUBIC
        batch[i] = fill
        batch[i, top:top + nh, left:left + nw] = cv2.resize(np.ascontiguousarray(img), (nw, nh),
                                                             interpolation=interp)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(tuple(mean)).view(1, 3, 1, 1)
    sd = torch.tensor(tuple(std)).view(1, 3, 1, 1)
    return ((x - m) / sd).to(dtype).contiguous()


def _read_json(model: str, name: str, local_files_only: bool = False) -> dict | None:
    p = Path(model)
    if p.is_dir():
        f = p / name
        return json.loads(f.read_text()) if f.is_file() else None
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        return json.loads(Path(hf_hub_download(model, name, local_files_only=local_files_only)).read_text())
    except EntryNotFoundError:
        return None


def _processor_size(proc: dict) -> int | None:
    for key in ("crop_size", "size"):
        val = proc.get(key)
        if isinstance(val, int):
            return val
        if isinstance(val, dict):
            for k in ("height", "shortest_edge", "width"):
                if isinstance(val.get(k), int):
                    return int(val[k])
    return None


@register_encoder("hf")
class HFEncoder(VisionEncoder):
    """A transformers CLIP / SigLIP / ViT / DINOv2 vision tower (see the module docstring)."""

    name = "hf"

    def __init__(self, config: EncoderConfig | None = None, *, local_files_only: bool = False):
        """``local_files_only``: load a hub model only from the local cache, never download."""
        config = config or EncoderConfig(name="hf")
        self._local_only = local_files_only
        if not config.model:
            raise ConfigError("config encoder.model: the hf encoder needs a hub name or a local "
                              "path; fix: e.g. encoder.model: google/siglip-base-patch16-224")
        try:
            import torch
            import transformers
        except ModuleNotFoundError as err:
            raise MissingDependencyError("the hf encoder", err.name or "transformers", "hf") from err
        self._torch = torch
        self.config = config
        model = config.model
        if not Path(model).exists():
            log.info("encoder model %s is not a local path; loading it from the hub", model)
        try:
            mcfg = transformers.AutoConfig.from_pretrained(model, local_files_only=local_files_only)
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot read the model config of {model!r}: {str(err).splitlines()[0]}; "
                             "fix: pass a local model directory or a valid hub name") from err
        family = _FAMILIES.get(mcfg.model_type)
        if family is None:
            raise ConfigError(f"config encoder.model {model!r}: model type {mcfg.model_type!r} is not "
                              f"supported by the hf encoder; supported: {', '.join(sorted(_FAMILIES))}")
        self.family = family
        self._dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
        if config.threads:
            torch.set_num_threads(config.threads)
        try:
            self._load(transformers, model, mcfg)
        except (OSError, ValueError, RuntimeError) as err:
            raise ModelError(f"cannot load the {family} model {model!r}: {str(err).splitlines()[0]}") from err
        self._setup_preprocessing(model)
        self.batch_size = config.batch_size
        self.model_id = f"hf:{model}@{self.size}"
        self.encode_seconds = 0.0
        self._runner: TokenRunner | None = None
        log.debug("hf encoder %s (%s) grid %s dim %d/%d text=%s", model, family, self.grid,
                  self.dim, self.pooled_dim, self.supports_text)

    # ------------------------------------------------------------------ loading
    def _load(self, tf: Any, model: str, mcfg: Any) -> None:
        kw = {"dtype": self._dtype, "local_files_only": self._local_only}
        self._text = None
        self._tokenizer = None
        mt = mcfg.model_type
        if mt == "clip":
            full = tf.CLIPModel.from_pretrained(model, **kw)
            self._vision, self._proj = full.vision_model, full.visual_projection
            self._text = (full.text_model, full.text_projection)
            self._keep = full
        elif mt == "clip_vision_model":
            vm = tf.CLIPVisionModelWithProjection.from_pretrained(model, **kw)
            self._vision, self._proj, self._keep = vm.vision_model, vm.visual_projection, vm
        elif mt == "siglip":
            full = tf.SiglipModel.from_pretrained(model, **kw)
            self._vision, self._proj, self._keep = full.vision_model, None, full
            self._text = (full.text_model, None)
        elif mt == "siglip_vision_model":
            vm = tf.SiglipVisionModel.from_pretrained(model, **kw)
            self._vision, self._proj, self._keep = vm, None, vm
        elif mt == "vit":
            vm = tf.ViTModel.from_pretrained(model, add_pooling_layer=False, **kw)
            self._vision, self._proj, self._keep = vm, None, vm
        elif mt == "dinov2":
            vm = tf.Dinov2Model.from_pretrained(model, **kw)
            self._vision, self._proj, self._keep = vm, None, vm
        else:  # dinov2_with_registers
            vm = tf.AutoModel.from_pretrained(model, **kw)
            self._vision, self._proj, self._keep = vm, None, vm
        self._keep.eval()
        vcfg = self._vision.config
        self.vision_config = vcfg
        self.patch = int(vcfg.patch_size)
        self.native_size = int(vcfg.image_size)
        hidden = int(vcfg.hidden_size)
        self.pooled_dim = int(self._proj.out_features) if self._proj is not None else hidden
        self.dim = self.pooled_dim  # CLIP tokens are projected too
        if self.family == "siglip" and not getattr(vcfg, "vision_use_head", True):
            raise ConfigError(f"config encoder.model {model!r}: this SigLIP vision tower has no pooling "
                              "head, so it has no pooled vector; fix: use a checkpoint with the head")
        if self._text is not None:
            try:
                self._tokenizer = tf.AutoTokenizer.from_pretrained(
                    model, local_files_only=self._local_only)
            except (OSError, ValueError, TypeError) as err:
                log.warning("no tokenizer for %s (%s): text tower disabled", model, err)
                self._text = None

    def _setup_preprocessing(self, model: str) -> None:
        proc = _read_json(model, "preprocessor_config.json", self._local_only) or {}
        mean, std = _STATS[self.family]
        self.image_mean = tuple(float(x) for x in proc.get("image_mean", mean))
        self.image_std = tuple(float(x) for x in proc.get("image_std", std))
        size = self.config.size or _processor_size(proc) or self.native_size
        if size % self.patch:
            raise ConfigError(f"config encoder.size: {size} is not a multiple of the patch size "
                              f"{self.patch} of {model!r}; fix: e.g. {size // self.patch * self.patch}")
        self.size = int(size)
        self.input_size = (self.size, self.size)
        self.grid = (self.size // self.patch, self.size // self.patch)
        self._interp = self.size != self.native_size

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, images: Sequence[np.ndarray]):
        """Letterboxed, normalised ``[B, 3, size, size]`` tensor in the compute dtype."""
        return letterbox_normalize(images, self.size, self.image_mean, self.image_std, self._dtype)

    # ------------------------------------------------------------------ forward
    def _n_prefix(self) -> int:
        if self.family in ("clip", "vit"):
            return 1
        if self.family == "dinov2":
            return 1 + int(getattr(self.vision_config, "num_register_tokens", 0) or 0)
        return 0

    def _finalize(self, last):
        """Last block output (before the final norm) -> (tokens, pooled)."""
        vm, p = self._vision, self._n_prefix()
        if self.family == "clip":
            normed = vm.post_layernorm(last)
            return self._proj(normed[:, p:]), self._proj(normed[:, 0])
        if self.family == "siglip":
            normed = vm.post_layernorm(last)
            return normed, vm.head(normed)
        normed = vm.layernorm(last)
        return normed[:, p:], normed[:, 0]

    def _plain(self, pixels):
        """The transformers forward; tokens and pooled from its outputs."""
        vm = self._vision
        kw = {"interpolate_pos_encoding": True} if self._interp and self.family != "dinov2" else {}
        out = vm(pixel_values=pixels, **kw)
        if self.family == "siglip":
            return out.last_hidden_state, out.pooler_output
        if self.family == "clip":
            # last_hidden_state is before the post-layernorm; pooler_output after it
            normed = vm.post_layernorm(out.last_hidden_state)
            return self._proj(normed[:, 1:]), self._proj(out.pooler_output)
        last = out.last_hidden_state  # ViT / DINOv2: after the final layernorm
        return last[:, self._n_prefix():], last[:, 0]

    def encode(self, images: Sequence[np.ndarray]) -> EncoderOutput:
        imgs = check_images(images, "hf encoder")
        n = self.grid[0] * self.grid[1]
        if not imgs:
            return EncoderOutput(np.zeros((0, n, self.dim), np.float32),
                                 np.zeros((0, self.pooled_dim), np.float32), self.grid)
        torch = self._torch
        toks, pools = [], []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(imgs), self.batch_size):
                t, p = self._plain(self.preprocess(imgs[i:i + self.batch_size]))
                toks.append(t.float().numpy())
                pools.append(p.float().numpy())
        self.encode_seconds += time.perf_counter() - t0
        return EncoderOutput(np.ascontiguousarray(np.concatenate(toks), dtype=np.float32),
                             np.ascontiguousarray(np.concatenate(pools), dtype=np.float32), self.grid)

    # ------------------------------------------------------------------ token-level access
    @property
    def token_runner(self) -> TokenRunner:
        """The tower as embed / blocks / finalize operations (see :class:`TokenRunner`)."""
        if self._runner is None:
            vm = self._vision
            interp = self._interp
            if self.family == "clip":
                def embed(px):
                    return vm.pre_layrnorm(vm.embeddings(px, interpolate_pos_encoding=interp))
                blocks = [_clip_block(layer) for layer in _layers(vm)]
            elif self.family == "siglip":
                def embed(px):
                    return vm.embeddings(px, interpolate_pos_encoding=interp)
                blocks = [_clip_block(layer) for layer in _layers(vm)]
            elif self.family == "vit":
                def embed(px):
                    return vm.embeddings(px, interpolate_pos_encoding=interp)
                blocks = [_vit_block(layer) for layer in _layers(vm)]
            else:
                def embed(px):
                    return vm.embeddings(px)
                blocks = [_dinov2_block(layer) for layer in _layers(vm)]
            self._runner = TokenRunner(embed, blocks, self._finalize, self._n_prefix(), self.preprocess)
        return self._runner

    # ------------------------------------------------------------------ text
    @property
    def supports_text(self) -> bool:
        return self._text is not None

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors ``[B, pooled_dim]`` in the pooled (image) space."""
        if self._text is None:
            raise ModelError(f"encoder {self.model_id!r} has no text tower; fix: use a CLIP or "
                             "SigLIP checkpoint with its text model and tokenizer")
        if isinstance(texts, str):
            raise ValidationError("hf encoder encode_text: expected a sequence of strings, got one "
                                  "string; fix: pass [text]")
        items = list(texts)
        if not items:
            return np.zeros((0, self.pooled_dim), np.float32)
        if not all(isinstance(t, str) for t in items):
            raise ValidationError("hf encoder encode_text: every text must be a string")
        torch = self._torch
        text_model, proj = self._text
        tcfg = text_model.config
        max_len = int(getattr(tcfg, "max_position_embeddings", 77))
        if self.family == "siglip":  # trained with fixed-length padding
            enc = self._tokenizer(items, padding="max_length", truncation=True, max_length=max_len,
                                  return_tensors="pt")
        else:
            enc = self._tokenizer(items, padding=True, truncation=True, max_length=max_len,
                                  return_tensors="pt")
        kw = {"input_ids": enc["input_ids"]}
        if self.family == "clip" and "attention_mask" in enc:
            kw["attention_mask"] = enc["attention_mask"]
        with torch.inference_mode():
            pooled = text_model(**kw).pooler_output
            if proj is not None:
                pooled = proj(pooled)
            vec = pooled.float().numpy()
        norms = np.linalg.norm(vec, axis=1, keepdims=True)
        return np.ascontiguousarray(vec / np.maximum(norms, 1e-12), dtype=np.float32)
