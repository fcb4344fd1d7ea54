"""A folder of images read as a video: one image per frame, in natural name order
(``img2.png`` before ``img10.png``).

Images carry no presentation times, so image ``i`` is placed at ``i / config.fps`` seconds:
every image is one sample, and ``config.start`` / ``config.duration`` select by that time.
EXIF orientation is applied so frames come out upright.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import SourceConfig
from ..errors import SourceError
from ..types import Frame, FrameSource, SourceStats
from . import register_source
from ._common import first_line, identify, scaled_size

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})


def _natural_key(path: Path) -> list[object]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", path.name)]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, in natural order."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=_natural_key)


@register_source("images")
class ImageFolderSource(FrameSource):
    """The images in a folder as frames at ``config.fps`` images per second."""

    def __init__(self, uri: str, config: SourceConfig | None = None, source_id: str | None = None) -> None:
        identify(self, uri, config, source_id)
        folder = Path(self.uri)
        if not folder.is_dir():
            what = "it does not exist" if not folder.exists() else "it is not a folder"
            raise SourceError(f"cannot open image folder {self.uri}: {what} (tried the image-folder "
                              f"source); fix: pass a folder of images, or a video file with backend 'auto'")
        self._files = list_images(folder)
        if not self._files:
            raise SourceError(f"cannot open image folder {self.uri}: it holds no images "
                              f"({', '.join(sorted(IMAGE_SUFFIXES))}) (tried the image-folder source); "
                              f"fix: point it at the folder that holds the frames")
        self._rate = Fraction(self.config.fps).limit_denominator(1001)
        self._logged = False

    @property
    def fps(self) -> Fraction | None:
        return self._rate

    @property
    def duration(self) -> float | None:
        return len(self._files) / float(self._rate)

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    def _load(self, path: Path) -> np.ndarray | None:
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                im = im.convert("RGB")
                w, h = scaled_size(im.width, im.height, self.config.max_side)
                if (w, h) != im.size:
                    im = im.resize((w, h), Image.BILINEAR, reducing_gap=2.0)
                return np.asarray(im, dtype=np.uint8).copy()
        except (UnidentifiedImageError, OSError, ValueError) as err:
            self._stats.decode_errors += 1
            if not self._logged:
                self._logged = True
                log.warning("%s: skipping unreadable image %s (%s); further ones are only counted in "
                            "stats.decode_errors", self.uri, path.name, first_line(err))
            return None

    def __iter__(self) -> Iterator[Frame]:
        self._stats = SourceStats()
        cfg = self.config
        step = 1.0 / float(self._rate)
        end = None if cfg.duration is None else cfg.start + cfg.duration
        for i, path in enumerate(self._files):
            t = i * step
            if t < cfg.start - 1e-9:
                continue
            if end is not None and t >= end - 1e-9:
                return
            img = self._load(path)
            if img is None:
                continue
            frame = Frame(pts=t, index=self._stats.frames, image=img, source_id=self.source_id)
            self._stats.frames += 1
            yield frame
