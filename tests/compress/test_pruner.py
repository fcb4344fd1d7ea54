"""Token pruner: budgets, what it keeps on real footage, merging, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamvid.compress import allocate_budgets, create_pruner, token_novelty
from streamvid.config import CompressConfig
from streamvid.errors import ValidationError
from streamvid.types import FrameFeatures


def _features(tokens: np.ndarray, grid: tuple[int, int], pts: float, **kw) -> FrameFeatures:
    return FrameFeatures(pts=pts, index=int(pts), tokens=tokens.astype(np.float32),
                         pooled=tokens.mean(0).astype(np.float32), grid=grid, **kw)


def _run(pruner, feats, keyframes=(), boundaries=()):
    out = []
    for i, f in enumerate(feats):
        out += pruner.push(f, is_keyframe=i in keyframes, is_shot_boundary=i in boundaries)
    return out + pruner.flush()


@pytest.mark.parametrize("keep_ratio,grid,dim", [(0.25, (10, 10), 1280), (0.1, (24, 24), 64),
                                                 (0.05, (7, 7), 32)])
def test_budget_per_frame_and_per_window(keep_ratio, grid, dim):
    rng = np.random.default_rng(0)
    n = grid[0] * grid[1]
    cfg = CompressConfig(keep_ratio=keep_ratio, keyframe_boost=2.0, budget_window=5, min_tokens=2)
    feats = [_features(rng.normal(size=(n, dim)) + (i // 6), grid, float(i)) for i in range(23)]
    keyframes = {0, 6, 7, 12, 18}
    out = _run(create_pruner(cfg), feats, keyframes=keyframes, boundaries={6, 12, 18})
    assert [c.pts for c in out] == [f.pts for f in feats]
    counts = [c.tokens.shape[0] for c in out]
    cap = min(n, math.ceil(2.0 * keep_ratio * n))
    floor = min(2, n)
    assert all(floor <= k <= cap for k in counts), counts
    for start in range(0, len(out), 5):  # every budget window, the last one short
        win = counts[start:start + 5]
        assert sum(win) <= max(round(keep_ratio * n * len(win)), floor * len(win)), (start, win)
    kf = np.mean([counts[i] for i in keyframes])
    other = np.mean([c for i, c in enumerate(counts) if i not in keyframes])
    assert kf > (1.5 if keep_ratio * n >= 5 else 1.2) * other, (kf, other)


def test_allocation_is_exact_and_respects_floor_and_cap():
    b = allocate_budgets([100] * 4, [2.0, 1.0, 1.0, 1.0], 0.25, 2.0, 2)
    assert sum(b) == 100 and b[0] == 40 and b[1] == b[2] == b[3] == 20
    b = allocate_budgets([100] * 4, [100.0, 1.0, 1.0, 1.0], 0.25, 2.0, 2)
    assert b[0] == 50 and sum(b) == 100  # capped at boost x share, the rest spread
    assert allocate_budgets([10] * 3, [1.0, 1.0, 1.0], 0.0, 2.0, 2) == [2, 2, 2]  # floor wins


def test_keeps_moving_people_over_static_ground(lite, vtest_frames, vtest_features):
    """Tokens over cells whose pixels changed since the last frame are kept far more often."""
    from streamvid.encoders.lite import letterbox

    gh, gw = vtest_features[0].grid
    size = gh * 32
    boxes = [letterbox(im, size).astype(np.float32).mean(axis=2) for _, im in vtest_frames]
    out = _run(create_pruner(CompressConfig(keep_ratio=0.2, budget_window=10)), vtest_features)
    moving_kept, static_kept = [], []
    for i in range(1, len(out)):
        diff = np.abs(boxes[i] - boxes[i - 1]).reshape(gh, 32, gw, 32).mean(axis=(1, 3)).ravel()
        kept = np.zeros(gh * gw, bool)
        kept[out[i].positions] = True
        moving = diff > 12.0          # a person walked through the cell
        static = diff < 2.0           # pavement, lawn, letterbox padding
        assert moving.any() and static.any()
        moving_kept.append(kept[moving].mean())
        static_kept.append(kept[static].mean())
    assert np.mean(moving_kept) > 3 * np.mean(static_kept), (moving_kept, static_kept)
    assert np.mean(moving_kept) > 0.4


def test_deterministic_and_stable_ties():
    rng = np.random.default_rng(1)
    feats = [_features(rng.normal(size=(49, 16)), (7, 7), float(i)) for i in range(9)]
    a = _run(create_pruner(CompressConfig(budget_window=4)), feats, keyframes={0, 5})
    b = _run(create_pruner(CompressConfig(budget_window=4)), feats, keyframes={0, 5})
    for x, y in zip(a, b):
        assert np.array_equal(x.positions, y.positions) and np.array_equal(x.tokens, y.tokens)
    flat = _features(np.ones((16, 4)), (4, 4), 0.0)  # every token scores the same
    (c,) = _run(create_pruner(CompressConfig(keep_ratio=0.25, merge_dropped=False, budget_window=1)), [flat])
    assert c.positions.tolist() == [0, 1, 2, 3]


def test_merging_folds_dropped_tokens_into_the_nearest_kept_one():
    # two clusters: a big dull background and one outstanding token
    tokens = np.zeros((9, 3), np.float32)
    tokens[:, 0] = 1.0
    tokens[:, 1] = np.linspace(0, 0.1, 9)
    tokens[4] = [0.0, 0.0, 1.0]
    cfg = CompressConfig(keep_ratio=2 / 9, keyframe_boost=1.0, budget_window=1, min_tokens=0)
    (c,) = _run(create_pruner(cfg), [_features(tokens, (3, 3), 0.0)])
    assert c.tokens.shape[0] == 2 and 4 in c.positions.tolist()
    assert float(c.weights.sum()) == 9.0
    i_out = c.positions.tolist().index(4)
    assert c.weights[i_out] == 1.0 and np.allclose(c.tokens[i_out], tokens[4])
    other = 1 - i_out
    assert c.weights[other] == 8.0
    assert np.allclose(c.tokens[other], np.delete(tokens, 4, axis=0).mean(0), atol=1e-6)
    (u,) = _run(create_pruner(CompressConfig(keep_ratio=2 / 9, keyframe_boost=1.0, budget_window=1,
                                             merge_dropped=False, min_tokens=0)),
                [_features(tokens, (3, 3), 0.0)])
    assert np.array_equal(u.weights, np.ones(2, np.float32))
    assert np.allclose(u.tokens, tokens[u.positions])


def test_temporal_anchor_resets_at_shot_boundaries(vtest_features):
    out = _run(create_pruner(CompressConfig(budget_window=2)), vtest_features[:6], boundaries={3})
    nov = [c.novelty for c in out]
    assert nov[0] == 1.0 and nov[3] == 1.0
    assert all(v < 0.5 for i, v in enumerate(nov) if i not in (0, 3)), nov


def test_static_tokens_have_no_temporal_novelty():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    _, temporal = token_novelty(x, x.copy(), spatial_weight=0.0)
    assert np.allclose(temporal, 0.0, atol=1e-6)
    y = x.copy()
    y[7] = -y[7]  # one region changed completely
    combined, temporal = token_novelty(y, x, spatial_weight=0.3)
    assert temporal[7] == pytest.approx(2.0) and int(np.argmax(combined)) == 7


def test_out_of_order_frames_are_refused():
    p = create_pruner(CompressConfig())
    p.push(_features(np.ones((4, 2)), (2, 2), 5.0))
    with pytest.raises(ValidationError, match="presentation order"):
        p.push(_features(np.ones((4, 2)), (2, 2), 4.0))
