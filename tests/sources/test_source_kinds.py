"""Image folders, the OpenCV camera (over a real decoder standing in for the device),
and how open_source picks a backend."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from PIL import Image

from streamvid.config import SourceConfig
from streamvid.errors import ConfigError, SourceError
from streamvid.sources import create_source, open_source
from streamvid.sources.open import backend_for

from conftest import DATA


@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory):
    """The first 12 frames of world_3s.mp4 as PNGs (names that sort wrong as plain text),
    one of them rotated by EXIF orientation, plus a broken file."""
    import av

    d = tmp_path_factory.mktemp("frames")
    arrays = []
    with av.open(str(DATA / "world_3s.mp4")) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if i == 12:
                break
            img = fr.to_ndarray(format="rgb24")
            arrays.append(img)
            if i == 3:  # stored sideways, EXIF says "rotate 90 CW to display"
                im = Image.fromarray(np.rot90(img, 1).copy())
                exif = Image.Exif()
                exif[0x0112] = 6
                im.save(d / f"frame{i}.jpg", exif=exif, quality=95)
            else:
                Image.fromarray(img).save(d / f"frame{i}.png")
    (d / "frame12.png").write_bytes(b"not a png")
    (d / "notes.txt").write_text("ignored")
    return d, arrays


def test_image_folder_in_natural_order_upright(frames_folder, caplog):
    folder, arrays = frames_folder
    caplog.set_level(logging.WARNING)
    src = open_source(folder, SourceConfig(fps=4.0, max_side=0))
    assert type(src).__name__ == "ImageFolderSource"
    frames = list(src)
    assert len(frames) == 12
    assert [f.pts for f in frames] == pytest.approx([i / 4 for i in range(12)])
    for i in (0, 2, 10, 11):
        assert np.array_equal(frames[i].image, arrays[i])
    assert frames[3].image.shape == arrays[3].shape  # EXIF rotation undone
    assert np.abs(frames[3].image.astype(int) - arrays[3]).mean() < 4
    assert src.stats.decode_errors == 1
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1
    assert frames[0].source_id == folder.name


def test_image_folder_start_duration_and_downscale(frames_folder):
    folder, _ = frames_folder
    frames = list(open_source(folder, SourceConfig(fps=2.0, start=1.0, duration=2.0, max_side=100)))
    assert [f.pts for f in frames] == pytest.approx([1.0, 1.5, 2.0, 2.5])
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert max(frames[0].image.shape[:2]) == 100


def test_image_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="holds no images.*fix:"):
        open_source(tmp_path)
    with pytest.raises(SourceError, match="does not exist"):
        create_source("images", str(tmp_path / "nope"))


def test_open_source_routes_by_uri(tmp_path):
    cfg = SourceConfig()
    assert backend_for(str(DATA / "world_3s.mp4"), cfg) == "pyav"
    assert backend_for(str(tmp_path), cfg) == "images"
    assert backend_for("rtsp://cam.local/stream", cfg) == "rtsp"
    assert backend_for("rtsps://cam.local/stream", cfg) == "rtsp"
    assert backend_for("https://example.org/v.mp4", cfg) == "pyav"
    assert backend_for("0", cfg) == "camera"
    assert backend_for("/dev/video2", cfg) == "camera"
    assert backend_for(str(DATA / "world_3s.mp4"), SourceConfig(backend="decord")) == "decord"
    with pytest.raises(ConfigError, match="cannot read the stream"):
        backend_for("rtsp://x/y", SourceConfig(backend="decord"))
    src = open_source(DATA / "world_3s.mp4", SourceConfig(fps=1.0), source_id="cam-7")
    with src:
        assert {f.source_id for f in src} == {"cam-7"}
    with open_source(str(DATA / "world_3s.mp4")) as src:
        assert src.source_id == "world_3s.mp4" and src.fps == 30 and src.duration == pytest.approx(3.0)


def test_camera_over_a_real_decoder_drops_oldest_and_reopens():
    """OpenCV's capture on a video file stands in for a device: frames arrive as fast as it
    decodes, a slow consumer sees drops, and when the "device" stops it is reopened."""
    cfg = SourceConfig(fps=240.0, queue_size=2, max_side=64, reconnect_initial=0.05, reconnect_max=0.1,
                       give_up_after=5.0)
    src = create_source("camera", str(DATA / "world_3s.mp4"), cfg)
    assert src.is_live
    pts = []
    with src:
        deadline = time.monotonic() + 20
        for f in src:
            pts.append(f.pts)
            time.sleep(0.03)
            if src.stats.reconnects >= 1 and len(pts) >= 10 or time.monotonic() > deadline:
                break
        assert src.queue_high_water <= 2
    assert src.stats.dropped > 0
    assert src.stats.reconnects >= 1 and src.stats.gaps
    assert np.all(np.diff(pts) > 0)
    assert f.image.shape[1] == 64 and f.recv_time is not None


def test_missing_camera_gives_up_with_a_clear_error():
    src = open_source("/dev/video97", SourceConfig(give_up_after=0.6, reconnect_initial=0.1))
    t0 = time.monotonic()
    with pytest.raises(SourceError) as info:
        with src:
            list(src)
    msg = str(info.value)
    assert time.monotonic() - t0 < 10
    assert "/dev/video97" in msg and "camera" in msg and "fix:" in msg and "\n" not in msg


def test_http_file_through_pyav():
    """A video served over HTTP on loopback reads like the local file, same times."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(DATA)))
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/world_3s.mp4"
        with open_source(url, SourceConfig(fps=3.0, max_side=0)) as src:
            remote = [(f.pts, f.image) for f in src]
            assert src.source_id == url and not src.is_live
    finally:
        srv.shutdown()
        th.join()
    with open_source(DATA / "world_3s.mp4", SourceConfig(fps=3.0, max_side=0)) as src:
        local = [(f.pts, f.image) for f in src]
    assert [t for t, _ in remote] == [t for t, _ in local] and len(local) == 9
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(remote, local))
