"""Baseline token reducers: same budget as the novelty pruner, what they keep, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from streamvid.compress import (AvgPoolPruner, SpatioTemporalPruner, UniformFramePruner,
                                create_pruner, pool_cells)
from streamvid.config import CompressConfig
from streamvid.errors import ConfigError, ValidationError
from streamvid.types import FrameFeatures


def _run(pruner, feats, keyframes=(), boundaries=()):
    out = []
    for i, f in enumerate(feats):
        out += pruner.push(f, is_keyframe=i in keyframes, is_shot_boundary=i in boundaries)
    return out + pruner.flush()


def _looped(features: list[FrameFeatures], n: int) -> list[FrameFeatures]:
    """``n`` frames, 1 s apart, cycling through real encoded frames."""
    return [FrameFeatures(pts=float(i), index=i, tokens=features[i % len(features)].tokens,
                          pooled=features[i % len(features)].pooled, grid=features[0].grid)
            for i in range(n)]


def test_create_pruner_dispatches_on_method():
    assert isinstance(create_pruner(CompressConfig()), SpatioTemporalPruner)
    assert isinstance(create_pruner(CompressConfig(method="uniform_frames")), UniformFramePruner)
    assert isinstance(create_pruner(CompressConfig(method="avg_pool")), AvgPoolPruner)
    with pytest.raises(ConfigError, match="uniform_frames"):
        CompressConfig(method="uniform")


@pytest.mark.parametrize("keep_ratio", [1.0, 0.5, 0.25, 0.1, 0.05])
def test_same_token_count_as_the_pruner(vtest_features, keep_ratio):
    """Over 40 real frames (a multiple of every 1/keep_ratio and of the budget window) the
    three methods keep exactly as many tokens; avg_pool even per budget window."""
    feats = _looped(vtest_features, 40)
    kf, sb = {0, 9, 17, 30}, {17}
    counts = {}
    for method in ("novelty", "uniform_frames", "avg_pool"):
        cfg = CompressConfig(method=method, keep_ratio=keep_ratio, budget_window=8, min_tokens=2)
        out = _run(create_pruner(cfg), feats, kf, sb)
        assert [c.pts for c in out] == [f.pts for f in feats]
        assert [c.is_keyframe for c in out] == [i in kf for i in range(40)]
        assert [c.is_shot_boundary for c in out] == [i in sb for i in range(40)]
        counts[method] = [c.tokens.shape[0] for c in out]
        # every kept token stands for the original tokens it represents, all of them once
        if method != "uniform_frames":
            assert all(int(c.weights.sum()) == 100 for c in out if c.tokens.shape[0])
    n = 100  # lite grid 10x10
    assert sum(counts["novelty"]) == sum(counts["uniform_frames"]) == sum(counts["avg_pool"]) \
        == round(keep_ratio * n * 40)
    for w in range(0, 40, 8):
        assert sum(counts["avg_pool"][w:w + 8]) == sum(counts["novelty"][w:w + 8])
    # uniform frames: all of a frame or nothing, evenly spaced, the first frame kept
    k = round(1 / keep_ratio)
    assert counts["uniform_frames"] == [n if i % k == 0 else 0 for i in range(40)]
    # avg pool: the same share for every frame (content-blind)
    assert len(set(counts["avg_pool"])) == 1


def test_uniform_frames_keeps_whole_frames_unchanged(vtest_features):
    out = _run(UniformFramePruner(CompressConfig(keep_ratio=0.25)), vtest_features)
    kept = [c for c in out if c.tokens.shape[0]]
    assert [c.pts for c in kept] == [0.0, 4.0, 8.0]
    for c in kept:
        np.testing.assert_array_equal(c.tokens, c.features.tokens)
        np.testing.assert_array_equal(c.positions, np.arange(100))
        np.testing.assert_array_equal(c.weights, np.ones(100, np.float32))


def test_avg_pool_cells_positions_and_means(vtest_features):
    cells = pool_cells((10, 10), 10)
    assert len(cells) == 10
    # a partition of the grid into rectangles of 6 to 16 tokens (about 3x3)
    allidx = np.sort(np.concatenate(cells))
    np.testing.assert_array_equal(allidx, np.arange(100))
    assert all(6 <= len(c) <= 16 for c in cells)
    for c in cells:
        r, col = np.divmod(c, 10)
        assert len(c) == (r.max() - r.min() + 1) * (col.max() - col.min() + 1)
    assert [len(c) for c in pool_cells((10, 10), 25)] == [4] * 25
    assert len(pool_cells((3, 17), 40)) == 40 and pool_cells((4, 4), 0) == []

    cfg = CompressConfig(method="avg_pool", keep_ratio=0.1, budget_window=4)
    out = _run(create_pruner(cfg), vtest_features)
    f = out[3]
    assert f.tokens.shape == (10, f.features.tokens.shape[1])
    for tok, pos, w, cell in zip(f.tokens, f.positions, f.weights, cells):
        np.testing.assert_allclose(tok, f.features.tokens[cell].mean(axis=0), rtol=1e-5, atol=1e-6)
        assert pos in cell and w == len(cell)
        r, col = divmod(int(pos), 10)
        rr, cc = np.divmod(cell, 10)
        assert abs(r - (rr.min() + rr.max()) / 2) <= 0.5 and abs(col - (cc.min() + cc.max()) / 2) <= 0.5
    # the weighted mean of the pooled tokens is the frame's mean token
    np.testing.assert_allclose((f.tokens * f.weights[:, None]).sum(0) / 100,
                               f.features.tokens.mean(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["uniform_frames", "avg_pool"])
def test_deterministic_and_streaming(vtest_features, method):
    cfg = CompressConfig(method=method, keep_ratio=0.1, budget_window=3)
    a = _run(create_pruner(cfg), vtest_features, keyframes={0, 5})
    b = _run(create_pruner(cfg), vtest_features, keyframes={0, 5})
    assert len(a) == len(b) == len(vtest_features)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.tokens, y.tokens)
        np.testing.assert_array_equal(x.positions, y.positions)
        np.testing.assert_array_equal(x.weights, y.weights)
        assert x.novelty == y.novelty
    p = create_pruner(cfg)
    early = [len(p.push(f)) for f in vtest_features[:3]]
    # uniform frames returns each frame at once; avg pool after each budget window
    assert early == ([1, 1, 1] if method == "uniform_frames" else [0, 0, 3])
    assert p.stats["frames"] == 3
    with pytest.raises(ValidationError, match="presentation order"):
        p.push(vtest_features[1])


def test_novelty_reported_like_the_pruner(vtest_features):
    """Frame novelty (mean temporal novelty) is the same value whichever method ran."""
    ref = _run(create_pruner(CompressConfig()), vtest_features)
    for method in ("uniform_frames", "avg_pool"):
        out = _run(create_pruner(CompressConfig(method=method)), vtest_features)
        np.testing.assert_allclose([c.novelty for c in out], [c.novelty for c in ref], rtol=1e-6)
