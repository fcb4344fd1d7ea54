"""Live sources against real producers: GStreamer's RTSP server on loopback (stopped and
restarted mid-stream) and an MPEG-TS stream written into a pipe faster than it is read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from streamvid.config import SourceConfig
from streamvid.errors import SourceError
from streamvid.sources import create_source, open_source

from conftest import DATA, IN_CI
from tests.live_helpers import RtspServer, free_port, gst_available as _gst_available


@pytest.fixture(scope="module")
def gst() -> None:
    if not _gst_available():
        if IN_CI:
            pytest.fail("the GStreamer RTSP server stack is missing in CI; fix: run .ci/system-deps.sh")
        pytest.skip("GStreamer RTSP server not installed (see .ci/system-deps.sh)")


@pytest.fixture()
def rtsp_server(gst):
    srv = RtspServer(free_port()).start()
    yield srv
    srv.stop()


def live_cfg(**kw) -> SourceConfig:
    base = dict(fps=240.0, max_side=0, reconnect_initial=0.2, reconnect_max=1.0, give_up_after=15.0,
                open_timeout=3.0)
    base.update(kw)
    return SourceConfig(**base)


@pytest.mark.rtsp
def test_rtsp_reads_frames_with_stream_and_wall_times(rtsp_server):
    src = open_source(rtsp_server.url, live_cfg(max_side=160))
    assert src.is_live and not src.is_seekable and src.duration is None
    frames = []
    with src:
        for f in src:
            frames.append(f)
            if len(frames) == 30:
                break
    pts = np.array([f.pts for f in frames])
    recv = np.array([f.recv_time for f in frames])
    assert np.all(np.diff(pts) > 0) and pts[0] < 0.5
    # a 25 fps stream: 29 intervals of 40 ms by the stream's own clock
    assert pts[-1] - pts[0] == pytest.approx(29 / 25, abs=0.05)
    assert np.all(np.diff(recv) >= 0) and abs(recv[-1] - time.time()) < 30
    assert frames[0].image.shape == (120, 160, 3)
    assert frames[0].source_id == rtsp_server.url
    assert [f.index for f in frames] == list(range(30))
    assert src.fps == 25


@pytest.mark.rtsp
@pytest.mark.slow
def test_rtsp_reconnects_after_server_restart(rtsp_server):
    src = open_source(rtsp_server.url, live_cfg(fps=10.0, max_side=64))
    pts, recv = [], []
    stopped_at = None
    with src:
        for f in src:
            pts.append(f.pts)
            recv.append(f.recv_time)
            if len(pts) == 15 and stopped_at is None:
                rtsp_server.stop()
                stopped_at = len(pts)
                time.sleep(1.5)
                rtsp_server.start()
            if len(pts) >= stopped_at + 15 if stopped_at else False:
                break
    assert np.all(np.diff(pts) > 0), "times stay increasing across the reconnect"
    assert src.stats.reconnects == 1
    assert len(src.stats.gaps) == 1
    before, after = src.stats.gaps[0]
    assert before == pytest.approx(pts[stopped_at - 1], abs=0.15) or before > pts[stopped_at - 1]
    assert after - before >= 1.0, "the gap covers the time the server was down"
    jump = int(np.argmax(np.diff(pts)))
    assert pts[jump + 1] == pytest.approx(after, abs=0.15)
    # after the reconnect frames keep coming at the sampled rate
    assert np.median(np.diff(pts[jump + 1:])) == pytest.approx(0.1, abs=0.03)


@pytest.mark.rtsp
def test_rtsp_duration_bounds_the_read(rtsp_server):
    with open_source(rtsp_server.url, live_cfg(fps=5.0, duration=1.0, max_side=64)) as src:
        frames = list(src)
    pts = [f.pts for f in frames]
    assert 4 <= len(frames) <= 6 and pts[-1] < 1.0


@pytest.mark.rtsp
def test_rtsp_slow_consumer_drops_oldest(rtsp_server):
    """Backpressure: a consumer slower than the 25 fps stream gets the newest frames, the
    queue never grows past queue_size, and the drops are counted."""
    src = open_source(rtsp_server.url, live_cfg(queue_size=3, max_side=64))
    got = []
    with src:
        for f in src:
            got.append(f.pts)
            time.sleep(0.12)
            if len(got) == 12:
                break
        assert src.queue_high_water <= 3
        assert src.stats.dropped >= 10
    assert np.all(np.diff(got) > 0)
    assert np.max(np.diff(got[2:])) > 0.1  # frames in between were dropped


@pytest.mark.rtsp
def test_close_and_interrupt_stop_the_reader(rtsp_server):
    src = open_source(rtsp_server.url, live_cfg(max_side=64))
    with pytest.raises(KeyboardInterrupt):
        with src:
            for i, _ in enumerate(src):
                if i == 5:
                    raise KeyboardInterrupt
    assert src._thread is not None and not src._thread.is_alive()
    assert len(src._queue) == 0
    with pytest.raises(SourceError, match="closed"):
        next(iter(src))


def test_stream_that_never_comes_up_is_a_clear_error():
    url = f"rtsp://127.0.0.1:{free_port()}/nothing"
    t0 = time.monotonic()
    src = open_source(url, live_cfg(give_up_after=1.5, reconnect_initial=0.1))
    with pytest.raises(SourceError) as info:
        with src:
            list(src)
    took = time.monotonic() - t0
    msg = str(info.value)
    assert 1.4 <= took < 8
    assert url in msg and "fix:" in msg and "\n" not in msg
    assert "no frames within 1.5 s" in msg and "refused" in msg.lower()


def _ts_bytes(tmp: Path) -> bytes:
    """world_3s.mp4 remuxed to MPEG-TS (what a capture device or encoder pipe sends)."""
    import av

    dst = tmp / "world.ts"
    with av.open(str(DATA / "world_3s.mp4")) as inp, av.open(str(dst), "w", format="mpegts") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        bsf = av.BitStreamFilterContext("h264_mp4toannexb", s_in, s_out)
        for pkt in inp.demux(s_in):
            for p in bsf.filter(pkt if pkt.dts is not None else None):
                p.stream = s_out
                out.mux(p)
    return dst.read_bytes()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_backpressure_on_a_pipe_fed_faster_than_read(tmp_path):
    """A real producer (an MPEG-TS writer on a named pipe, decoded by FFmpeg) outruns a slow
    consumer: the bounded queue keeps the newest frames and counts every drop."""
    ts = tmp_path / "world.ts"
    ts.write_bytes(_ts_bytes(tmp_path))
    fifo = tmp_path / "camera.ts"
    os.mkfifo(fifo)
    # the producer is another process: it writes 3 s clips back to back as fast as the pipe
    # takes them, for longer than the test reads
    writer = subprocess.Popen([sys.executable, "-c",
                               "import sys\n"
                               "data = open(sys.argv[1], 'rb').read()\n"
                               "with open(sys.argv[2], 'wb') as fh:\n"
                               "    for _ in range(200):\n"
                               "        fh.write(data)\n", str(ts), str(fifo)],
                              stderr=subprocess.DEVNULL)
    cfg = live_cfg(queue_size=4, max_side=64, give_up_after=2.0, open_timeout=5.0)
    src = create_source("rtsp", str(fifo), cfg)
    got = []
    with src:
        for f in src:
            got.append(f.pts)
            time.sleep(0.05)
            if len(got) == 20:
                break
        assert src.queue_high_water <= 4
        dropped = src.stats.dropped
    writer.kill()
    writer.wait()
    assert dropped > 20, dropped
    assert np.all(np.diff(got) > 0)


@pytest.mark.rtsp
def test_rtsp_audio_track_comes_beside_the_frames(gst):
    srv = RtspServer(free_port(), audio=True).start()
    try:
        src = open_source(srv.url, live_cfg(max_side=160))
        chunks = []
        with src:
            for i, f in enumerate(src):
                chunks += src.read_audio(f.pts)
                if i == 75:
                    break
            last = f.pts
        assert src.has_audio and len(chunks) >= 1
        starts = [c.start for c in chunks]
        assert starts == sorted(starts) and all(c.rate == 16000 for c in chunks)
        assert 0 <= starts[0] < 1.5 and chunks[-1].end <= last + 2.0   # on the frames' clock
        tone = np.concatenate([c.samples for c in chunks])
        spec = np.abs(np.fft.rfft(tone[:16000]))
        assert abs(float(np.argmax(spec[1:])) + 1 - 440) <= 3   # the 440 Hz tone, resampled
    finally:
        srv.stop()
