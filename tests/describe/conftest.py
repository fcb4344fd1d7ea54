"""Rendered signs and real photos for the describer tests."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def render_sign(lines: list[str], size: tuple[int, int] = (640, 360), font_px: int = 36,
                background: tuple[int, int, int] = (60, 110, 60)) -> np.ndarray:
    """A picture with a white board carrying ``lines`` of black text (Pillow's own font)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_px)
    top = size[1] // 2 - len(lines) * font_px * 3 // 4
    draw.rectangle([30, top - 20, size[0] - 30, top + len(lines) * font_px * 3 // 2 + 10], fill=(245, 245, 240))
    for i, line in enumerate(lines):
        draw.text((50, top + i * font_px * 3 // 2), line, fill=(10, 10, 10), font=font)
    return np.asarray(img)


@pytest.fixture(scope="session")
def lite():
    from streamvid.config import EncoderConfig
    from streamvid.encoders import create_encoder

    return create_encoder(EncoderConfig(name="lite", batch_size=4))


@pytest.fixture(scope="session")
def make_sign():
    return render_sign


@pytest.fixture(scope="session")
def sign():
    return render_sign(["WIFI PASSWORD: tulip-42"])
