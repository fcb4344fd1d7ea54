"""Haystack building: real decoding, looping, letterboxing, rotation, needles in the pixels, caching."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

from pipelines.niah.haystack import (NeedleSpec, build_haystack, haystack_key, load_haystack,
                                     sample_video, sidecar_path)
from pipelines.niah.needles import load_needle_set, load_rgba, render_sign
from streamvid.errors import SourceError, ValidationError

DATA = Path(__file__).resolve().parents[1] / "data"
WORLD = DATA / "world_8s.mp4"      # 8 s, 10 fps, 320x180
CITY = DATA / "city_4s.mp4"        # 4 s, 10 fps, 320x180
NEEDLES = DATA / "needles"


def decode_all(path: Path) -> tuple[list[float], np.ndarray]:
    with av.open(str(path)) as c:
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    return [t for t, _ in frames], np.stack([a for _, a in frames])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One haystack with an alpha image needle and a text sign, and its needle-free twin."""
    d = tmp_path_factory.mktemp("hay")
    needles = [
        NeedleSpec("image", "cat", image=str(NEEDLES / "cat.png"), start=5.0, duration=3.0,
                   area=0.06, position=(0.3, 0.5)),
        NeedleSpec("text", "wifi", text="The wifi password is tulip-42", start=21.2,
                   duration=2.0, area=0.12),
    ]
    info = build_haystack([WORLD, CITY], d / "h.mp4", length=30.0, fps=2.0, size=(320, 180),
                          needles=needles, seed=3, progress=False)
    plain = build_haystack([WORLD, CITY], d / "plain.mp4", length=30.0, fps=2.0, size=(320, 180),
                           seed=3, progress=False)
    return info, plain, needles


def test_length_rate_size_and_timestamps(built):
    info, _, _ = built
    times, frames = decode_all(info.path)
    assert info.frames == 60 and len(times) == 60
    assert frames.shape[1:] == (180, 320, 3)
    assert np.allclose(times, np.arange(60) / 2.0)
    assert info.length == pytest.approx(30.0) and info.fps == 2.0 and info.size == (320, 180)


def test_needle_placement_is_frame_aligned(built):
    info, _, _ = built
    cat, sign = info.needles
    assert (cat.start, cat.end) == (5.0, 8.0)
    # 21.2 s is not on the 2 fps grid: the needle starts on the next frame, keeps its length
    assert (sign.start, sign.end) == (21.5, 23.5)
    x0, y0, x1, y1 = cat.box
    area = (x1 - x0) * (y1 - y0) / (320 * 180)
    assert area == pytest.approx(0.06, rel=0.1)
    assert cat.position == pytest.approx((0.3, 0.5), abs=0.01)
    for n in info.needles:
        bx0, by0, bx1, by1 = n.box
        assert 0 <= bx0 < bx1 <= 320 and 0 <= by0 < by1 <= 180


def test_needles_are_in_the_pixels_and_alpha_is_honoured(built):
    info, plain, _ = built
    _, a = decode_all(info.path)
    _, b = decode_all(plain.path)
    cat, sign = info.needles
    diff = np.abs(a.astype(int) - b.astype(int))
    quiet = [k for k in range(60) if not any(n.start <= k / 2 < n.end for n in info.needles)]
    for n in (cat, sign):
        x0, y0, x1, y1 = n.box
        inside = [k for k in range(60) if n.start <= k / 2 < n.end]
        per_frame = diff[:, y0:y1, x0:x1].mean(axis=(1, 2, 3))
        assert per_frame[inside].min() > 25, n.label
        assert per_frame[quiet].max() < 8, n.label   # only compression noise elsewhere
    # the cat picture is an ellipse with a transparent outside: its box corners show the video
    x0, y0, x1, y1 = cat.box
    k = 12  # 6.0 s
    corner = diff[k, y0:y0 + 4, x0:x0 + 4].mean()
    centre = diff[k, (y0 + y1) // 2 - 2:(y0 + y1) // 2 + 2, (x0 + x1) // 2 - 2:(x0 + x1) // 2 + 2].mean()
    assert corner < 8 < centre


def test_text_sign_is_readable_after_encoding(built):
    from rapidocr import RapidOCR

    info, _, _ = built
    sign = info.needles[1]
    _, frames = decode_all(info.path)
    x0, y0, x1, y1 = sign.box
    crop = frames[int(sign.start * 2) + 1, max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4]
    res = RapidOCR()(np.ascontiguousarray(crop[:, :, ::-1]))
    text = " ".join(res.txts or ()).lower().replace(" ", "")
    assert "tulip-42" in text


def test_loops_and_concatenates_real_footage():
    # world (8 s) then city (4 s) at 2 fps: 16 + 8 frames per pass
    world = list(sample_video(WORLD, 2.0, (320, 180)))
    city = list(sample_video(CITY, 2.0, (320, 180)))
    assert len(world) == 16 and len(city) == 8
    # slot k shows the source frame at k/fps: 10 fps source -> every 5th frame
    with av.open(str(WORLD)) as c:
        src = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert np.array_equal(world[3], src[15])


def test_sidecar_and_cache_reuse(built, tmp_path):
    info, _, needles = built
    side = json.loads(sidecar_path(info.path).read_text())
    assert side["key"] == info.key and len(side["needles"]) == 2
    mtime = os.stat(info.path).st_mtime_ns
    again = build_haystack([WORLD, CITY], info.path, length=30.0, fps=2.0, size=(320, 180),
                           needles=needles, seed=3, progress=False)
    assert os.stat(info.path).st_mtime_ns == mtime
    assert again == load_haystack(info.path)
    assert again.needles == info.needles
    other = haystack_key([WORLD, CITY], length=30.0, fps=2.0, size=(320, 180), needles=needles, seed=4)
    assert other != info.key


def test_deterministic_for_a_seed(tmp_path):
    spec = [NeedleSpec("image", "rocket", image=str(NEEDLES / "rocket.png"), start=4.0, area=0.05)]
    a = build_haystack([WORLD, CITY], tmp_path / "a.mp4", length=20, fps=2, size=(320, 180),
                       needles=spec, seed=7, progress=False)
    b = build_haystack([WORLD, CITY], tmp_path / "b.mp4", length=20, fps=2, size=(320, 180),
                       needles=spec, seed=7, progress=False)
    c = build_haystack([WORLD, CITY], tmp_path / "c.mp4", length=20, fps=2, size=(320, 180),
                       needles=spec, seed=8, progress=False)
    assert a.needles == b.needles and a.key == b.key
    assert np.array_equal(decode_all(a.path)[1], decode_all(b.path)[1])
    assert c.needles[0].box != a.needles[0].box  # random position depends on the seed


def test_rotation_metadata_gives_upright_letterboxed_frames(tmp_path):
    src = tmp_path / "rot.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=4)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(90)
        for i in range(8):
            img = np.zeros((32, 64, 3), np.uint8)
            img[:, :32] = 255          # left half white in storage
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    frames = list(sample_video(src, 2.0, (64, 64)))
    assert len(frames) == 4
    img = frames[0].astype(int)
    # upright the picture is 32 wide x 64 high, centred with black bars left and right;
    # rotating storage 90 degrees counter-clockwise puts the white half at the bottom
    assert img[:, :12].mean() < 10 and img[:, 52:].mean() < 10
    assert img[40:, 20:44].mean() > 200 and img[:24, 20:44].mean() < 30


def test_needle_sets_and_signs():
    entries = load_needle_set(NEEDLES)
    assert [e.label for e in entries] == ["astronaut", "cat", "coffee cup", "rocket"]
    rgba = load_rgba(NEEDLES / "cat.png")
    assert rgba.shape[2] == 4 and rgba[0, 0, 3] == 0 and rgba[rgba.shape[0] // 2, rgba.shape[1] // 2, 3] == 255
    sign = render_sign("The wifi password is tulip-42")
    assert sign.shape[2] == 4 and sign.shape[1] > sign.shape[0]


def test_errors_name_the_input(tmp_path):
    with pytest.raises(SourceError, match="nope.mp4"):
        build_haystack([tmp_path / "nope.mp4"], tmp_path / "h.mp4", length=10, progress=False)
    with pytest.raises(ValidationError, match="start"):
        build_haystack([WORLD], tmp_path / "h.mp4", length=10, progress=False,
                       needles=[NeedleSpec("text", "late", text="hi", start=12.0)])
    with pytest.raises(ValidationError, match="kind"):
        NeedleSpec("sound", "x")
    with pytest.raises(ValidationError, match="area"):
        NeedleSpec("text", "x", text="hi", area=1.5)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SourceError, match="bad.mp4"):
        build_haystack([bad], tmp_path / "h.mp4", length=10, progress=False)
