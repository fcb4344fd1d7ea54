"""Real frames and real lite-encoder features for the compression tests."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).resolve().parents[1] / "data"


def decode(name: str, every: int = 1, limit: int | None = None) -> list[tuple[float, np.ndarray]]:
    """``(pts, rgb)`` of every ``every``-th frame of a fixture video."""
    out = []
    with av.open(str(DATA / name)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % every == 0:
                out.append((float(f.time), f.to_ndarray(format="rgb24")))
            if limit is not None and len(out) >= limit:
                break
    return out


@pytest.fixture(scope="session")
def lite():
    from streamvid.config import EncoderConfig
    from streamvid.encoders import create_encoder

    return create_encoder(EncoderConfig(name="lite", batch_size=8, size=320, aspect="1:1"))  # a 10x10 grid


@pytest.fixture(scope="session")
def vtest_frames():
    """Ten frames of pedestrians on a square, static camera, 1 s apart (pts 0..9)."""
    return decode("vtest_10s_1fps.mp4")


@pytest.fixture(scope="session")
def vtest_features(lite, vtest_frames):
    from streamvid.types import FrameFeatures

    out = lite.encode([im for _, im in vtest_frames])
    return [FrameFeatures(pts=t, index=i, tokens=out.tokens[i], pooled=out.pooled[i], grid=out.grid)
            for i, (t, _) in enumerate(vtest_frames)]


@pytest.fixture(scope="session")
def city_frames():
    """Four frames of city towers at night, 1 s apart."""
    return decode("city_4s.mp4", every=10, limit=4)
