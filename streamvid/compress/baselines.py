"""Content-blind token reducers at the same token count as the novelty pruner.

They answer the question "does choosing *which* tokens to keep matter?": each keeps
``keep_ratio`` of the visual tokens, like :class:`~.pruner.SpatioTemporalPruner`, but
without looking at what the tokens show.

* :class:`UniformFramePruner` (``compress.method: uniform_frames``): every token of one
  frame in ``1 / keep_ratio`` (frames 0, k, 2k, ... for ``keep_ratio = 1/k``), none of the
  others. The dropped frames still come out, with no tokens, so clips keep their times.
* :class:`AvgPoolPruner` (``compress.method: avg_pool``): every frame's token grid averaged
  down to ``keep_ratio`` of its tokens (a 10x10 grid to 10 cells of about 3x3 tokens at
  10 %). The grid is cut into horizontal bands of near-equal height and each band into
  near-equal cells, so a frame gets exactly its share; the budget over every
  ``budget_window`` frames is the pruner's (``round(keep_ratio * tokens)``, at least
  ``min_tokens`` per frame). A kept token is its cell's mean, its position the grid token
  at the cell's centre, its weight the number of tokens in the cell.

Kept tokens come in grid order (neither ranks its tokens), and both report a frame's
novelty as the pruner does (mean temporal novelty), so clips and consolidation see the same
values whichever method ran.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import CompressConfig
from ..types import CompressedFrame, FrameFeatures
from .pruner import _WindowedPruner, allocate_budgets

__all__ = ["AvgPoolPruner", "UniformFramePruner", "pool_cells"]


def pool_cells(grid: tuple[int, int], k: int) -> list[np.ndarray]:
    """Split a ``rows x cols`` token grid into ``k`` rectangular cells of near-equal size.

    Returns one array of row-major token indices per cell, top-left first. The grid is cut
    into ``round(sqrt(k * rows / cols))`` bands (so cells are close to square) and each band
    into ``k / bands`` cells (when that does not divide, the last bands get one more).
    ``k`` is clipped to ``[0, rows * cols]``.
    """
    rows, cols = int(grid[0]), int(grid[1])
    k = int(min(max(k, 0), rows * cols))
    if k == 0:
        return []
    bands = int(np.clip(round(math.sqrt(k * rows / cols)), 1, min(rows, k)))
    # a band can hold at most `cols` cells: use more bands when k does not fit
    bands = max(bands, math.ceil(k / cols))
    row_edges = np.linspace(0, rows, bands + 1).round().astype(int)
    per_band = [k // bands + (1 if b >= bands - k % bands else 0) for b in range(bands)]
    cells = []
    idx = np.arange(rows * cols).reshape(rows, cols)
    for b in range(bands):
        r0, r1 = row_edges[b], row_edges[b + 1]
        col_edges = np.linspace(0, cols, per_band[b] + 1).round().astype(int)
        for c in range(per_band[b]):
            cells.append(idx[r0:r1, col_edges[c]:col_edges[c + 1]].reshape(-1))
    return cells


def _centre(cell: np.ndarray, cols: int) -> int:
    """The grid index nearest the centre of a rectangular cell."""
    r, c = np.divmod(cell, cols)
    rc, cc = (r.min() + r.max()) / 2.0, (c.min() + c.max()) / 2.0
    d = (r - rc) ** 2 + (c - cc) ** 2
    return int(cell[int(np.argmin(d))])  # first minimum: deterministic


class UniformFramePruner(_WindowedPruner):
    """Keeps every token of every ``1 / keep_ratio``-th frame and no token of the others.

    Frame ``i`` (counting from 0 per pruner) is kept when ``ceil(keep_ratio * (i + 1))``
    exceeds the number of frames kept so far, so the kept frames are exactly
    ``ceil(keep_ratio * frames)`` and evenly spaced, the first frame among them. Keyframe
    flags and shot boundaries are passed on but do not change the choice. Frames come back
    at once (no latency).
    """

    def __init__(self, config: CompressConfig | None = None):
        super().__init__(config)
        self._seen = 0
        self._kept_frames = 0

    def push(self, features: FrameFeatures, *, is_keyframe: bool = False,
             is_shot_boundary: bool = False) -> list[CompressedFrame]:
        """Decide one frame; return it (with all its tokens or none)."""
        _, novelty = self._score(features, is_shot_boundary)
        self._seen += 1
        keep = math.ceil(self.config.keep_ratio * self._seen - 1e-9) > self._kept_frames
        x = features.tokens
        if keep:
            self._kept_frames += 1
            tokens = x.astype(np.float32, copy=True)
            positions = np.arange(x.shape[0], dtype=np.int32)
        else:
            tokens = np.zeros((0, x.shape[1]), np.float32)
            positions = np.zeros(0, np.int32)
        cf = CompressedFrame(features=features, tokens=tokens, positions=positions,
                             weights=np.ones(len(positions), np.float32), is_keyframe=bool(is_keyframe),
                             is_shot_boundary=bool(is_shot_boundary), novelty=novelty)
        return self._count([cf])

    def flush(self) -> list[CompressedFrame]:
        """Nothing is held back: always empty."""
        return []


class AvgPoolPruner(_WindowedPruner):
    """Average-pools every frame's token grid down to its share of ``keep_ratio``.

    Frames are returned in order once ``budget_window`` of them are pending (``flush``
    returns the rest); the window's tokens are split evenly over its frames, so the budget
    is the novelty pruner's at the same ``keep_ratio``.
    """

    def __init__(self, config: CompressConfig | None = None):
        super().__init__(config)
        self._cells: dict[tuple[tuple[int, int], int], list[np.ndarray]] = {}

    def push(self, features: FrameFeatures, *, is_keyframe: bool = False,
             is_shot_boundary: bool = False) -> list[CompressedFrame]:
        """Add a frame; return the frames whose budget window is complete."""
        _, novelty = self._score(features, is_shot_boundary)
        return self._hold((features, bool(is_keyframe), bool(is_shot_boundary), novelty))

    def _release(self) -> list[CompressedFrame]:
        cfg = self.config
        pend, self._pending = self._pending, []
        budgets = allocate_budgets([p[0].tokens.shape[0] for p in pend], [1.0] * len(pend),
                                   cfg.keep_ratio, cfg.keyframe_boost, cfg.min_tokens)
        return self._count([self._pool(p, b) for p, b in zip(pend, budgets)])

    def _pool(self, p: tuple[FrameFeatures, bool, bool, float], k: int) -> CompressedFrame:
        features, is_kf, is_sb, novelty = p
        grid = (int(features.grid[0]), int(features.grid[1]))
        key = (grid, k)
        if key not in self._cells:
            self._cells[key] = pool_cells(grid, k)
        cells = self._cells[key]
        x = features.tokens
        if cells:
            tokens = np.stack([x[c].astype(np.float64).mean(axis=0) for c in cells]).astype(np.float32)
        else:
            tokens = np.zeros((0, x.shape[1]), np.float32)
        positions = np.array([_centre(c, grid[1]) for c in cells], np.int32)
        weights = np.array([len(c) for c in cells], np.float32)
        return CompressedFrame(features=features, tokens=tokens, positions=positions, weights=weights,
                               is_keyframe=is_kf, is_shot_boundary=is_sb, novelty=novelty)
