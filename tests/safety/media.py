"""Small hostile media made at test time with PyAV (no files from outside tests/)."""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data"


def audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An .mp4 holding one AAC audio stream and no video."""
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("aac", rate=16000)
        n = int(16000 * seconds)
        t = np.arange(n) / 16000.0
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for pkt in st.encode(frame):
            out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


def video(path: Path, width: int, height: int, frames: int = 3, fps: int = 1) -> Path:
    """A tiny video of ``frames`` noisy frames of the given size (FFV1 in Matroska: any size)."""
    import av

    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        st = out.add_stream("ffv1", rate=fps)
        st.width, st.height, st.pix_fmt = width, height, "yuv444p"
        st.time_base = Fraction(1, fps)
        for i in range(frames):
            g = ((xx * 7 + yy * 3 + 40 * i) % 256).astype(np.uint8)
            img = np.stack([g, 255 - g, np.full_like(g, 60 * i % 256)], axis=-1)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for pkt in st.encode(f):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def looped(src: Path, times: int, path: Path) -> Path:
    """``src`` repeated ``times`` times (packets copied, timestamps shifted): a long real video."""
    import av

    with av.open(str(src)) as inp:
        ist = inp.streams.video[0]
        span = 0
        with av.open(str(path), "w") as out:
            ost = out.add_stream_from_template(ist)
            for k in range(times):
                inp.seek(0)
                off, last = k * span, 0
                for pkt in inp.demux(ist):
                    if pkt.dts is None:
                        continue
                    last = max(last, pkt.pts + (pkt.duration or 0))
                    pkt.pts += off
                    pkt.dts += off
                    pkt.stream = ost
                    out.mux(pkt)
                span = span or last
    return path
