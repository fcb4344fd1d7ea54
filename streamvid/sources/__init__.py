"""Frame sources: files, cameras and network streams, behind one registry.

``open_source(uri, config)`` picks a backend by URI; ``create_source(name, uri, config)``
asks for one by name. Backends register with ``@register_source("name")``.
"""

from __future__ import annotations

from ..registry import Registry
from ..types import FrameSource

SOURCES: Registry[FrameSource] = Registry("frame source")
SOURCES.register_lazy("pyav", "streamvid.sources.pyav_source", package="av")
SOURCES.register_lazy("rtsp", "streamvid.sources.live", package="av")
SOURCES.register_lazy("opencv", "streamvid.sources.opencv_source", package="opencv-python-headless", extra="opencv")
SOURCES.register_lazy("camera", "streamvid.sources.opencv_source", package="opencv-python-headless", extra="opencv")
SOURCES.register_lazy("decord", "streamvid.sources.decord_source", package="decord", extra="decord")
SOURCES.register_lazy("audio", "streamvid.sources.audio", package="av")
SOURCES.register_lazy("images", "streamvid.sources.images", package="pillow")


def register_source(name: str):
    return SOURCES.register(name)


def create_source(name: str, uri: str, config=None, **kw) -> FrameSource:
    from ..config import SourceConfig

    return SOURCES.create(name, uri=uri, config=config or SourceConfig(), **kw)


def open_source(uri: str, config=None, **kw) -> FrameSource:  # filled in by the sources work
    from .open import open_source as _open

    return _open(uri, config, **kw)
