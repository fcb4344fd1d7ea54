"""Fixtures and helpers shared by the frame-source tests: paths to the small videos in
tests/data, reference frame times from ffprobe, and damaged files made at test time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_tool(name: str) -> str:
    """Path of a command-line tool; skip when it is missing outside CI, fail in CI."""
    path = shutil.which(name)
    if path:
        return path
    if IN_CI:
        pytest.fail(f"{name} is missing in CI; fix: run .ci/system-deps.sh")
    pytest.skip(f"{name} not installed (apt-get install ffmpeg)")
    raise AssertionError  # unreachable


def ffprobe_times(path: Path) -> np.ndarray:
    """Presentation times (s) of every video frame, from the container's start, sorted."""
    exe = need_tool("ffprobe")
    out = subprocess.run(
        [exe, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "frame=pts_time,best_effort_timestamp_time:format=start_time", "-of", "json", str(path)],
        capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    start = float(info.get("format", {}).get("start_time", 0) or 0)
    times = []
    for fr in info["frames"]:
        t = fr.get("pts_time", fr.get("best_effort_timestamp_time"))
        if t is not None:
            times.append(float(t) - start)
    return np.array(sorted(times))


def expected_samples(times: np.ndarray, fps: float | None, start: float = 0.0,
                     end: float | None = None) -> np.ndarray:
    """The frame times a source must deliver: for each target start + k/fps, the first frame
    at or after it (one frame may serve several targets)."""
    out = []
    nxt = start
    for t in times:
        if end is not None and t >= end:
            break
        if t < nxt - 1e-3:
            continue
        out.append(t)
        if fps:
            while nxt <= t + 1e-3:
                nxt += 1.0 / fps
        else:
            nxt = t + 1e-3
    return np.array(out)


def ffmpeg_frame(path: Path, t: float, size: tuple[int, int]) -> np.ndarray:
    """The frame FFmpeg shows at time ``t`` (rotation applied), scaled to ``size`` (w, h)."""
    exe = need_tool("ffmpeg")
    w, h = size
    raw = subprocess.run(
        [exe, "-v", "error", "-ss", f"{t:.3f}", "-i", str(path), "-frames:v", "1",
         "-vf", f"scale={w}:{h}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(h, w, 3)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def corrupt_video(tmp_path_factory) -> Path:
    """world_3s.mp4 with the payload of three inter-coded packets replaced by noise."""
    import av

    src = DATA / "world_3s.mp4"
    dst = tmp_path_factory.mktemp("corrupt") / "world_corrupt.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        for i, pkt in enumerate(inp.demux(s_in)):
            if pkt.dts is None:
                continue
            if i in (20, 21, 50):
                noisy = av.Packet(rng.integers(0, 256, pkt.size, dtype=np.uint8).tobytes())
                noisy.pts, noisy.dts, noisy.time_base = pkt.pts, pkt.dts, pkt.time_base
                noisy.is_keyframe = pkt.is_keyframe
                pkt = noisy
            pkt.stream = s_out
            out.mux(pkt)
    return dst


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    junk = d / "not_a_video.mp4"
    junk.write_bytes(b"this is not a video\n")
    return {"empty": empty, "not_a_video": junk, "moov_end": DATA / "world_truncated_moov_end.mp4",
            "missing": d / "no_such_file.mp4"}
