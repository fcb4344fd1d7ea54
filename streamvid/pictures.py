"""Frame pictures: the pixels kept of sampled frames, and finding a query picture in them.

A vision encoder's token sees a cell of the frame (40 pixels of a 640x360 frame for the lite
encoder's 9x16 grid); a thing smaller than that hardly changes any token, so the stored
tokens cannot tell where it was. The pixels can. At ingest a clip keeps a JPEG of each of
its sampled frames (:func:`frame_pictures`; a frame that did not change against the last
kept one is not kept again), and an image question searches the pictures of its best
clips for the query picture (:class:`PictureMatcher`): normalised cross-correlation at
every place and at sizes from a few pixels to most of the frame, on an image pyramid so
that each size is matched at a resolution where it spans ``TEMPLATE_MIN``..``2 *
TEMPLATE_MIN`` pixels. Grey levels find the candidates; each size's best places are then
checked in colour, and a picture's score is the best colour correlation found. A cut-out's
transparent pixels are left out (in the grey search they hold the picture's mean grey, which
correlates with nothing); a picture that is partly outside the frame is matched against a
frame padded on every side.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

PICTURE_QUALITY = 75       # JPEG quality of kept frame pictures
PICTURE_CHANGE = 6.0       # a frame is kept when a 32-px-wide grey thumbnail cell moved this much
TEMPLATE_MIN = 9           # pixels: the smallest query size searched at full resolution ...
SCALES_PER_OCTAVE = 5      # ... and sizes per doubling
MIN_HEIGHT = 0.025         # smallest needle searched, as a fraction of the frame height
MAX_HEIGHT = 0.9           # ... largest
OUTSIDE = 0.5              # a needle may lie this fraction of its height and width outside the frame
PEAKS = 3                  # grey candidates per size checked in colour
THREADS = min(4, os.cpu_count() or 1)   # pictures searched at once


def frame_pictures(frames: Sequence[tuple[float, np.ndarray]], max_side: int
                   ) -> tuple[tuple[float, bytes], ...]:
    """``(time, JPEG)`` of the ``(time, RGB frame)`` that changed against the previous kept
    one (the first always), shrunk so the longer side is at most ``max_side``."""
    import cv2

    from .io import encode_jpeg

    out: list[tuple[float, bytes]] = []
    last: np.ndarray | None = None
    for t, img in frames:
        h, w = img.shape[:2]
        thumb = cv2.resize(cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY),
                           (32, max(1, round(32 * h / w))), interpolation=cv2.INTER_AREA
                           ).astype(np.float32)
        if last is not None and last.shape == thumb.shape and \
                float(np.abs(thumb - last).max()) < PICTURE_CHANGE:
            continue
        last = thumb
        out.append((float(t), encode_jpeg(img, max_side=max_side, quality=PICTURE_QUALITY)))
    return tuple(out)


def _decode(jpeg: bytes) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a JPEG")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class PictureMatcher:
    """Finds one query picture (RGB, with its opacity ``alpha`` in 0..1) in frame pictures."""

    def __init__(self, rgb: np.ndarray, alpha: np.ndarray):
        self.rgb = np.ascontiguousarray(rgb[..., :3])
        self.alpha = np.asarray(alpha, np.float32)
        self.cutout = bool((self.alpha < 0.5).any())
        self._templates: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}

    def _template(self, th: int, tw: int):
        """The query at ``th x tw`` pixels: colour, grey (a cut-out's transparent pixels
        at its mean grey), and its mask (None when opaque)."""
        key = (th, tw)
        if key not in self._templates:
            import cv2

            interp = cv2.INTER_AREA if th < self.rgb.shape[0] else cv2.INTER_LINEAR
            col = cv2.resize(self.rgb, (tw, th), interpolation=interp)
            grey = cv2.cvtColor(col, cv2.COLOR_RGB2GRAY).astype(np.float32)
            mask = None
            if self.cutout:
                opaque = cv2.resize(self.alpha, (tw, th), interpolation=interp) >= 0.5
                if opaque.any():
                    grey[~opaque] = grey[opaque].mean()
                mask = opaque.astype(np.uint8)
            self._templates[key] = (col, grey, mask)
        return self._templates[key]

    @staticmethod
    def sizes(frame_h: int) -> list[tuple[int, float]]:
        """Query sizes searched in a frame ``frame_h`` pixels high, ``(level, height)``:
        the query ``height`` pixels high in the frame, matched at pyramid ``level`` (the
        resolution halved ``level`` times)."""
        lo, hi = MIN_HEIGHT * frame_h, MAX_HEIGHT * frame_h
        out = []
        k = 0
        while True:
            h = max(lo, TEMPLATE_MIN) * 2 ** (k / SCALES_PER_OCTAVE)
            if h > hi:
                break
            k += 1
            level = max(0, int(np.floor(np.log2(h / TEMPLATE_MIN) + 1e-9)))
            out.append((level, h))
        return out

    def score(self, picture: np.ndarray) -> float:
        """The best colour correlation of the query anywhere in ``picture`` (RGB), at any
        searched size (-1 when no size fits). Only the part of the query inside the frame
        counts."""
        import cv2

        fh, fw = picture.shape[:2]
        ih, iw = self.rgb.shape[:2]
        aspect = iw / ih
        levels: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, int, int]] = {}
        best = -1.0
        for level, h in self.sizes(fh):
            if level not in levels:   # the frame at this level, padded for the largest size there
                img = picture if level == 0 else cv2.resize(
                    picture, (max(1, round(fw / 2 ** level)), max(1, round(fh / 2 ** level))),
                    interpolation=cv2.INTER_AREA)
                ph = int(np.ceil(OUTSIDE * 2 * TEMPLATE_MIN))
                pw = int(np.ceil(OUTSIDE * 2 * TEMPLATE_MIN * aspect))
                padded = cv2.copyMakeBorder(img, ph, ph, pw, pw, cv2.BORDER_CONSTANT, value=0)
                inside = np.zeros(padded.shape[:2], np.uint8)
                inside[ph:ph + img.shape[0], pw:pw + img.shape[1]] = 1
                grey = cv2.cvtColor(padded, cv2.COLOR_RGB2GRAY).astype(np.float32)
                levels[level] = (padded, grey, inside, ph, pw)
            padded, grey_frame, inside, ph, pw = levels[level]
            f = 2 ** level
            th = max(2, int(round(h / f)))
            tw = max(2, int(round(h * aspect / f)))
            # places where at most OUTSIDE of the query's height and width is off the frame
            y0, x0 = ph - int(OUTSIDE * th), pw - int(OUTSIDE * tw)
            y1 = padded.shape[0] - ph + int(OUTSIDE * th)
            x1 = padded.shape[1] - pw + int(OUTSIDE * tw)
            if min(th, tw) < 3 or y1 - y0 < th or x1 - x0 < tw:
                continue
            col, grey, mask = self._template(th, tw)
            r = cv2.matchTemplate(grey_frame[y0:y1, x0:x1], grey, cv2.TM_CCOEFF_NORMED)
            for y, x in _peaks(r, PEAKS, max(1, min(th, tw) // 2)):
                y, x = y + y0, x + x0
                keep = inside[y:y + th, x:x + tw]
                if mask is not None:
                    keep = keep & mask
                best = max(best, _colour_ncc(padded[y:y + th, x:x + tw], col, keep))
        return best

    def scores(self, jpegs: Iterable[bytes]) -> list[float]:
        """:meth:`score` of each JPEG (-1 for one that cannot be decoded), on a few threads."""
        from concurrent.futures import ThreadPoolExecutor

        def one(j: bytes) -> float:
            try:
                return self.score(_decode(j))
            except ValueError:
                return -1.0

        jpegs = list(jpegs)
        if len(jpegs) < 2:
            return [one(j) for j in jpegs]
        with ThreadPoolExecutor(max_workers=min(THREADS, len(jpegs))) as pool:
            return list(pool.map(one, jpegs))


def _peaks(r: np.ndarray, k: int, gap: int) -> list[tuple[int, int]]:
    """Up to ``k`` best places of a correlation map (changed), at least ``gap`` apart."""
    import cv2

    out = []
    for _ in range(k):
        _, top, _, (x, y) = cv2.minMaxLoc(r)
        if not top > -1.0:
            break
        out.append((y, x))
        r[max(0, y - gap):y + gap + 1, max(0, x - gap):x + gap + 1] = -2.0
    return out


def _colour_ncc(win: np.ndarray, tmpl: np.ndarray, mask: np.ndarray) -> float:
    """How alike two same-sized RGB patches are over the mask's pixels: their normalised
    cross-correlation with each colour channel centred on its own mean (the same pattern),
    or, if lower, centred on mid-grey (the same colours too: the picture shown is the
    picture asked about, not a pattern of other colours that happens to follow it)."""
    a = win.astype(np.float32).reshape(-1, 3)
    b = tmpl.astype(np.float32).reshape(-1, 3)
    m = mask.reshape(-1) > 0
    a, b = a[m], b[m]
    if len(a) < 4:
        return -1.0
    out = 1.0
    for ca, cb in ((a - a.mean(axis=0), b - b.mean(axis=0)), (a - 128.0, b - 128.0)):
        den = float(np.sqrt((ca * ca).sum() * (cb * cb).sum()))
        out = min(out, float((ca * cb).sum() / den) if den > 1e-6 else -1.0)
    return out
