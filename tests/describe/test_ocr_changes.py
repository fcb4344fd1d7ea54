"""OCR reads text where it can have changed, and only there: a real H.264 video whose signs
change at known times, decoded and described frame by frame."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from streamvid.config import DescribeConfig, SourceConfig
from streamvid.describe import create_describer
from streamvid.describe.ocr import OcrDescriber, ReadMemory
from streamvid.sources import open_source
from streamvid.types import Frame, FrameFeatures

W, H, FPS = 720, 404, 5
STATIC = "Platform 9 north"
#: (from, to, text) of the changing sign at the bottom right, seconds
CODES = [(0.0, 5.0, "DOOR CODE 4711"), (5.0, 11.0, "DOOR CODE 5820"), (11.0, 16.0, "DOOR CODE 6934")]
#: a sign that appears late, elsewhere, small
LATE = (13.0, "GATE B12")


def _scene(t: float) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    yy, xx = np.mgrid[0:H, 0:W]
    bg = np.stack([60 + 40 * np.sin(xx / 37.0), 110 + 30 * np.cos(yy / 23.0), 70 + 0 * xx], axis=-1)
    img = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    # a ball crossing the middle of the picture: a change that carries no text
    x = int(20 + 38 * t)
    draw.ellipse([x, 160, x + 70, 230], fill=(15, 15, 15))

    def sign(text: str, left: int, top: int, size: int) -> None:
        font = ImageFont.load_default(size=size)
        x0, y0, x1, y1 = draw.textbbox((left + 8, top + 6), text, font=font)
        draw.rectangle([left, top, x1 + 8, y1 + 8], fill=(245, 245, 240))
        draw.text((left + 8, top + 6), text, fill=(10, 10, 10), font=font)

    sign(STATIC, 20, 20, 26)
    for start, end, code in CODES:
        if start <= t < end:
            sign(code, 400, 320, 26)
    if t >= LATE[0]:
        sign(LATE[1], 560, 30, 18)
    return np.asarray(img)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    import av

    path = tmp_path_factory.mktemp("ocr") / "signs.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": "23"}
        for i in range(16 * FPS):
            f = av.VideoFrame.from_ndarray(_scene(i / FPS), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, FPS)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


def _describe_video(path: str, cfg: DescribeConfig):
    d = create_describer(cfg)
    out = []
    for fr in open_source(path, SourceConfig(fps=1.0, max_side=0)):
        feats = FrameFeatures(pts=fr.pts, index=fr.index, tokens=np.zeros((1, 4), np.float32),
                              pooled=np.zeros(4, np.float32), grid=(1, 1))
        desc = d.maybe_describe(fr, feats)
        out.append((fr.pts, desc))
    return d, out


def _text_at(out, t: float) -> str:
    """The text of the last described frame at or before ``t``."""
    text = ""
    for pts, desc in out:
        if pts <= t + 1e-6 and desc is not None:
            text = desc.text
    return text


def test_every_change_of_the_text_is_read_and_unchanged_text_is_not_read_again(video):
    # a low change threshold: every frame with the moving ball is described
    cfg = DescribeConfig(labels=False, detector="none", ocr_interval=2.0, max_interval=10.0,
                         change_threshold=0.01)
    d, out = _describe_video(video, cfg)
    # every state of the changing sign is read within the OCR interval of its change, and the
    # old code is gone then; the static sign is always there
    for start, end, code in CODES:
        t = start + cfg.ocr_interval
        text = _text_at(out, t)
        assert code in text and STATIC in text, (t, text)
        assert all(c not in text for _, _, c in CODES if c != code), (t, text)
    assert LATE[1] in _text_at(out, LATE[0] + cfg.ocr_interval)
    st = d.stats
    # the whole frame was read once (the first frame); later reads were of the parts that
    # changed (the ball, the signs), and the static sign was recognised once
    assert st["ocr_full"] == 1 and st["ocr_partial"] >= 6
    # boxes recognised: each sign once (the static one at the first frame, each code and the
    # late sign when they appear), and the moving ball (read as a dot) where it went; the
    # static sign is outside the changed parts and is not even looked at again
    assert st["ocr_boxes_read"] <= 1 + len(CODES) + 1 + st["ocr_partial"], st


def test_the_same_words_without_reuse(video):
    """describe.ocr_reuse: false recognises every box at every read, and reads the same text."""
    base = DescribeConfig(labels=False, detector="none", ocr_interval=2.0, max_interval=10.0,
                          change_threshold=0.01)
    d1, out1 = _describe_video(video, base)
    d2, out2 = _describe_video(video, DescribeConfig(**{**base.__dict__, "ocr_reuse": False}))
    assert [(p, x and x.text) for p, x in out1] == [(p, x and x.text) for p, x in out2]
    assert d2.stats["ocr_boxes_read"] == 0 and d2._memory is None


def test_frames_where_nothing_changed_are_not_read(video):
    """Frames described only because max_interval passed are not read when no OCR cell
    changed since the last read (here: every frame of a still video)."""
    import av

    first = None
    with av.open(video) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    d = create_describer(DescribeConfig(labels=False, detector="none", max_interval=2.0))
    feats = FrameFeatures(pts=0.0, index=0, tokens=np.zeros((1, 4), np.float32),
                          pooled=np.zeros(4, np.float32), grid=(1, 1))
    texts = [d.maybe_describe(Frame(pts=float(t), index=t, image=first), feats) for t in range(9)]
    described = [x for x in texts if x is not None]
    assert len(described) == 5 and all(x.text == texts[0].text for x in described)
    assert STATIC in texts[0].text
    assert d.stats["ocr_full"] == 1 and d.stats["ocr_partial"] == 0 and d.stats["ocr_unchanged"] == 4
    # describe.ocr_full_interval: the whole frame again every 4 s all the same
    d = create_describer(DescribeConfig(labels=False, detector="none", max_interval=2.0,
                                        ocr_full_interval=4.0))
    texts = [d.maybe_describe(Frame(pts=float(t), index=t, image=first), feats) for t in range(9)]
    assert d.stats["ocr_full"] == 3 and d.stats["ocr_unchanged"] == 2
    assert all(x.text == texts[0].text for x in texts if x is not None)


def test_read_memory_reuses_only_the_same_pixels(make_sign):
    ocr = OcrDescriber()
    mem = ReadMemory()
    a = make_sign(["WIFI PASSWORD: tulip-42"])
    b = make_sign(["WIFI PASSWORD: tulip-43"])
    assert [ln.text for ln in ocr.read_lines(a, mem)] == ["WIFI PASSWORD: tulip-42"]
    assert mem.recognised == 1 and mem.reused == 0
    assert [ln.text for ln in ocr.read_lines(a, mem)] == ["WIFI PASSWORD: tulip-42"]
    assert mem.recognised == 1 and mem.reused == 1
    # one character changed: read again
    assert [ln.text for ln in ocr.read_lines(b, mem)] == ["WIFI PASSWORD: tulip-43"]
    assert mem.recognised == 2
    # the same picture without a memory reads the same
    assert [ln.text for ln in ocr.read_lines(b)] == ["WIFI PASSWORD: tulip-43"]
