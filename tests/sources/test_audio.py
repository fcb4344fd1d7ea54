"""The audio side channel of file sources: 16 kHz mono chunks in step with the frames, on the
frames' clock, bounded by source.start/duration; no audio track gives nothing."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from streamvid.config import SourceConfig
from streamvid.sources import create_source, open_source

from conftest import DATA

VIDEO = DATA / "world_8s.mp4"


@pytest.fixture(scope="module")
def toned(tmp_path_factory) -> Path:
    """The 8 s fixture with a 44.1 kHz stereo AAC track: a 440 Hz tone from 3 s to 5 s."""
    import av

    out = tmp_path_factory.mktemp("audio") / "toned.mp4"
    rate = 44100
    t = np.arange(8 * rate) / rate
    tone = np.where((t >= 3) & (t < 5), 0.4 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
    with av.open(str(VIDEO)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        aout = dst.add_stream("aac", rate=rate, layout="stereo")
        for pkt in src.demux(vin):
            if pkt.dts is None:
                continue
            pkt.stream = vout
            dst.mux(pkt)
        for i in range(0, len(tone), 1024):
            x = tone[i:i + 1024]
            fr = av.AudioFrame.from_ndarray(np.stack([x, x]), format="fltp", layout="stereo")
            fr.sample_rate, fr.pts, fr.time_base = rate, i, Fraction(1, rate)
            for p in aout.encode(fr):
                dst.mux(p)
        for p in aout.encode(None):
            dst.mux(p)
    return out


@pytest.mark.parametrize("backend", ["pyav", "opencv", "decord"])
def test_audio_in_step_with_the_frames(toned, backend):
    src = create_source(backend, str(toned), SourceConfig(fps=1.0))
    with src:
        assert src.has_audio
        got = []
        for f in src:
            chunks = src.read_audio(f.pts)
            assert all(c.start < f.pts for c in chunks)   # nothing from after this frame
            got += chunks
        got += src.read_audio(math.inf)
    starts = np.array([c.start for c in got])
    assert np.all(np.diff(starts) > 0) and all(c.rate == 16000 and c.samples.ndim == 1 for c in got)
    audio = np.concatenate([c.samples for c in got])
    assert abs(len(audio) / 16000 - 8.0) < 0.2
    env = lambda a, b: float(np.abs(audio[int(a * 16000):int(b * 16000)]).max())  # noqa: E731
    assert env(3.2, 4.8) > 0.3 and env(0.5, 2.8) < 0.02 and env(5.3, 7.5) < 0.02


def test_start_and_duration_bound_the_audio(toned):
    with open_source(str(toned), SourceConfig(start=2.0, duration=4.0)) as src:
        got = src.read_audio(math.inf)
    assert got[0].start == pytest.approx(2.0, abs=0.01)
    assert got[-1].end == pytest.approx(6.0, abs=0.01)


def test_no_audio_track_gives_nothing():
    with open_source(str(VIDEO)) as src:
        assert not src.has_audio
        assert src.read_audio(math.inf) == []
