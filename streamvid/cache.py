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
        runner = getattr(encoder, "token_runner", None)
        if runner is None:
            raise ConfigError(
                f"config cache.mode=token needs a transformer vision encoder (hf with a CLIP, "
                f"SigLIP, ViT or DINOv2 model); encoder {encoder.name!r} ({encoder.model_id}) "
                "cannot recompute single tokens; fix: set cache.mode: frame, or encoder.name: hf")
        return TokenCache(encoder, config, batch_size=batch_size)
    raise ConfigError(f"config cache.mode: expected frame or token, got {config.mode!r}")
