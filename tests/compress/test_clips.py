"""Clip builder: time tiling, lengths, token caps, merged descriptions."""

from __future__ import annotations

import numpy as np
import pytest

from streamvid.compress import create_clip_builder, create_keyframe_selector, create_pruner
from streamvid.config import ClipConfig, CompressConfig
from streamvid.errors import ConfigError, ValidationError
from streamvid.types import CompressedFrame, Description, FrameFeatures


def _frame(pts: float, pooled: np.ndarray, *, k: int = 6, keyframe: bool = False,
           boundary: bool = False, novelty: float = 0.2) -> CompressedFrame:
    d = pooled.shape[0]
    tokens = np.tile(pooled, (16, 1)).astype(np.float32)
    feats = FrameFeatures(pts=pts, index=int(pts * 10), tokens=tokens, pooled=pooled.astype(np.float32),
                          grid=(4, 4))
    return CompressedFrame(features=feats, tokens=tokens[:k] + np.arange(k, dtype=np.float32)[:, None] / d,
                           positions=np.arange(k, dtype=np.int32), weights=np.ones(k, np.float32),
                           is_keyframe=keyframe, is_shot_boundary=boundary, novelty=novelty)


def _build(cfg, frames, descs=None):
    b = create_clip_builder(cfg, source_id="cam1")
    out = []
    for i, f in enumerate(frames):
        out += b.push(f, None if descs is None else descs[i])
    return out + b.flush()


def test_real_footage_clips_tile_time_and_respect_lengths(vtest_features):
    cfg_c = CompressConfig(budget_window=4)
    sel, pr = create_keyframe_selector(cfg_c), create_pruner(cfg_c)
    frames = []
    for f in vtest_features:
        for ff, kf, sb in sel.push(f):
            frames += pr.push(ff, is_keyframe=kf, is_shot_boundary=sb)
    for ff, kf, sb in sel.flush():
        frames += pr.push(ff, is_keyframe=kf, is_shot_boundary=sb)
    frames += pr.flush()
    cfg = ClipConfig(min_length=2.0, max_length=4.0, max_tokens=40)
    clips = _build(cfg, frames)
    assert clips[0].start == 0.0 and clips[-1].end == pytest.approx(10.0)
    for a, b in zip(clips, clips[1:]):
        assert a.end == b.start
    for c in clips[:-1]:
        assert 2.0 - 1e-6 <= c.end - c.start <= 4.0 + 1e-6
    for c in clips:
        assert c.source_id == "cam1" and c.keyframes and c.keyframes[0] == c.start
        assert c.tokens.dtype == np.float16 and 0 < c.n_tokens <= 40
        assert c.tokens.shape[1] == vtest_features[0].tokens.shape[1]
        assert np.all((c.token_times >= c.start) & (c.token_times < c.end))
        assert c.token_positions.dtype == np.int32 and c.token_positions.max() < 100
        assert np.linalg.norm(c.vector) == pytest.approx(1.0, abs=1e-5)
        assert c.text_vector is None and 0.0 < c.novelty <= 1.0


def test_split_at_shot_boundary_and_on_change_but_never_below_min_length():
    a, b = np.eye(8)[0], np.eye(8)[1]
    frames = [_frame(t, a) for t in range(3)] + [_frame(3.0, b, boundary=True)] + \
             [_frame(t, b) for t in range(4, 6)]
    clips = _build(ClipConfig(min_length=2.0, max_length=10.0), frames)
    assert [(c.start, c.end) for c in clips] == [(0.0, 3.0), (3.0, 6.0)]
    # the same change one second into a clip waits for min_length
    frames = [_frame(0.0, a), _frame(1.0, b, boundary=True), _frame(2.0, b), _frame(3.0, b)]
    clips = _build(ClipConfig(min_length=2.0, max_length=10.0), frames)
    assert [(c.start, c.end) for c in clips] == [(0.0, 2.0), (2.0, 4.0)]
    # pooled change alone splits too (no boundary flag)
    frames = [_frame(t, a) for t in range(3)] + [_frame(t, b) for t in range(3, 6)]
    clips = _build(ClipConfig(min_length=1.0, max_length=10.0, split_threshold=0.5), frames)
    assert [c.start for c in clips] == [0.0, 3.0]


def test_max_length_with_jitter_and_a_gap_in_the_input():
    a = np.eye(4)[0]
    times = [0.0, 1.0, 2.1, 3.0, 3.9, 5.0, 6.0, 11.0, 12.0]  # jitter; nothing from 6 s to 11 s
    clips = _build(ClipConfig(min_length=0.0, max_length=3.0, split_threshold=1.0),
                   [_frame(t, a) for t in times])
    assert [(c.start, c.end) for c in clips] == [(0.0, 3.0), (3.0, 6.0), (6.0, 7.0), (11.0, 13.0)]


def test_token_cap_keeps_each_frames_first_tokens_in_proportion():
    a = np.eye(8)[0]
    frames = [_frame(0.0, a, k=12, keyframe=True), _frame(1.0, a, k=6), _frame(2.0, a, k=6)]
    (clip,) = _build(ClipConfig(min_length=0.0, max_length=10.0, max_tokens=12), frames)
    assert clip.n_tokens == 12
    assert clip.token_times.tolist() == [0.0] * 6 + [1.0] * 3 + [2.0] * 3
    assert clip.token_positions.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 0, 1, 2]
    assert np.allclose(clip.tokens[:6].astype(np.float32), frames[0].tokens[:6], atol=1e-3)
    (none,) = _build(ClipConfig(max_tokens=0), frames)
    assert none.n_tokens == 0 and none.tokens.shape == (0, 8)


def test_descriptions_merge_into_labels_text_and_a_readable_line():
    a = np.eye(4)[0]
    frames = [_frame(t, a) for t in range(3)]
    descs = [Description(labels=(("tabby", 0.6), ("tiger cat", 0.2)), text="WIFI PASSWORD: tulip-42"),
             None,
             Description(labels=(("tiger cat", 0.5), ("carton", 0.1)), text="WIFI PASSWORD: tulip-42 | Room 12")]
    (clip,) = _build(ClipConfig(min_length=0.0, max_length=10.0), frames, descs)
    assert clip.labels == (("tabby", 0.6), ("tiger cat", 0.5), ("carton", 0.1))
    assert clip.ocr_text == "WIFI PASSWORD: tulip-42 | Room 12"
    assert clip.description == 'tabby, tiger cat, carton; text: "WIFI PASSWORD: tulip-42 | Room 12"'


def test_bad_input_is_refused():
    a = np.eye(4)[0]
    b = create_clip_builder(ClipConfig(), source_id="x")
    b.push(_frame(2.0, a))
    with pytest.raises(ValidationError, match="increasing pts"):
        b.push(_frame(1.0, a))
    with pytest.raises(ConfigError, match="min_length"):
        create_clip_builder(ClipConfig(min_length=5.0, max_length=3.0))
