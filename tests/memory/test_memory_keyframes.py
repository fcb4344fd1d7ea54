"""Keyframe JPEGs in the store: same commit as the clip, kept through compaction and
consolidation, absent (None) in stores written before them."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import make_clip
from memory.consolidate import merge_clips
from memory.store import MemoryStore
from streamvid.config import MemoryConfig
from streamvid.errors import StoreError, ValidationError
from streamvid.io import encode_jpeg


def grey(i: int) -> bytes:
    """A 640x360 picture whose grey level encodes clip number ``i``."""
    return encode_jpeg(np.full((360, 640, 3), (i * 37) % 250, np.uint8))


def level_of(jpeg: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(jpeg))).mean())


def with_jpeg(i: int, **kw):
    return dataclasses.replace(make_clip(i, **kw), keyframe_jpeg=grey(i))


def test_encode_jpeg_bounds_the_size():
    img = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    im = Image.open(io.BytesIO(encode_jpeg(img)))
    assert im.format == "JPEG" and im.size == (384, 216)
    small = Image.open(io.BytesIO(encode_jpeg(img[:100, :50])))
    assert small.size == (50, 100)  # never enlarged


def test_round_trip_and_pending(tmp_path, spec):
    clips = [with_jpeg(i) for i in range(6)]
    clips[2] = dataclasses.replace(clips[2], keyframe_jpeg=None)
    with MemoryStore.open(tmp_path / "s", spec, mode="a") as store:
        ids = store.add(clips)
        assert store.keyframe(ids[1]) == clips[1].keyframe_jpeg  # a writer sees pending ones
        store.commit()
        more = store.add([with_jpeg(10)])
        assert store.keyframe(more[0]) == grey(10)
    store = MemoryStore.open(tmp_path / "s", spec, mode="r")
    for cid, c in zip(ids, clips):
        assert store.keyframe(cid) == c.keyframe_jpeg
        assert store.get([cid])[0].keyframe_jpeg == c.keyframe_jpeg
    assert store.keyframe(ids[2]) is None
    with pytest.raises(StoreError, match="not in the store"):
        store.keyframe(999)


def test_not_a_jpeg_is_refused():
    with pytest.raises(ValidationError, match="keyframe_jpeg"):
        dataclasses.replace(make_clip(0), keyframe_jpeg=b"\x89PNG....")


def test_store_written_before_keyframes_reads_none(tmp_path, spec):
    path = tmp_path / "old"
    with MemoryStore.open(path, spec, mode="a") as store:
        store.add([make_clip(i) for i in range(3)])
        store.commit()
    # what an older version wrote: no jpeg files, none named in the manifest
    m = json.loads((path / "manifest.json").read_text())
    for seg in m["segments"]:
        for name in ("jpeg.npy", "jpeg_off.npy"):
            del seg["sizes"][name]
            (path / seg["name"] / name).unlink()
    (path / "manifest.json").write_text(json.dumps(m))
    with MemoryStore.open(path, spec, mode="a") as store:
        assert [store.keyframe(i) for i in store.ids()] == [None, None, None]
        new = store.add([with_jpeg(5)])
        store.commit()
    store = MemoryStore.open(path, spec, mode="r")
    assert store.keyframe(new[0]) == grey(5) and store.keyframe(0) is None


def test_compaction_keeps_keyframes(tmp_path, spec):
    cfg = MemoryConfig(max_segments=1)  # every commit rewrites everything into one segment
    with MemoryStore.open(tmp_path / "s", spec, mode="a", config=cfg) as store:
        for i in range(4):
            store.add([with_jpeg(i)])
            store.commit()
        store.remove([1])
        store.commit()
    store = MemoryStore.open(tmp_path / "s", spec, mode="r", config=cfg)
    assert len(store.manifest["segments"]) == 1
    assert {int(i): store.keyframe(int(i)) for i in store.ids()} == \
        {0: grey(0), 2: grey(2), 3: grey(3)}


def test_merge_takes_the_picture_of_the_merged_keyframe():
    a, b = with_jpeg(0), with_jpeg(1)
    m = merge_clips(a, b)
    assert m.keyframe == a.keyframe and m.keyframe_jpeg == a.keyframe_jpeg
    # a part without a picture: the other part's is kept
    m2 = merge_clips(dataclasses.replace(a, keyframe_jpeg=None), b)
    assert m2.keyframe_jpeg == b.keyframe_jpeg
    assert merge_clips(make_clip(0), make_clip(1)).keyframe_jpeg is None


def test_consolidation_keeps_each_picture_with_its_keyframe(tmp_path, spec):
    cfg = MemoryConfig(capacity_clips=10, keep_recent=0.2, consolidate_to=0.6)
    originals = {}
    with MemoryStore.open(tmp_path / "s", spec, mode="a", config=cfg) as store:
        for i in range(30):
            c = with_jpeg(i)
            originals[c.keyframe] = i
            store.add([c])
            if i % 5 == 4:
                store.commit()
    store = MemoryStore.open(tmp_path / "s", spec, mode="r", config=cfg)
    clips = store.get(store.ids())
    assert len(clips) <= 10 and any(c.merged > 1 for c in clips)
    for c in clips:
        i = originals[c.keyframe]  # every merged keyframe is one of the originals' keyframes
        assert c.keyframe_jpeg == grey(i) == store.keyframe(c.id)
        assert level_of(c.keyframe_jpeg) == pytest.approx((i * 37) % 250, abs=2)
