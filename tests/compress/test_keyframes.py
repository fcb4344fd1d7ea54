"""Keyframe selector: real cuts between real videos, keyframe rules, detector choices."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamvid.compress import create_keyframe_selector
from streamvid.config import CompressConfig
from streamvid.types import FrameFeatures


def _run(sel, feats, images):
    out = []
    for f, im in zip(feats, images):
        out += sel.push(f, im)
    return out + sel.flush()


@pytest.fixture(scope="module")
def spliced(lite, vtest_frames, city_frames):
    """Ten seconds of pedestrians, then four of city towers: one real cut, at 10 s."""
    h, w = vtest_frames[0][1].shape[:2]
    images = [im for _, im in vtest_frames] + [cv2.resize(im, (w, h)) for _, im in city_frames]
    enc = lite.encode(images)
    feats = [FrameFeatures(pts=float(i), index=i, tokens=enc.tokens[i], pooled=enc.pooled[i],
                           grid=enc.grid) for i in range(len(images))]
    return feats, images


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_marks_the_real_cut_and_only_it(spliced, detector):
    feats, images = spliced
    sel = create_keyframe_selector(CompressConfig(shot_detector=detector, keyframe_interval=0))
    out = _run(sel, feats, images)
    assert [f.pts for f, _, _ in out] == [f.pts for f in feats]  # all, in order
    assert [f.pts for f, _, b in out if b] == [10.0]
    kf = [f.pts for f, k, _ in out if k]
    assert kf[0] == 0.0 and 10.0 in kf
    assert len(kf) <= 5, kf  # pedestrians walking are not new pictures every second


def test_adaptive_detector_decides_two_frames_late(spliced):
    feats, images = spliced
    sel = create_keyframe_selector(CompressConfig(shot_detector="adaptive"))
    got = [len(sel.push(f, im)) for f, im in zip(feats[:5], images[:5])]
    assert got == [0, 0, 1, 1, 1]
    assert len(sel.flush()) == 2


def test_keyframe_interval_and_change(vtest_features):
    f0 = vtest_features[0]
    same = [FrameFeatures(pts=float(t), index=t, tokens=f0.tokens, pooled=f0.pooled, grid=f0.grid)
            for t in range(12)]
    sel = create_keyframe_selector(CompressConfig(shot_detector="none", keyframe_interval=5.0))
    out = _run(sel, same, [None] * 12)
    assert [f.pts for f, k, _ in out if k] == [0.0, 5.0, 10.0]
    assert not any(b for _, _, b in out)
    # a different picture is a keyframe by change alone
    other = FrameFeatures(pts=12.0, index=12, tokens=f0.tokens, pooled=f0.pooled[::-1].copy(), grid=f0.grid)
    sel = create_keyframe_selector(CompressConfig(shot_detector="none", keyframe_interval=0.0))
    out = _run(sel, same + [other], [None] * 13)
    assert [f.pts for f, k, _ in out if k] == [0.0, 12.0]


def test_without_images_the_cache_cut_flag_marks_shots(vtest_features):
    feats = [FrameFeatures(pts=f.pts, index=f.index, tokens=f.tokens, pooled=f.pooled, grid=f.grid,
                           cut=(i == 4)) for i, f in enumerate(vtest_features)]
    out = _run(create_keyframe_selector(CompressConfig()), feats, [None] * len(feats))
    assert [f.pts for f, _, b in out if b] == [4.0]


def test_a_new_frame_size_starts_a_shot(vtest_features, vtest_frames):
    images = [im for _, im in vtest_frames[:4]]
    images[2] = cv2.resize(images[2], (200, 150))
    images[3] = cv2.resize(images[3], (200, 150))
    out = _run(create_keyframe_selector(CompressConfig()), vtest_features[:4], images)
    assert [b for _, _, b in out] == [False, False, True, False]


def test_image_must_be_rgb_uint8(vtest_features):
    from streamvid.errors import ValidationError

    sel = create_keyframe_selector(CompressConfig())
    with pytest.raises(ValidationError, match="uint8"):
        sel.push(vtest_features[0], np.zeros((8, 8, 3), np.float32))
