"""Frame pictures: kept where the frame changed, stored with their clip (same commit),
kept through compaction and consolidation; the matcher finds a small picture in them."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from conftest import make_clip
from memory.consolidate import merge_clips
from memory.store import MemoryStore
from streamvid.io import encode_jpeg
from streamvid.pictures import PictureMatcher, frame_pictures


def scene(seed: int, h: int = 360, w: int = 640, grain: int = 8) -> np.ndarray:
    """A textured frame (noise smoothed over ``grain`` pixels), different for every seed."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // grain, w // grain, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def with_pictures(i: int):
    c = make_clip(i)
    return dataclasses.replace(c, frame_pictures=tuple(
        (c.start + k, encode_jpeg(scene(10 * i + k), max_side=320)) for k in range(3)))


def test_only_changed_frames_are_kept():
    a, b = scene(1), scene(2)
    kept = frame_pictures([(0.0, a), (1.0, a.copy()), (2.0, b), (3.0, b), (4.0, a)], 640)
    assert [t for t, _ in kept] == [0.0, 2.0, 4.0]
    assert all(Image.open(io.BytesIO(j)).size == (640, 360) for _, j in kept)
    small = frame_pictures([(0.0, a)], 320)
    assert Image.open(io.BytesIO(small[0][1])).size == (320, 180)


def test_round_trip_compaction_and_consolidation(tmp_path, spec):
    clips = [with_pictures(i) for i in range(4)]
    clips[1] = dataclasses.replace(clips[1], frame_pictures=())
    with MemoryStore.open(tmp_path / "s", spec, mode="a") as store:
        ids = store.add(clips[:2])
        store.commit()
        ids += store.add(clips[2:])
        store.commit()
    store = MemoryStore.open(tmp_path / "s", spec, mode="r")
    for cid, c in zip(ids, clips):
        assert store.get([cid])[0].frame_pictures == c.frame_pictures
    merged = merge_clips(clips[2], clips[3])
    assert merged.frame_pictures == clips[2].frame_pictures + clips[3].frame_pictures


def paste(frame: np.ndarray, picture: np.ndarray, y: int, x: int) -> np.ndarray:
    out = frame.copy()
    out[y:y + picture.shape[0], x:x + picture.shape[1]] = picture
    return out


def test_matcher_finds_a_picture_a_quarter_token_high():
    import cv2

    query = scene(99, 120, 160)   # opaque, 4:3
    tiny = cv2.resize(query, (15, 11), interpolation=cv2.INTER_AREA)   # 3 % of 360
    frames = [scene(s) for s in range(6)]
    frames[4] = paste(frames[4], tiny, 200, 500)
    jpegs = [j for _, j in frame_pictures([(float(i), f) for i, f in enumerate(frames)], 640)]
    s = PictureMatcher(query, np.ones(query.shape[:2], np.float32)).scores(jpegs)
    assert int(np.argmax(s)) == 4, s


def test_matcher_ignores_a_cutouts_background_and_finds_it_partly_outside():
    query = scene(7, 200, 200, grain=25)
    yy, xx = np.mgrid[0:200, 0:200]
    alpha = (((yy - 100) ** 2 + (xx - 100) ** 2) < 90 ** 2).astype(np.float32)
    import cv2

    big = cv2.resize(query, (120, 120), interpolation=cv2.INTER_AREA)
    a = cv2.resize(alpha, (120, 120))[..., None]
    frames = [scene(s) for s in range(20, 26)]
    f = frames[2].copy()
    region = f[100:220, -72:].astype(np.float32)   # 60 % inside on the right edge
    f[100:220, -72:] = np.clip(big[:, :72] * a[:, :72] + region * (1 - a[:, :72]) + 0.5, 0, 255)
    frames[2] = f
    jpegs = [encode_jpeg(fr, max_side=640) for fr in frames]
    s = PictureMatcher(query, alpha).scores(jpegs)
    assert int(np.argmax(s)) == 2, s
