"""Frame-level feature cache: reuse decisions, ordering, batching, fidelity, errors."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

skdata = pytest.importorskip("skimage.data")

from streamvid.cache import FrameCache, change_score, create_cache, thumbnail  # noqa: E402
from streamvid.config import CacheConfig, EncoderConfig  # noqa: E402
from streamvid.errors import ConfigError, ValidationError  # noqa: E402
from streamvid.types import EncoderOutput, Frame, VisionEncoder  # noqa: E402


class CountingEncoder(VisionEncoder):
    """Tokens = a 2x2 grid of the image's mean colour per quadrant; counts calls."""

    name = "counting"
    model_id = "counting"
    dim = pooled_dim = 3
    grid = (2, 2)

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, images: Sequence[np.ndarray]) -> EncoderOutput:
        self.calls.append(len(images))
        toks = []
        for im in images:
            h, w = im.shape[0] // 2, im.shape[1] // 2
            q = [im[:h, :w], im[:h, w:], im[h:, :w], im[h:, w:]]
            toks.append([x.reshape(-1, 3).mean(0) / 255 for x in q])
        t = np.asarray(toks, np.float32).reshape(len(images), 4, 3)
        return EncoderOutput(t, t.mean(1), self.grid)


def frames_of(images, start=0):
    return [Frame(pts=0.5 * (start + i), index=start + i, image=im) for i, im in enumerate(images)]


def jitter(img, seed, amp=2):
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.int16) + rng.integers(-amp, amp + 1, img.shape), 0, 255).astype(np.uint8)


def run(cache, frames):
    out = []
    for f in frames:
        out += cache.push(f)
    return out + cache.flush()


def test_change_score_range():
    a = thumbnail(skdata.chelsea(), 32)
    b = thumbnail(skdata.coffee(), 32)
    assert a.shape == (32, 32, 3)
    assert change_score(a, a) == 0.0
    assert 0.1 < change_score(a, b) <= 1.0


def test_static_frames_are_reused_and_cuts_recomputed():
    enc = CountingEncoder()
    cache = FrameCache(enc, CacheConfig(threshold=0.02, cut_threshold=0.15, max_age=100), batch_size=1)
    cat, cup = skdata.chelsea(), skdata.coffee()[:300, :451]
    imgs = [jitter(cat, i) for i in range(5)] + [jitter(cup, i) for i in range(5)]
    out = run(cache, frames_of(imgs))
    assert [f.index for f in out] == list(range(10))
    assert [f.reused for f in out] == [False, True, True, True, True, False, True, True, True, True]
    assert [f.cut for f in out] == [False] * 5 + [True] + [False] * 4
    assert out[5].change >= 0.15 and all(f.change < 0.02 for f in out[1:5])
    assert all(f.tokens_recomputed == (0.0 if f.reused else 1.0) for f in out)
    np.testing.assert_array_equal(out[3].tokens, out[0].tokens)
    st = cache.stats
    assert st["frames"] == 10 and st["frames_reused"] == 8
    assert st["tokens_total"] == 40 and st["tokens_recomputed"] == 8
    assert sum(enc.calls) == 2


def test_max_age_bounds_a_reuse_chain():
    enc = CountingEncoder()
    cache = FrameCache(enc, CacheConfig(max_age=3), batch_size=1)
    out = run(cache, frames_of([skdata.chelsea()] * 10))
    assert [f.reused for f in out] == [False, True, True, True] * 2 + [False, True]
    cache0 = FrameCache(CountingEncoder(), CacheConfig(max_age=0), batch_size=1)
    assert not any(f.reused for f in run(cache0, frames_of([skdata.chelsea()] * 3)))


def test_drift_is_measured_against_the_last_encoded_frame():
    # each step brightens by ~0.6 % (below the threshold) but the drift adds up
    base = skdata.chelsea().astype(np.int16)
    imgs = [np.clip(base + 2 * i, 0, 255).astype(np.uint8) for i in range(12)]
    cache = FrameCache(CountingEncoder(), CacheConfig(threshold=0.02, max_age=100), batch_size=1)
    out = run(cache, frames_of(imgs))
    assert all(f.change < 0.02 for f in out[1:])
    encoded = [f.index for f in out if not f.reused]
    assert len(encoded) >= 2 and encoded[0] == 0
    ref = imgs[0]
    for f in out:
        if not f.reused:
            ref = imgs[f.index]
        assert change_score(thumbnail(imgs[f.index], 32), thumbnail(ref, 32)) < 0.02


def test_batching_keeps_frame_order_and_waits_for_the_batch():
    enc = CountingEncoder()
    cache = FrameCache(enc, CacheConfig(threshold=0.02, cut_threshold=0.1, max_age=100), batch_size=3)
    scenes = [skdata.chelsea(), skdata.coffee()[:300, :451], skdata.astronaut()[:300, :451],
              skdata.rocket()[:300, :451]]
    imgs = []
    for s in scenes:
        imgs += [s, s]              # encoded, then reused
    got_per_push = []
    for f in frames_of(imgs):
        got_per_push.append([g.index for g in cache.push(f)])
    # the first three scenes' first frames (0, 2, 4) form the batch: nothing is ready before it
    assert got_per_push[:4] == [[], [], [], []]
    assert got_per_push[4] == [0, 1, 2, 3, 4]
    assert got_per_push[5] == [5]                   # reuses frame 4, already encoded
    rest = [g.index for g in cache.flush()]
    assert got_per_push[6] == [] and rest == [6, 7]
    assert enc.calls == [3, 1]


def test_disabled_cache_encodes_everything_but_still_scores_change():
    enc = CountingEncoder()
    cache = create_cache(enc, CacheConfig(enabled=False, cut_threshold=0.15), batch_size=4)
    out = run(cache, frames_of([skdata.chelsea()] * 3 + [skdata.coffee()[:300, :451]]))
    assert not any(f.reused for f in out) and sum(enc.calls) == 4
    assert out[1].change == 0.0 and out[3].cut


def test_token_mode_with_a_cnn_is_a_config_error():
    from streamvid.encoders import create_encoder

    lite = create_encoder(EncoderConfig(name="lite", size=224))
    with pytest.raises(ConfigError, match="cache.mode=token"):
        create_cache(lite, CacheConfig(mode="token"))
    with pytest.raises(ValidationError, match="Frame"):
        create_cache(lite, CacheConfig()).push(skdata.chelsea())


def test_reused_features_stay_faithful_with_the_lite_encoder():
    """Real model: a nearly static shot reuses frames, and reused features match a fresh encode."""
    from streamvid.encoders import create_encoder

    lite = create_encoder(EncoderConfig(name="lite", size=224, batch_size=4))
    cat = skdata.chelsea()
    # a static camera with sensor noise and a small object moving in one corner
    imgs = []
    for i in range(8):
        im = jitter(cat, i, amp=3)
        im[10:40, 10 + 5 * i:40 + 5 * i] = 255
        imgs.append(im)
    cache = create_cache(lite, CacheConfig(threshold=0.03, cell_threshold=1.0, max_age=8),  # global test only
                         batch_size=4)
    out = run(cache, frames_of(imgs))
    assert sum(f.reused for f in out) >= 5
    fresh = lite.encode(imgs)
    for f in out:
        a, b = f.pooled, fresh.pooled[f.index]
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.97
        if not f.reused:
            np.testing.assert_allclose(f.tokens, fresh.tokens[f.index], atol=1e-4)


def test_a_small_new_object_is_never_reused_away():
    """A needle covering 2.5 % of the frame barely moves the global change score, but fills
    its cell of the local test: the frame is encoded, not reused."""
    import cv2
    from skimage import data as skdata

    from streamvid.cache import local_change

    base = cv2.resize(skdata.coffee(), (640, 360), interpolation=cv2.INTER_AREA)
    needle = cv2.resize(skdata.astronaut()[:200, 150:350], (96, 60), interpolation=cv2.INTER_AREA)
    with_needle = base.copy()
    with_needle[20:80, 30:126] = needle
    cfg = CacheConfig(threshold=0.015, cell_threshold=0.03, max_age=100)
    a, b = thumbnail(base, cfg.thumb_size), thumbnail(with_needle, cfg.thumb_size)
    assert change_score(a, b) < cfg.threshold      # the global test alone would reuse it
    assert local_change(a, b) >= cfg.cell_threshold
    enc = CountingEncoder()
    cache = FrameCache(enc, cfg, batch_size=1)
    out = [f for fr in frames_of([base, base, with_needle]) for f in cache.push(fr)]
    out += cache.flush()
    assert [f.reused for f in out] == [False, True, False]
    # the same frames under the global test only (cell_threshold 1.0) reuse the needle away
    cache = FrameCache(CountingEncoder(), CacheConfig(threshold=0.015, cell_threshold=1.0,
                                                      max_age=100), batch_size=1)
    out = [f for fr in frames_of([base, base, with_needle]) for f in cache.push(fr)]
    assert [f.reused for f in out + cache.flush()] == [False, True, True]
