"""Feature caches: reuse the encoder's work on frames that barely changed.

Two modes (``CacheConfig.mode``):

``frame`` (any encoder)
    A cheap change test on a small colour thumbnail (``thumb_size`` squared) compares each
    frame with the last *encoded* frame; below ``threshold`` the frame reuses that frame's
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

__all__ = ["FrameCache", "NoCache", "create_cache", "thumbnail", "change_score"]


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """A ``[size, size, 3]`` float32 thumbnail in ``[0, 1]`` (area-averaged)."""
    import cv2

    small = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) * (1.0 / 255.0)


def change_score(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails, in ``[0, 1]``; 0 = identical."""
    return float(np.mean(np.abs(a - b)))


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
            reuse = change_score(thumb, self._ref_thumb) < cfg.threshold  # type: ignore[arg-type]
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
    and per-layer keys and values."""

    def __init__(self, thumb: np.ndarray) -> None:
        self.thumb = thumb
        self.h: list[Any] = []
        self.k: list[Any] = []
        self.v: list[Any] = []
        self.age = 0


class TokenCache(_StatsMixin, FeatureCache):
    """Token-level selective recompute inside the transformer blocks of an ``hf`` encoder.

    A reference frame gets a full pass that keeps, per block, its input hidden states, keys
    and values. A later frame computes its patch embedding, then in every block picks the
    tokens whose block input moved most from the reference's (plus the CLS/register
    tokens), recomputes queries, keys, values, attention and MLP for those only — they
    attend to all tokens, with fresh keys/values for the recomputed ones and the
    reference's for the rest — and copies the reference's block output for the others.
    With ratio 1 this is the plain forward.

    Which frames are references: the first, a scene cut (change against the previous frame
    ``>= cut_threshold``), a jump (change against the reference ``>= refresh_threshold``),
    and every frame after ``max_age`` partial ones. The ratio per frame is
    ``recompute_ratio`` or, with ``adaptive``, ``recompute_ratio * clip(change_to_reference /
    threshold, 0.25, 4)`` capped at 1. Frames are processed one at a time (each depends on
    the current reference), so ``push`` returns every frame's features at once.
    """

    def __init__(self, encoder: VisionEncoder, config: CacheConfig | None = None, *,
                 batch_size: int = 16):
        if not hasattr(type(encoder), "token_runner"):
            raise ConfigError(f"token cache: encoder {encoder.name!r} has no token runner; "
                              "fix: set cache.mode: frame")
        import torch

        runner = encoder.token_runner  # type: ignore[attr-defined]

        self._torch = torch
        self.encoder = encoder
        self.runner = runner
        self.config = config or CacheConfig(mode="token")
        self.batch_size = batch_size
        self._ref: _Reference | None = None
        self._prev_thumb: np.ndarray | None = None
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
            q, k, v = blk.qkv(h)
            ref.k.append(k)
            ref.v.append(v)
            h = blk.finish(h, q, k, v)
        ref.h.append(h)
        self._ref = ref
        tokens, pooled = self.runner.finalize(h)
        return tokens, pooled, 1.0

    def partial_pass(self, pixels, ratio: float):
        """Selective recompute against the current reference; returns the recomputed share."""
        torch = self._torch
        ref = self._ref
        assert ref is not None
        p = self.runner.n_prefix
        h = self.runner.embed(pixels)
        t = h.shape[1]
        n_patch = t - p
        k_count = p + min(n_patch, max(1, int(np.ceil(ratio * n_patch))))
        done = 0
        for layer, blk in enumerate(self.runner.blocks):
            ref_in = ref.h[layer]
            delta = (h[0] - ref_in[0]).float().norm(dim=-1)
            if p:
                delta[:p] = float("inf")
            idx = torch.topk(delta, k_count, sorted=False).indices.sort().values
            h_sel = h[:, idx]
            q, k, v = blk.qkv(h_sel)
            keys = ref.k[layer].clone()
            vals = ref.v[layer].clone()
            keys[:, :, idx] = k
            vals[:, :, idx] = v
            out_sel = blk.finish(h_sel, q, keys, vals)
            if self.trace is not None:
                mixed = ref_in.clone()
                mixed[:, idx] = h_sel
                self.trace.append({"layer": layer, "idx": idx, "input": mixed, "output": out_sel})
            h = ref.h[layer + 1].clone()
            h[:, idx] = out_sel
            done += k_count
        tokens, pooled = self.runner.finalize(h)
        return tokens, pooled, done / (t * len(self.runner.blocks))

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
        full = (ref is None or cut or change_ref >= cfg.refresh_threshold
                or ref.age >= cfg.max_age)
        ratio = 1.0
        if not full:
            ratio = adaptive_ratio(cfg.recompute_ratio, change_ref, cfg.threshold) \
                if cfg.adaptive else cfg.recompute_ratio
        torch = self._torch
        t0 = time.perf_counter()
        with torch.inference_mode():
            pixels = self.runner.preprocess([frame.image])
            if full:
                tokens, pooled, share = self.full_pass(pixels, thumb)
            else:
                tokens, pooled, share = self.partial_pass(pixels, ratio)
                ref.age += 1  # type: ignore[union-attr]
                self._partial += 1
            tok = tokens[0].float().numpy().copy()
            pool = pooled[0].float().numpy().copy()
        self._encode_seconds += time.perf_counter() - t0
        n = tok.shape[0]
        self._frames += 1
        self._tokens_total += n
        self._tokens_recomputed += share * n
        return [FrameFeatures(pts=frame.pts, index=frame.index, tokens=tok, pooled=pool,
                              grid=tuple(self.encoder.grid), reused=False,
                              tokens_recomputed=float(min(1.0, share)), change=change, cut=cut,
                              source_id=frame.source_id)]

    def flush(self) -> list[FrameFeatures]:
        return []

    def reset(self) -> None:
        """Drop the reference frame; the next frame gets a full pass."""
        self._ref = None
        self._prev_thumb = None
