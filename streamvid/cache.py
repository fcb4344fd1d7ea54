"""Feature caches: reuse the encoder's work on frames that barely changed.

Two modes (``CacheConfig.mode``):

``frame`` (any encoder)
    A cheap change test on a small colour thumbnail (``thumb_size`` squared) compares each
    frame with the last *encoded* frame; below ``threshold``, and with no cell of a 4x4 grid
    changed by ``cell_threshold`` (a new small object), the frame reuses that frame's
    tokens and pooled vector (``reused=True``, ``tokens_recomputed=0``). Comparing with the
    last encoded frame, not the previous frame, keeps slow drift from accumulating; a chain
    of reused frames is refreshed after ``max_age`` frames; a scene cut (change against the
    previous frame ``>= cut_threshold``) is always encoded. Frames that need encoding are
    batched (``batch_size``); ``push`` returns features in frame order as soon as they are
    known, ``flush`` encodes the rest.

``token`` (transformer encoders that expose a token-level runner, e.g. ``hf``)
    Every frame goes through the network, but inside each transformer layer only the tokens
    whose input changed most against a reference frame are recomputed; the rest copy the
    reference's outputs (see :class:`TokenCache` below).

The change score is the mean absolute difference of two thumbnails in ``[0, 1]`` (0 means
identical); every :class:`~streamvid.types.FrameFeatures` carries it (against the previous
frame) so later stages can use it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .config import CacheConfig
from .errors import ConfigError, ValidationError
from .types import FeatureCache, Frame, FrameFeatures, VisionEncoder

log = logging.getLogger(__name__)

__all__ = ["FrameCache", "NoCache", "create_cache", "thumbnail", "change_score", "local_change"]


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """A ``[size, size, 3]`` float32 thumbnail in ``[0, 1]`` (area-averaged)."""
    import cv2

    small = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) * (1.0 / 255.0)


def change_score(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails, in ``[0, 1]``; 0 = identical."""
    return float(np.mean(np.abs(a - b)))


CELLS = 4  # the local change test looks at a CELLS x CELLS grid of the thumbnail


def local_change(a: np.ndarray, b: np.ndarray, cells: int = CELLS) -> float:
    """The largest mean absolute difference of any cell of a ``cells x cells`` grid.

    Something new in one part of the picture (an object put down, a sign raised) barely
    moves the global mean, but fills its cell: a frame with such a change must be encoded.
    """
    d = np.abs(a - b).mean(axis=2) if a.ndim == 3 else np.abs(a - b)
    h, w = d.shape
    ch, cw = max(1, h // cells), max(1, w // cells)
    d = d[:ch * cells, :cw * cells].reshape(cells, ch, cells, cw).mean(axis=(1, 3))
    return float(d.max())


@dataclass
class _Entry:
    """One pushed frame waiting for its features."""

    frame: Frame
    change: float
    cut: bool
    encode: bool                     # True: encoded itself; False: reuses `source`
    source: "_Entry | None" = None
    tokens: np.ndarray | None = None
    pooled: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        src = self if self.encode else self.source
        return src is not None and src.tokens is not None


class _StatsMixin:
    def _init_stats(self) -> None:
        self._frames = 0
        self._reused = 0
        self._tokens_total = 0.0
        self._tokens_recomputed = 0.0
        self._encode_seconds = 0.0

    @property
    def stats(self) -> Mapping[str, float]:
        """frames, frames_reused, tokens_total, tokens_recomputed, encode_seconds (+ ratios)."""
        f = self._frames
        return {
            "frames": f,
            "frames_reused": self._reused,
            "tokens_total": self._tokens_total,
            "tokens_recomputed": self._tokens_recomputed,
            "encode_seconds": self._encode_seconds,
            "reuse_ratio": self._reused / f if f else 0.0,
            "recompute_ratio": self._tokens_recomputed / self._tokens_total if self._tokens_total else 0.0,
        }


class FrameCache(_StatsMixin, FeatureCache):
    """Frame-level reuse in front of any :class:`VisionEncoder` (see the module docstring).

    With ``config.enabled`` False every frame is encoded (change scores are still computed).
    """

    def __init__(self, encoder: VisionEncoder, config: CacheConfig | None = None, *,
                 batch_size: int = 16):
        if batch_size < 1:
            raise ConfigError(f"feature cache batch_size: expected >= 1, got {batch_size}")
        self.encoder = encoder
        self.config = config or CacheConfig()
        self.batch_size = int(batch_size)
        self._queue: deque[_Entry] = deque()
        self._to_encode: list[_Entry] = []
        self._prev_thumb: np.ndarray | None = None
        self._ref_thumb: np.ndarray | None = None
        self._ref_entry: _Entry | None = None
        self._age = 0
        self._init_stats()

    # ------------------------------------------------------------------ decisions
    def _decide(self, frame: Frame) -> _Entry:
        cfg = self.config
        thumb = thumbnail(frame.image, cfg.thumb_size)
        change = 1.0 if self._prev_thumb is None else change_score(thumb, self._prev_thumb)
        cut = self._prev_thumb is not None and change >= cfg.cut_threshold
        self._prev_thumb = thumb
        reuse = False
        if cfg.enabled and not cut and self._ref_entry is not None and self._age < cfg.max_age:
            ref = self._ref_thumb
            reuse = (change_score(thumb, ref) < cfg.threshold  # type: ignore[arg-type]
                     and local_change(thumb, ref) < cfg.cell_threshold)  # type: ignore[arg-type]
        if reuse:
            self._age += 1
            return _Entry(frame, change, cut, encode=False, source=self._ref_entry)
        entry = _Entry(frame, change, cut, encode=True)
        self._ref_entry, self._ref_thumb, self._age = entry, thumb, 0
        return entry

    @staticmethod
    def _check_frame(frame: Frame) -> None:
        if not isinstance(frame, Frame):
            raise ValidationError(f"feature cache push: expected a Frame, got {type(frame).__name__}")

    # ------------------------------------------------------------------ encoding
    def _encode_pending(self) -> None:
        batch, self._to_encode = self._to_encode, []
        if not batch:
            return
        t0 = time.perf_counter()
        out = self.encoder.encode([e.frame.image for e in batch])
        self._encode_seconds += time.perf_counter() - t0
        for i, e in enumerate(batch):
            e.tokens = out.tokens[i]
            e.pooled = out.pooled[i]

    def _emit(self) -> list[FrameFeatures]:
        ready: list[FrameFeatures] = []
        while self._queue and self._queue[0].ready:
            e = self._queue.popleft()
            src = e if e.encode else e.source
            assert src is not None and src.tokens is not None and src.pooled is not None
            n = int(src.tokens.shape[0])
            self._frames += 1
            self._tokens_total += n
            if e.encode:
                self._tokens_recomputed += n
            else:
                self._reused += 1
            ready.append(FrameFeatures(
                pts=e.frame.pts, index=e.frame.index, tokens=src.tokens, pooled=src.pooled,
                grid=tuple(self.encoder.grid), reused=not e.encode,
                tokens_recomputed=1.0 if e.encode else 0.0, change=e.change, cut=e.cut,
                source_id=e.frame.source_id))
            if e.encode:
                e.extra.clear()
        return ready

    # ------------------------------------------------------------------ API
    def push(self, frame: Frame) -> list[FrameFeatures]:
        self._check_frame(frame)
        entry = self._decide(frame)
        self._queue.append(entry)
        if entry.encode:
            self._to_encode.append(entry)
            if len(self._to_encode) >= self.batch_size:
                self._encode_pending()
        return self._emit()

    def flush(self) -> list[FrameFeatures]:
        self._encode_pending()
        return self._emit()

    def reset(self) -> None:
        """Forget the reference frame (e.g. when a new video starts); pending frames stay."""
        self._prev_thumb = self._ref_thumb = None
        self._ref_entry = None
        self._age = 0


class NoCache(FrameCache):
    """Encodes every frame (batched) and still reports change scores and cuts."""

    def __init__(self, encoder: VisionEncoder, config: CacheConfig | None = None, *,
                 batch_size: int = 16):
        import dataclasses

        cfg = dataclasses.replace(config or CacheConfig(), enabled=False)
        super().__init__(encoder, cfg, batch_size=batch_size)


def create_cache(encoder: VisionEncoder, config: CacheConfig | None = None, *,
                 batch_size: int = 16) -> FeatureCache:
    """The feature cache ``config`` asks for, in front of ``encoder``.

    ``mode="frame"`` works with any encoder; ``mode="token"`` needs an encoder with a
    transformer layer loop (``hf`` with a CLIP, SigLIP, ViT or DINOv2 vision model) and
    raises :class:`ConfigError` otherwise. ``enabled=False`` encodes every frame.
    """
    config = config or CacheConfig()
    if not config.enabled:
        return NoCache(encoder, config, batch_size=batch_size)
    if config.mode == "frame":
        return FrameCache(encoder, config, batch_size=batch_size)
    if config.mode == "token":
        if not hasattr(type(encoder), "token_runner"):
            raise ConfigError(
                f"config cache.mode=token needs a transformer vision encoder (hf with a CLIP, "
                f"SigLIP, ViT or DINOv2 model); encoder {encoder.name!r} ({encoder.model_id}) "
                "cannot recompute single tokens; fix: set cache.mode: frame, or encoder.name: hf")
        return TokenCache(encoder, config, batch_size=batch_size)
    raise ConfigError(f"config cache.mode: expected frame or token, got {config.mode!r}")


# --------------------------------------------------------------------------- token level


def adaptive_ratio(base: float, change: float, threshold: float) -> float:
    """Recompute ratio for a frame: ``base`` scaled by ``change / threshold`` in [0.25, 4]."""
    if threshold <= 0:
        return 1.0
    return float(min(1.0, max(0.0, base * min(4.0, max(0.25, change / threshold)))))


class _Reference:
    """A fully computed frame: per-layer block inputs ``h[l]`` (``h[L]`` is the last output)
    and per-layer keys and values ``kv[l]`` ``[T, 2*H*d]`` (keys, then values, token-major)."""

    def __init__(self, thumb: np.ndarray) -> None:
        self.thumb = thumb
        self.h: list[Any] = []
        self.kv: list[Any] = []
        self.age = 0


@dataclass
class _Pending:
    """A frame waiting for a partial pass against the current reference."""

    frame: Frame
    change: float
    cut: bool
    ratio: float


class TokenCache(_StatsMixin, FeatureCache):
    """Token-level selective recompute inside the transformer blocks of an ``hf`` encoder.

    A reference frame gets a full pass that keeps, per block, its input hidden states, keys
    and values. A later frame computes its patch embedding and picks the tokens whose
    embedding moved most from the reference's (plus the CLS/register tokens). Through every
    block only those rows are carried: layer norm, queries, keys, values, attention and MLP
    are computed for them alone; they attend to all tokens, with their own fresh keys and
    values and the reference's for the rest. The other tokens keep the reference's hidden
    states, so their keys and values are the reference's without any recompute, and at the
    end they take the reference's last-layer output. Every block's recomputed rows are
    exactly the transformers block run on that mixed input, and with ratio 1 this is the
    plain forward. (Re-ranking the tokens in every layer would pick the same set: rows that
    were not recomputed equal the reference's, so their change is zero.)

    Which frames are references: the first, a scene cut (change against the previous frame
    ``>= cut_threshold``), a jump (change against the reference ``>= refresh_threshold``),
    and every frame after ``max_age`` partial ones. The ratio per frame is
    ``recompute_ratio`` or, with ``adaptive``, ``recompute_ratio * clip(change_to_reference /
    threshold, 0.25, 4)`` capped at 1.

    Frames that share a reference are processed together, up to ``batch_size`` at a time:
    their recomputed rows are stacked into one matrix per operation. ``push`` returns the
    features that are ready (a reference frame finishes the waiting partial frames first);
    ``flush`` runs the rest. With ``batch_size=1`` every ``push`` returns its own frame.
    """

    def __init__(self, encoder: VisionEncoder, config: CacheConfig | None = None, *,
                 batch_size: int = 1):
        if not hasattr(type(encoder), "token_runner"):
            raise ConfigError(f"token cache: encoder {encoder.name!r} has no token runner; "
                              "fix: set cache.mode: frame")
        if batch_size < 1:
            raise ConfigError(f"token cache batch_size: expected >= 1, got {batch_size}")
        import torch

        runner = encoder.token_runner  # type: ignore[attr-defined]

        self._torch = torch
        self.encoder = encoder
        self.runner = runner
        self.config = config or CacheConfig(mode="token")
        self.batch_size = int(batch_size)
        self._ref: _Reference | None = None
        self._prev_thumb: np.ndarray | None = None
        self._pending: list[_Pending] = []
        self._new_reference = False
        self.trace: list[dict[str, Any]] | None = None  # set to [] to record per-block details
        self._init_stats()
        self._partial = 0

    @property
    def stats(self) -> Mapping[str, float]:
        out = dict(super().stats)
        out["frames_partial"] = self._partial
        return out

    # ------------------------------------------------------------------ passes
    def full_pass(self, pixels, thumb: np.ndarray | None = None):
        """Full forward of one frame ``[1, 3, H, W]``; it becomes the reference."""
        ref = _Reference(thumb if thumb is not None else np.zeros(0, np.float32))
        h = self.runner.embed(pixels)
        for blk in self.runner.blocks:
            ref.h.append(h)
            w = blk.width
            packed = blk.qkv_packed(h)
            ref.kv.append(packed[0, :, w:].contiguous())
            h = blk.finish(h, blk.split(packed[..., :w]), blk.split(packed[..., w:2 * w]),
                           blk.split(packed[..., 2 * w:]))
        ref.h.append(h)
        self._ref = ref
        tokens, pooled = self.runner.finalize(h)
        return tokens, pooled, 1.0

    def partial_pass(self, pixels, ratio: float | list[float]):
        """Selective recompute of ``[B, 3, H, W]`` frames against the current reference.

        ``ratio`` is one fraction for all frames or one per frame. Returns ``(tokens,
        pooled, share)``: ``share`` is the recomputed fraction of tokens (a float for one
        frame, else a list).
        """
        torch = self._torch
        F = torch.nn.functional
        ref = self._ref
        if ref is None:
            raise ValidationError("token cache partial_pass: no reference frame yet; "
                                  "fix: run full_pass first")
        p = self.runner.n_prefix
        h0 = self.runner.embed(pixels)
        b, t, d = h0.shape
        ratios = [float(ratio)] * b if np.isscalar(ratio) else [float(r) for r in ratio]
        n_patch = t - p
        counts = [p + min(n_patch, max(1, int(np.ceil(r * n_patch)))) for r in ratios]
        delta = (h0 - ref.h[0]).float().norm(dim=-1)            # [B, T]
        if p:
            delta[:, :p] = float("inf")
        order = torch.topk(delta, max(counts), dim=1, sorted=True).indices
        idx = [order[i, :c].sort().values for i, c in enumerate(counts)]
        flat = torch.cat([ix + i * t for i, ix in enumerate(idx)])
        x = h0.reshape(b * t, d).index_select(0, flat)            # [N, D] recomputed rows
        uniform = len(set(counts)) == 1
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for layer, blk in enumerate(self.runner.blocks):
            w, nh, hd = blk.width, blk.num_heads, blk.head_dim
            packed = blk.qkv_packed(x)                            # [N, 3w]
            kv = ref.kv[layer].repeat(b, 1)                       # [B*T, 2w]
            kv.index_copy_(0, flat, packed[:, w:])
            kv = kv.view(b, t, 2, nh, hd)
            keys, vals = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
            if uniform:
                c = counts[0]
                q = packed[:, :w].reshape(b, c, nh, hd).transpose(1, 2)
                o = F.scaled_dot_product_attention(q, keys, vals, scale=blk.scale)
                o = o.transpose(1, 2).reshape(b * c, w)
            else:
                parts = []
                for i in range(b):
                    c = counts[i]
                    q = packed[bounds[i]:bounds[i + 1], :w].reshape(1, c, nh, hd).transpose(1, 2)
                    oi = F.scaled_dot_product_attention(q, keys[i:i + 1], vals[i:i + 1], scale=blk.scale)
                    parts.append(oi.transpose(1, 2).reshape(c, w))
                o = torch.cat(parts)
            out = blk.after_attention(x, o)
            if self.trace is not None:
                for i in range(b):
                    mixed = ref.h[layer].clone()
                    mixed[:, idx[i]] = x[bounds[i]:bounds[i + 1]]
                    self.trace.append({"layer": layer, "frame": i, "idx": idx[i], "input": mixed,
                                       "output": out[bounds[i]:bounds[i + 1]].unsqueeze(0)})
            x = out
        h = ref.h[-1].reshape(t, d).repeat(b, 1)                  # [B*T, D]
        h.index_copy_(0, flat, x)
        tokens, pooled = self.runner.finalize(h.view(b, t, d))
        shares = [c / t for c in counts]
        return tokens, pooled, (shares[0] if np.isscalar(ratio) else shares)

    # ------------------------------------------------------------------ running
    def _features(self, frame: Frame, tokens, pooled, share: float, change: float,
                  cut: bool) -> FrameFeatures:
        tok = tokens.float().numpy().copy()
        pool = pooled.float().numpy().copy()
        n = tok.shape[0]
        self._frames += 1
        self._tokens_total += n
        self._tokens_recomputed += share * n
        return FrameFeatures(pts=frame.pts, index=frame.index, tokens=tok, pooled=pool,
                             grid=tuple(self.encoder.grid), reused=False,
                             tokens_recomputed=float(min(1.0, share)), change=change, cut=cut,
                             source_id=frame.source_id)

    def _run_pending(self) -> list[FrameFeatures]:
        batch, self._pending = self._pending, []
        if not batch:
            return []
        torch = self._torch
        t0 = time.perf_counter()
        with torch.inference_mode():
            pixels = self.runner.preprocess([e.frame.image for e in batch])
            tokens, pooled, shares = self.partial_pass(pixels, [e.ratio for e in batch])
            out = [self._features(e.frame, tokens[i], pooled[i], shares[i], e.change, e.cut)
                   for i, e in enumerate(batch)]
        self._encode_seconds += time.perf_counter() - t0
        self._partial += len(batch)
        return out

    # ------------------------------------------------------------------ API
    def push(self, frame: Frame) -> list[FrameFeatures]:
        FrameCache._check_frame(frame)
        cfg = self.config
        thumb = thumbnail(frame.image, cfg.thumb_size)
        change = 1.0 if self._prev_thumb is None else change_score(thumb, self._prev_thumb)
        cut = self._prev_thumb is not None and change >= cfg.cut_threshold
        self._prev_thumb = thumb
        ref = self._ref
        change_ref = 1.0 if ref is None else change_score(thumb, ref.thumb)
        full = (ref is None or cut or self._new_reference or change_ref >= cfg.refresh_threshold
                or ref.age >= cfg.max_age)
        if not full:
            ratio = adaptive_ratio(cfg.recompute_ratio, change_ref, cfg.threshold) \
                if cfg.adaptive else cfg.recompute_ratio
            ref.age += 1  # type: ignore[union-attr]
            self._pending.append(_Pending(frame, change, cut, ratio))
            return self._run_pending() if len(self._pending) >= self.batch_size else []
        out = self._run_pending()        # they belong to the old reference
        self._new_reference = False
        torch = self._torch
        t0 = time.perf_counter()
        with torch.inference_mode():
            pixels = self.runner.preprocess([frame.image])
            tokens, pooled, share = self.full_pass(pixels, thumb)
            out.append(self._features(frame, tokens[0], pooled[0], share, change, cut))
        self._encode_seconds += time.perf_counter() - t0
        return out

    def flush(self) -> list[FrameFeatures]:
        return self._run_pending()

    def reset(self) -> None:
        """Drop the reference frame; the next frame gets a full pass (pending frames keep
        theirs: they are run first)."""
        self._prev_thumb = None
        self._new_reference = True
