"""One conformance suite for every file backend: real decoding of small real videos,
checked against FFmpeg's own frame times and pixels."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from streamvid.config import SourceConfig
from streamvid.errors import MissingDependencyError, SourceError
from streamvid.sources import create_source, open_source

from conftest import DATA, expected_samples, ffmpeg_frame, ffprobe_times

# What each backend reads; the suite runs every (backend, file) pair a backend claims.
ALL_FILES = ["world_3s.mp4", "world_vfr_3s.mp4", "box_2s.mp4", "bbb_rot90_1s.mp4",
             "vtest_mjpeg_2s.avi", "vtest_vp9_2s.webm", "vtest_hevc_2s.mkv"]
SUPPORTS = {
    "pyav": ALL_FILES,
    "opencv": ALL_FILES,
    "decord": ["world_3s.mp4", "world_vfr_3s.mp4", "box_2s.mp4", "bbb_rot90_1s.mp4",
               "vtest_mjpeg_2s.avi", "vtest_hevc_2s.mkv"],
}
BACKENDS = list(SUPPORTS)


def _open(backend: str, path: Path, **cfg) -> object:
    try:
        return create_source(backend, str(path), SourceConfig(backend=backend, **cfg))
    except MissingDependencyError as err:
        pytest.skip(str(err))


def _read(backend: str, path: Path, **cfg):
    with _open(backend, path, **cfg) as src:
        frames = list(src)
    return src, frames


CASES = [(b, f) for b in BACKENDS for f in SUPPORTS[b]]


@pytest.mark.parametrize("backend,name", CASES)
def test_every_frame_matches_ffprobe_times(backend, name):
    path = DATA / name
    ref = ffprobe_times(path)
    src, frames = _read(backend, path, fps=240.0, max_side=0)
    got = np.array([f.pts for f in frames])
    assert np.all(np.diff(got) > 0), "times must increase"
    assert [f.index for f in frames] == list(range(len(frames)))
    frame_dur = float(np.median(np.diff(ref)))
    assert len(got) == len(ref), f"{backend} read {len(got)} frames, ffprobe lists {len(ref)}"
    assert np.max(np.abs(got - ref)) < frame_dur, "times must match ffprobe's within a frame"
    assert src.stats.frames == len(frames)
    assert all(f.source_id == name for f in frames)
    img = frames[0].image
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


@pytest.mark.parametrize("backend,name", [c for c in CASES if c[1] in
                                          ("world_vfr_3s.mp4", "world_3s.mp4", "box_2s.mp4")])
@pytest.mark.parametrize("fps", [1.0, 3.0, 7.0])
def test_sampling_by_presentation_time(backend, name, fps):
    """On a variable-frame-rate file too: each sample is the first frame at or after its
    target time (checked against ffprobe's times), never index / fps."""
    path = DATA / name
    ref = ffprobe_times(path)
    want = expected_samples(ref, fps)
    _, frames = _read(backend, path, fps=fps, max_side=64)
    got = np.array([f.pts for f in frames])
    frame_dur = float(np.median(np.diff(ref)))
    assert len(got) == len(want), (got, want)
    assert np.max(np.abs(got - want)) < frame_dur


def test_vfr_file_really_is_variable():
    gaps = np.diff(ffprobe_times(DATA / "world_vfr_3s.mp4"))
    assert gaps.max() > 2.5 * gaps.min()


@pytest.mark.parametrize("backend", [b for b in BACKENDS if "world_3s.mp4" in SUPPORTS[b]])
def test_start_and_duration(backend):
    path = DATA / "world_3s.mp4"
    ref = ffprobe_times(path)
    want = expected_samples(ref, 4.0, start=1.2, end=2.5)
    _, frames = _read(backend, path, fps=4.0, start=1.2, duration=1.3, max_side=0)
    got = np.array([f.pts for f in frames])
    assert len(got) == len(want) and np.allclose(got, want, atol=0.02), (got, want)
    assert [f.index for f in frames] == list(range(len(frames)))


@pytest.mark.parametrize("backend", [b for b in BACKENDS if "bbb_rot90_1s.mp4" in SUPPORTS[b]])
def test_rotation_applied(backend):
    path = DATA / "bbb_rot90_1s.mp4"  # 1280x720 coded, 90 degree display rotation
    _, frames = _read(backend, path, fps=2.0, max_side=320)
    img = frames[1].image
    assert img.shape[:2] == (320, 180), "frames must come out upright (portrait)"
    ref = ffmpeg_frame(path, frames[1].pts, (180, 320)).astype(np.float32)
    diff = np.abs(img.astype(np.float32) - ref).mean()
    wrong = np.abs(np.rot90(img, 2).astype(np.float32) - ref).mean()
    assert diff < 6 and diff < wrong / 3, (diff, wrong)


@pytest.mark.parametrize("backend,name", [c for c in CASES if c[1] in ("world_3s.mp4", "vtest_mjpeg_2s.avi")])
@pytest.mark.parametrize("max_side", [0, 200, 97])
def test_downscale_keeps_aspect(backend, name, max_side):
    path = DATA / name
    with _open(backend, path, fps=2.0, max_side=max_side) as src:
        frames = list(src)
    full = {"world_3s.mp4": (270, 480), "vtest_mjpeg_2s.avi": (288, 384)}[name]
    h, w = frames[0].image.shape[:2]
    if max_side == 0:
        assert (h, w) == full
    else:
        assert max(h, w) == max_side
        assert abs(w / h - full[1] / full[0]) < 0.03
    ref = ffmpeg_frame(path, frames[0].pts, (w, h)).astype(np.float32)
    assert np.abs(frames[0].image.astype(np.float32) - ref).mean() < 8


# frames a backend may lose at the cut of a truncated file (OpenCV's decoder threads drop
# the frames in flight when the last, partial packet fails)
TRUNCATED_SLACK = {"pyav": 0, "opencv": 3}


@pytest.mark.parametrize("backend", list(TRUNCATED_SLACK))
def test_truncated_file_reads_what_decodes(backend, caplog):
    path = DATA / "world_truncated_faststart.mp4"
    ref = ffprobe_times(path)
    caplog.set_level(logging.WARNING)
    src, frames = _read(backend, path, fps=240.0, max_side=0)
    assert len(frames) >= len(ref) - TRUNCATED_SLACK[backend] and len(frames) > 10
    assert np.allclose([f.pts for f in frames], ref[:len(frames)], atol=1e-3)
    assert src.stats.truncated
    assert src.stats.ended_at == pytest.approx(frames[-1].pts, abs=0.05)
    msgs = [r.getMessage() for r in caplog.records if "ends early" in r.getMessage()]
    assert len(msgs) == 1 and "world_truncated_faststart.mp4" in msgs[0] and "truncated" in msgs[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_complete_file_is_not_truncated(backend):
    src, frames = _read(backend, DATA / "world_3s.mp4", fps=240.0, max_side=64)
    assert not src.stats.truncated and src.stats.ended_at is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["empty", "not_a_video", "moov_end", "missing"])
def test_unopenable_file_is_one_line_source_error(backend, kind, bad_files):
    path = bad_files[kind]
    with pytest.raises(SourceError) as info:
        with _open(backend, path, fps=1.0) as src:
            list(src)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg and "fix:" in msg and "tried" in msg
    if kind == "empty":
        assert "empty (0 bytes)" in msg
    if kind == "missing":
        assert "does not exist" in msg


def test_open_source_errors_name_the_file(bad_files):
    for path in bad_files.values():
        with pytest.raises(SourceError, match=str(path.name)):
            open_source(path)


def test_damaged_packets_are_skipped_counted_and_logged_once(corrupt_video, caplog):
    caplog.set_level(logging.WARNING)
    src, frames = _read("pyav", corrupt_video, fps=240.0, max_side=0)
    clean = ffprobe_times(DATA / "world_3s.mp4")
    assert src.stats.decode_errors >= 1
    assert len(frames) >= len(clean) - 3 * 5  # the damaged packets' frames may be lost, not the rest
    assert frames[-1].pts == pytest.approx(clean[-1], abs=0.05)
    assert np.all(np.diff([f.pts for f in frames]) > 0)
    warned = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(warned) == 1


def test_box_with_slice_errors_reads_through():
    ref = ffprobe_times(DATA / "box_2s.mp4")
    src, frames = _read("pyav", DATA / "box_2s.mp4", fps=240.0, max_side=0)
    assert len(frames) == len(ref) and not src.stats.truncated



def test_decord_refuses_truncated_files_clearly():
    with pytest.raises(SourceError) as info:
        _open("decord", DATA / "world_truncated_faststart.mp4")
    msg = str(info.value)
    assert "\n" not in msg and "world_truncated_faststart.mp4" in msg
    assert "truncated" in msg and "fix: use backend 'pyav'" in msg and "/github" not in msg


@pytest.mark.parametrize("name", sorted(set(ALL_FILES) - set(SUPPORTS["decord"])))
def test_decord_refuses_codecs_it_would_crash_on(name):
    with pytest.raises(SourceError) as info:
        _open("decord", DATA / name)
    msg = str(info.value)
    assert name in msg and "vp9" in msg and "fix: use backend 'pyav'" in msg and "\n" not in msg


@pytest.mark.parametrize("fps", [1.0, 0.5, 0.4])
def test_sparse_sampling_decodes_less_for_the_same_frames(fps):
    """Automatic mode on a file with a keyframe every second seeks past keyframe groups that
    hold no sample: the same frames as decoding everything, from far fewer decoded frames."""
    path = DATA / "world_3s.mp4"
    with _open("pyav", path, fps=fps, max_side=0, decode_mode="sequential") as seq:
        a = list(seq)
    with _open("pyav", path, fps=fps, max_side=0) as auto:
        b = list(auto)
    assert auto.mode == "seek"
    assert [f.pts for f in a] == [f.pts for f in b]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert auto.frames_decoded < seq.frames_decoded / 2, (auto.frames_decoded, seq.frames_decoded)


def test_keyframes_mode_delivers_keyframes_only():
    import av

    path = DATA / "world_3s.mp4"
    with av.open(str(path)) as c:
        keys = sorted(float(p.pts * p.time_base) for p in c.demux(video=0) if p.is_keyframe and p.pts is not None)
    with _open("pyav", path, fps=240.0, max_side=0, decode_mode="keyframes") as src:
        got = [f.pts for f in src]
    assert got == pytest.approx(keys, abs=1e-3) and len(keys) == 3
    assert not src.stats.truncated  # only keyframes were decoded, yet the file was complete
