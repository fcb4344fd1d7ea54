"""Needles: the things hidden in a haystack video, and the pictures that are spliced in.

Two kinds of needle:

- **image**: a PNG/JPG picture (alpha honoured) pasted onto the video frames;
- **text**: a sign (a light board with a dark border) carrying a sentence, e.g.
  "The wifi password is tulip-42".

A needle *set* is a directory of pictures with an optional ``needles.json`` that gives each
file a short ``name`` (the label questions use), a ``category`` and a ``description``::

    [{"file": "food__apple_red.png", "category": "food", "name": "apple red",
      "description": "A red apple."}, ...]

Without ``needles.json`` every picture in the directory is a needle whose label is its file
stem with ``_``/``-`` read as spaces.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from streamvid.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
    "/Library/Fonts/DejaVuSans-Bold.ttf",
)


@dataclass(frozen=True)
class NeedleEntry:
    """One picture of a needle set: where it is and what it is called."""

    path: str
    label: str
    category: str = ""
    description: str = ""


def load_needle_set(directory: str | Path) -> list[NeedleEntry]:
    """The needles of a directory, in a stable order (by file name).

    Reads ``needles.json`` when present, else lists the pictures in the directory.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"needle set {d} is not a directory; fix: point niah.needles.dir at a "
                          "folder of PNG/JPG pictures (optionally with a needles.json)")
    meta = d / "needles.json"
    entries: list[NeedleEntry] = []
    if meta.is_file():
        try:
            items = json.loads(meta.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{meta} is not valid JSON ({err.msg} at line {err.lineno}); "
                              "fix: a list of {file, name, category, description} objects") from err
        if not isinstance(items, list):
            raise ConfigError(f"{meta}: expected a list of objects, got {type(items).__name__}")
        for i, it in enumerate(items):
            if not isinstance(it, dict) or "file" not in it:
                raise ConfigError(f"{meta}: entry {i} needs a 'file' key, got {it!r}")
            p = d / str(it["file"])
            if not p.is_file():
                raise ConfigError(f"{meta}: entry {i} names {p.name}, which is not in {d}")
            label = str(it.get("name") or _label_from_stem(p.stem))
            entries.append(NeedleEntry(str(p), label, str(it.get("category", "")),
                                       str(it.get("description", ""))))
    else:
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                cat, _, _ = p.stem.partition("__") if "__" in p.stem else ("", "", "")
                entries.append(NeedleEntry(str(p), _label_from_stem(p.stem), cat))
    if not entries:
        raise ConfigError(f"needle set {d} has no pictures ({', '.join(IMAGE_SUFFIXES)}); "
                          "fix: add needle images or point at another folder")
    entries.sort(key=lambda e: Path(e.path).name)
    return entries


def _label_from_stem(stem: str) -> str:
    stem = stem.split("__", 1)[-1]
    return " ".join(stem.replace("-", " ").replace("_", " ").split())


def choose_needles(entries: Sequence[NeedleEntry], k: int, seed: int,
                   exclude: Sequence[str] = ()) -> list[NeedleEntry]:
    """``k`` distinct needles (distinct labels), drawn with ``seed``, never from ``exclude``."""
    pool: list[NeedleEntry] = []
    seen = {lbl.lower() for lbl in exclude}
    for e in entries:
        if e.label.lower() not in seen:
            pool.append(e)
            seen.add(e.label.lower())
    if k > len(pool):
        raise ConfigError(f"asked for {k} distinct needles but the needle set has only {len(pool)} "
                          "distinct labels; fix: lower the needle count or add pictures")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(pool), size=k, replace=False)
    return [pool[int(i)] for i in idx]


# --------------------------------------------------------------------------- sprites


def load_rgba(path: str | Path) -> np.ndarray:
    """A picture as ``[H, W, 4]`` uint8 RGBA, cropped to its visible (alpha > 0) part."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise SourceError(f"needle image {p} does not exist; fix: give the path of a PNG/JPG file")
    try:
        with Image.open(p) as im:
            im.load()
            rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as err:
        raise SourceError(f"needle image {p} cannot be read as a picture ({err}); "
                          "fix: give a PNG or JPG file") from err
    ys, xs = np.nonzero(rgba[:, :, 3] > 0)
    if len(ys) == 0:
        raise SourceError(f"needle image {p} is fully transparent; fix: give a visible picture")
    return rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _font(size: int):
    from PIL import ImageFont

    for cand in _FONT_CANDIDATES:
        if Path(cand).is_file():
            return ImageFont.truetype(cand, size=size)
    return ImageFont.load_default(size=size)


def render_sign(text: str, *, font_size: int = 40, max_chars: int = 36) -> np.ndarray:
    """A sign carrying ``text``: ``[H, W, 4]`` RGBA, dark text on a light board with a border.

    Long sentences wrap onto several lines of at most ``max_chars`` characters.
    """
    from PIL import Image, ImageDraw

    if not text.strip():
        raise ConfigError("a text needle needs a non-empty sentence; fix: set its text")
    lines = _wrap(text.strip(), max_chars)
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    boxes = [probe.textbbox((0, 0), ln, font=font) for ln in lines]
    line_h = max(b[3] - b[1] for b in boxes)
    gap = max(2, font_size // 4)
    pad = max(6, font_size // 2)
    border = max(2, font_size // 10)
    w = max(b[2] - b[0] for b in boxes) + 2 * pad
    h = len(lines) * line_h + (len(lines) - 1) * gap + 2 * pad
    im = Image.new("RGBA", (w, h), (250, 246, 225, 255))
    dr = ImageDraw.Draw(im)
    dr.rectangle([0, 0, w - 1, h - 1], outline=(30, 30, 30, 255), width=border)
    y = pad
    for ln, b in zip(lines, boxes):
        x = (w - (b[2] - b[0])) // 2 - b[0]
        dr.text((x, y - b[1]), ln, font=font, fill=(15, 15, 15, 255))
        y += line_h + gap
    return np.asarray(im, dtype=np.uint8).copy()


def _wrap(text: str, max_chars: int) -> list[str]:
    lines: list[str] = []
    cur = ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > max_chars:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        lines.append(cur)
    return lines


def scale_to_area(rgba: np.ndarray, area: float, frame_size: tuple[int, int]) -> np.ndarray:
    """Resize a sprite, keeping its aspect, to cover ``area`` of a ``(width, height)`` frame.

    The sprite never exceeds the frame; it is at least 4 pixels on each side.
    """
    from PIL import Image

    fw, fh = frame_size
    h, w = rgba.shape[:2]
    target = area * fw * fh
    s = (target / float(w * h)) ** 0.5
    s = min(s, fw / w, fh / h)
    nw, nh = max(4, int(round(w * s))), max(4, int(round(h * s)))
    if (nw, nh) == (w, h):
        return rgba
    im = Image.fromarray(rgba, "RGBA").resize((nw, nh), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8).copy()


def scale_to_height(rgba: np.ndarray, height: float, frame_size: tuple[int, int]) -> np.ndarray:
    """Resize a sprite, keeping its aspect, to ``height`` of a ``(width, height)`` frame's height.

    The sprite is at most as wide as the frame and at least 4 pixels on each side.
    """
    from PIL import Image

    fw, fh = frame_size
    h, w = rgba.shape[:2]
    s = min(height * fh / h, fw / w)
    nw, nh = max(4, int(round(w * s))), max(4, int(round(h * s)))
    if (nw, nh) == (w, h):
        return rgba
    im = Image.fromarray(rgba, "RGBA").resize((nw, nh), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8).copy()


def composite(frame: np.ndarray, sprite: np.ndarray, x0: int, y0: int) -> None:
    """Alpha-blend an RGBA sprite onto an RGB frame in place, top-left corner at ``(x0, y0)``.

    The part of the sprite outside the frame (``x0``/``y0`` may be negative) is cut off.
    """
    fh, fw = frame.shape[:2]
    cx, cy = max(0, -x0), max(0, -y0)
    sprite = sprite[cy:max(cy, fh - y0), cx:max(cx, fw - x0)]
    x0, y0 = x0 + cx, y0 + cy
    h, w = sprite.shape[:2]
    region = frame[y0:y0 + h, x0:x0 + w]
    alpha = sprite[:, :, 3:4].astype(np.float32) / 255.0
    blended = sprite[:, :, :3].astype(np.float32) * alpha + region.astype(np.float32) * (1.0 - alpha)
    region[...] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def query_image(rgba: np.ndarray, *, background: int = 255, margin: float = 0.1) -> np.ndarray:
    """A needle picture as an RGB query image: flattened onto a plain background with a margin."""
    h, w = rgba.shape[:2]
    m = int(round(max(h, w) * margin))
    out = np.full((h + 2 * m, w + 2 * m, 3), background, dtype=np.uint8)
    composite(out, rgba, m, m)
    return out
