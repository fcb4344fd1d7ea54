"""Pick a frame source from what the user typed: a file, a folder of images, a stream URL,
or a camera."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..config import SourceConfig
from ..errors import ConfigError, SourceError
from ..types import FrameSource

LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "srt://", "udp://", "tcp://")
FILE_SCHEMES = ("http://", "https://")
FILE_BACKENDS = ("pyav", "opencv", "decord")


def backend_for(uri: str, config: SourceConfig) -> str:
    """The backend name ``open_source`` would use for ``uri``."""
    low = uri.lower()
    chosen = config.backend
    if low.startswith(LIVE_SCHEMES):
        if chosen in ("auto", "rtsp"):
            return "rtsp"
        if chosen == "opencv":
            return "opencv"
        raise ConfigError(f"source.backend {chosen!r} cannot read the stream {uri}; fix: use backend "
                          "'auto' or 'rtsp'")
    if re.fullmatch(r"\d+", uri) or re.fullmatch(r"/dev/video\d+", uri):
        if chosen in ("auto", "camera"):
            return "camera"
        raise ConfigError(f"source.backend {chosen!r} cannot read the camera {uri}; fix: use backend "
                          "'auto' or 'camera'")
    if low.startswith(FILE_SCHEMES):
        return "pyav" if chosen == "auto" else chosen
    path = Path(uri)
    if chosen != "auto":
        return chosen
    if path.is_dir():
        return "images"
    return "pyav"


def open_source(uri: str | Path, config: SourceConfig | None = None, **kw: Any) -> FrameSource:
    """Open ``uri`` as a frame source.

    - a video file: ``config.backend`` (``auto`` = PyAV);
    - a folder of images: the image-folder source;
    - ``rtsp://``, ``rtsps://`` (and other live URLs FFmpeg reads): the reconnecting live source;
    - ``http(s)://`` files: PyAV;
    - a camera index such as ``"0"`` or ``/dev/video0``: the OpenCV camera;
    - a file with audio and no video: the audio-only source (no frames, only audio).

    ``source_id`` (keyword) defaults to the file name, or the URI for streams and cameras.
    Raises SourceError (one line naming the input and the fix) when it cannot be opened.
    """
    from . import SOURCES

    if config is None:
        config = SourceConfig()
    if not isinstance(config, SourceConfig):
        raise ConfigError(f"open_source({uri!s}): config must be a SourceConfig, got {type(config).__name__}")
    uri = str(uri)
    if not uri.strip():
        raise SourceError("cannot open an empty source name; fix: pass a video path, a folder, "
                          "an rtsp:// URL or a camera index")
    name = backend_for(uri, config)
    if name in FILE_BACKENDS:
        from .audio import is_audio_only

        if is_audio_only(uri):  # a recording without pictures: its speech alone
            name = "audio"
    return SOURCES.create(name, uri=uri, config=config, **kw)
