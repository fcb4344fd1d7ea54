"""Indexing keeps each clip's keyframe picture: the JPEG in the store is the frame at the
clip's keyframe time, decoded from the real video."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from memory.store import MemoryStore
from pipelines.index import index_video
from streamvid.config import Config, DescribeConfig, SourceConfig
from streamvid.io import THUMB_MAX_SIDE, encode_jpeg
from streamvid.sources import open_source

VIDEO = Path(__file__).resolve().parents[1] / "data" / "vtest_10s_1fps.mp4"


def pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32)


def test_every_clip_keeps_the_picture_at_its_keyframe(tmp_path):
    cfg = Config().replace(source=SourceConfig(fps=1.0),
                           describe=DescribeConfig(labels=False, ocr=False, local_labels=False))
    index_video(str(VIDEO), tmp_path / "s", cfg, progress=False)
    with open_source(str(VIDEO), cfg.source) as src:
        frames = {f.pts: f.image for f in src}
    store = MemoryStore.open(tmp_path / "s", mode="r")
    clips = store.get(store.ids())
    assert len(clips) >= 2
    for c in clips:
        jpeg = store.keyframe(c.id)
        assert jpeg is not None and jpeg == c.keyframe_jpeg
        assert max(Image.open(io.BytesIO(jpeg)).size) <= THUMB_MAX_SIDE
        assert len(jpeg) < 60_000
        got = pixels(jpeg)
        # the stored picture is the frame at the keyframe time, not another one
        diffs = {t: float(np.abs(pixels(encode_jpeg(im)) - got).mean()) for t, im in frames.items()}
        assert diffs[c.keyframe] < 1.0
        assert min(d for t, d in diffs.items() if t != c.keyframe) > diffs[c.keyframe]
