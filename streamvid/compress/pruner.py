"""Spatio-temporal token pruning with varying per-frame budgets.

Each token is scored by how new it is against two anchors:

* spatial: the frame's own mean token (tokens that stand out from the rest of the picture);
* temporal: the mean of the last ``temporal_window`` frames' tokens at the same grid
  position (regions that changed since the recent past).

The frame's share of the token budget varies: keyframes get ``keyframe_boost`` times the
average share, frames that changed more get more than frames that repeat the last ones, and
the total over every ``budget_window`` frames stays at ``keep_ratio`` of the tokens. Dropped
tokens can be folded into their most similar kept token (a weighted average), so a kept
token's ``weight`` says how many original tokens it stands for.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..config import CompressConfig
from ..errors import ValidationError
from ..types import CompressedFrame, FrameFeatures, TokenPruner

log = logging.getLogger(__name__)

_EPS = 1e-8


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, _EPS)


@dataclass
class _Scored:
    features: FrameFeatures
    scores: np.ndarray       # [N] combined novelty per token
    order: np.ndarray        # [N] token indices, most novel first (stable)
    novelty: float           # frame novelty in [0, 1]: mean temporal novelty
    is_keyframe: bool
    is_shot_boundary: bool


def token_novelty(tokens: np.ndarray, anchor: np.ndarray | None,
                  spatial_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-token novelty of ``tokens`` [N, D].

    Returns ``(combined, temporal)``: ``temporal`` is ``1 - cos`` against ``anchor`` [N, D]
    at the same position (all ones when there is no anchor: the first frame of a shot);
    ``combined`` mixes the spatial part (``1 - cos`` against the frame's mean token) and the
    temporal part, each divided by its mean over the frame, ``spatial_weight`` to the first.
    """
    xn = _unit(tokens.astype(np.float32, copy=False))
    mean = _unit(tokens.mean(axis=0, keepdims=True))
    spatial = np.clip(1.0 - xn @ mean[0], 0.0, 2.0)
    if anchor is None:
        temporal = np.ones(tokens.shape[0], dtype=np.float32)
    else:
        temporal = np.clip(1.0 - np.einsum("nd,nd->n", xn, _unit(anchor)), 0.0, 2.0)
    # each part relative to its own frame mean, so that the weight means what it says whatever
    # the encoder's scale (temporal novelty is small on static footage, spatial rarely is)
    combined = (spatial_weight * spatial / max(float(spatial.mean()), _EPS)
                + (1.0 - spatial_weight) * temporal / max(float(temporal.mean()), _EPS))
    return combined.astype(np.float32), temporal.astype(np.float32)


def allocate_budgets(n_tokens: list[int], weights: list[float], keep_ratio: float,
                     boost: float, min_tokens: int) -> list[int]:
    """Split ``round(keep_ratio * sum(n_tokens))`` tokens over frames in proportion to
    ``weights``.

    Each frame gets at most ``ceil(boost * keep_ratio * N)`` (and at most N) and at least
    ``min(min_tokens, N)``; the floor wins over the total when the two conflict.
    """
    n = len(n_tokens)
    total = int(round(keep_ratio * sum(n_tokens)))
    caps = np.array([min(nt, math.ceil(boost * keep_ratio * nt - 1e-9)) for nt in n_tokens], float)
    floors = np.array([min(min_tokens, nt) for nt in n_tokens], float)
    caps = np.maximum(caps, floors)
    w = np.maximum(np.asarray(weights, float), _EPS)
    if floors.sum() >= total:
        alloc = floors.copy()
    elif caps.sum() <= total:
        alloc = caps.copy()
    else:
        # each frame gets clip(lam * w, floor, cap); find lam so that the shares add up to total
        lo, hi = 0.0, float(caps.max() / w.min()) + 1.0
        for _ in range(100):
            lam = (lo + hi) / 2
            if np.clip(lam * w, floors, caps).sum() < total:
                lo = lam
            else:
                hi = lam
        alloc = np.clip(hi * w, floors, caps)
    out = np.floor(alloc + 1e-9).astype(int)
    left = max(0, total - int(out.sum()))
    frac = alloc - out
    # largest remainder first; ties go to the earlier frame
    for j in sorted(range(n), key=lambda j: (-frac[j], j)):
        if left <= 0:
            break
        if out[j] < caps[j]:
            out[j] += 1
            left -= 1
    return [int(v) for v in out]


class _WindowedPruner(TokenPruner):
    """What every token reducer here shares: the order check, the temporal anchor behind
    a frame's novelty, the ``budget_window`` of pending frames, and the counters.

    Subclasses append what they need of a frame with :meth:`_hold` and implement
    ``_release`` (compress every pending frame, through :meth:`_count`).
    """

    def __init__(self, config: CompressConfig | None = None):
        self.config = config or CompressConfig()
        self._pending: list = []
        self._history: deque[np.ndarray] = deque(maxlen=self.config.temporal_window)
        self._grid: tuple[int, int] | None = None
        self._last_pts: float | None = None
        self.frames = 0
        self.tokens_in = 0
        self.tokens_kept = 0

    def _score(self, features: FrameFeatures, is_shot_boundary: bool) -> tuple[np.ndarray, float]:
        """Check the order, update the anchor; the tokens' novelty scores and the frame's
        novelty in [0, 1] (mean temporal novelty)."""
        if self._last_pts is not None and features.pts < self._last_pts:
            raise ValidationError(
                f"TokenPruner.push: expected frames in presentation order, got pts {features.pts} "
                f"after {self._last_pts}; fix: push each stream's frames in order (one pruner per stream)")
        self._last_pts = features.pts
        if is_shot_boundary or features.cut or self._grid != tuple(features.grid):
            self._history.clear()
            self._grid = tuple(features.grid)
        anchor = np.mean(np.stack(self._history), axis=0) if self._history else None
        scores, temporal = token_novelty(features.tokens, anchor, self.config.spatial_weight)
        self._history.append(features.tokens)
        return scores, float(np.clip(temporal.mean(), 0, 1))

    def _hold(self, item) -> list[CompressedFrame]:
        """Queue a frame; release the window once ``budget_window`` frames are pending."""
        self._pending.append(item)
        if len(self._pending) >= self.config.budget_window:
            return self._release()
        return []

    def _release(self) -> list[CompressedFrame]:
        raise NotImplementedError

    def flush(self) -> list[CompressedFrame]:
        """Return every pending frame (the last, possibly short, budget window)."""
        return self._release() if self._pending else []

    def _count(self, out: list[CompressedFrame]) -> list[CompressedFrame]:
        for c in out:
            self.frames += 1
            self.tokens_in += c.features.tokens.shape[0]
            self.tokens_kept += c.tokens.shape[0]
        return out

    @property
    def stats(self) -> dict[str, float]:
        """Frames seen, tokens in and kept, and the kept fraction so far."""
        return {"frames": self.frames, "tokens_in": self.tokens_in, "tokens_kept": self.tokens_kept,
                "kept_fraction": self.tokens_kept / self.tokens_in if self.tokens_in else 0.0}


class SpatioTemporalPruner(_WindowedPruner):
    """Keeps the most novel tokens of each frame under a varying, window-averaged budget.

    Frames are returned in order once ``budget_window`` of them are pending (``flush`` returns
    the rest). Kept tokens come most novel first; ``positions`` say where each came from.
    """

    # ------------------------------------------------------------------ streaming
    def push(self, features: FrameFeatures, *, is_keyframe: bool = False,
             is_shot_boundary: bool = False) -> list[CompressedFrame]:
        """Score a frame; return the frames whose budget window is complete."""
        scores, novelty = self._score(features, is_shot_boundary)
        # stable: equal scores keep grid order
        order = np.argsort(-scores, kind="stable")
        return self._hold(_Scored(features, scores, order, novelty, bool(is_keyframe),
                                  bool(is_shot_boundary)))

    # ------------------------------------------------------------------ internals
    def _release(self) -> list[CompressedFrame]:
        cfg = self.config
        pend, self._pending = self._pending, []
        novs = np.array([p.novelty for p in pend], float)
        mean_nov = float(novs.mean()) if len(novs) else 0.0
        weights = []
        for p in pend:
            rel = p.novelty / mean_nov if mean_nov > _EPS else 1.0
            w = math.sqrt(min(max(rel, 0.25), 4.0))
            if p.is_keyframe:
                w *= cfg.keyframe_boost
            weights.append(w)
        budgets = allocate_budgets([p.features.tokens.shape[0] for p in pend], weights,
                                   cfg.keep_ratio, cfg.keyframe_boost, cfg.min_tokens)
        return self._count([self._compress(p, b) for p, b in zip(pend, budgets)])

    def _compress(self, p: _Scored, budget: int) -> CompressedFrame:
        x = p.features.tokens
        keep = p.order[:budget]
        tokens = x[keep].astype(np.float32, copy=True)
        weights = np.ones(len(keep), np.float32)
        if self.config.merge_dropped and 0 < len(keep) < x.shape[0]:
            drop = p.order[budget:]
            sims = _unit(x[drop]) @ _unit(x[keep]).T
            nearest = np.argmax(sims, axis=1)  # first maximum: deterministic
            sums = tokens.astype(np.float64)
            np.add.at(sums, nearest, x[drop].astype(np.float64))
            counts = np.ones(len(keep), np.float64)
            np.add.at(counts, nearest, 1.0)
            tokens = (sums / counts[:, None]).astype(np.float32)
            weights = counts.astype(np.float32)
        return CompressedFrame(features=p.features, tokens=tokens,
                               positions=keep.astype(np.int32), weights=weights,
                               is_keyframe=p.is_keyframe, is_shot_boundary=p.is_shot_boundary,
                               novelty=p.novelty)
