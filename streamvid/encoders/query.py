"""Image queries: loading and checking the picture, and the views of it that retrieval matches.

A picture asked about ("when does this appear?") is looked for among the tokens a vision
encoder kept of every frame. A token of a frame sees what is under it together with its
surroundings, at the scale it has in the frame; the query picture encoded on its own never
looks like that. So the query is pasted into plain frames, at sizes that span the token
grid (from half a token to nearly the whole frame: a thing may be far away or fill the
view), on a few plain shades (a cut-out lets the shade show through, as a scene would), and
each of these *views* keeps, with their layout, the tokens under the picture that changed
against the plain frame. Only those under it: a token's receptive field reaches far beyond
its cell, so on a plain frame even a picture half a token wide changes a 5x5 block, but in
a scene those neighbours are ruled by the scene, not by the picture. Retrieval then scores how
well a frame shows one view, laid out as in the view (``memory.retrieval``); this module only
prepares the views and knows nothing of stores.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import QueryError
from ..types import EncoderOutput, VisionEncoder

log = logging.getLogger(__name__)

MAX_QUERY_PIXELS = 50_000_000   # a query picture larger than this is refused before decoding
MIN_QUERY_SIDE = 16             # ... one smaller than this on a side has nothing to match
MIN_QUERY_STD = 2.0             # ... and an opaque one this plain (std of its pixels, 0-255) too

VIEW_FRAME = (360, 640)               # the plain frame views are pasted into (rows, columns)
VIEW_SPANS = (0.5, 1, 2, 3.5, 5.5, 8)  # sizes of the views: tokens of the grid the query spans
VIEW_SHADES = (128, 16, 240)          # grey levels of the plain frames (first: the query alone)
VIEW_CHANGE = 0.3                     # a view keeps the tokens under the picture changed this much
VIEW_TOKENS = 24                      # (of the most) ... at most this many, the most changed


def load_image(path: str | Path) -> np.ndarray:
    """An image file as upright uint8 ``[H, W, 3]`` RGB, or ``[H, W, 4]`` RGBA when it has
    transparent pixels (a cut-out: retrieval looks for the opaque part only).

    Pictures over :data:`MAX_QUERY_PIXELS` are refused before they are decoded; pictures too
    small or too plain to match anything (one flat colour) are refused with a message that
    says so, rather than answered with a meaningless moment.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise QueryError(f"image query {p} does not exist; fix: pass the path of a PNG or JPEG file")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > MAX_QUERY_PIXELS:
                raise QueryError(f"image query {p} is {w}x{h} pixels, more than the "
                                 f"{MAX_QUERY_PIXELS // 1_000_000} megapixels a query picture "
                                 "may have; fix: shrink it (a query needs no more than ~1000 "
                                 "pixels a side)")
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "P"):
                rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
                img = rgba if (rgba[..., 3] < 255).any() else rgba[..., :3]
            else:
                img = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as err:
        raise QueryError(f"image query {p} is too large to open safely ({err}); fix: shrink "
                         "it") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise QueryError(f"image query {p} cannot be read as an image ({err.__class__.__name__}); "
                         f"fix: pass a PNG or JPEG file") from err
    check_matchable(img, p)
    return np.ascontiguousarray(img)


def check_matchable(img: np.ndarray, p: Path | str = "image") -> None:
    """Refuse a picture too small or too plain for a visual match to mean anything."""
    h, w = img.shape[:2]
    if min(h, w) < MIN_QUERY_SIDE:
        raise QueryError(f"image query {p} is {w}x{h} pixels, too small to match anything; "
                         f"fix: pass a picture at least {MIN_QUERY_SIDE} pixels on each side")
    rgb = img[..., :3]
    if img.shape[-1] == 4:
        opaque = img[..., 3] >= 128
        if opaque.sum() < MIN_QUERY_SIDE * MIN_QUERY_SIDE:
            raise QueryError(f"image query {p} is almost entirely transparent, nothing to match; "
                             "fix: pass a picture of the thing to find")
        if not opaque.all():
            return  # a cut-out: its outline is what is looked for, even in one flat colour
    if float(rgb.reshape(-1, 3).astype(np.float32).std(axis=0).max()) < MIN_QUERY_STD:
        raise QueryError(f"image query {p} is one flat colour, too plain to match anything; "
                         "fix: pass a picture of the thing to find")


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[H, W, 3]`` RGB and ``[H, W]`` float opacity in 0..1 of an RGB or RGBA image."""
    image = np.ascontiguousarray(image)
    if image.shape[2] == 4:
        return np.ascontiguousarray(image[..., :3]), image[..., 3].astype(np.float32) / 255.0
    return image, np.ones(image.shape[:2], np.float32)


def composite(rgb: np.ndarray, alpha: np.ndarray, shade: int) -> np.ndarray:
    """An RGB picture with opacity laid over a plain ``shade``."""
    a = alpha[..., None]
    return np.clip(rgb.astype(np.float32) * a + shade * (1 - a) + 0.5, 0, 255).astype(np.uint8)


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-8)


@dataclass(frozen=True)
class QueryView:
    """An image query seen in context: its changed tokens ``[m, D]`` (unit), their weights
    (summing to 1), their grid offsets ``[m]`` from the weighted centre, and their weighted
    mean (unit), used to find candidates."""

    tokens: np.ndarray
    weights: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    mean: np.ndarray


@dataclass(frozen=True)
class QueryViews:
    """What retrieval needs of an image query: its pooled vector ``[D]`` (unit), its views
    and the token grid ``(rows, columns)`` they are laid out on."""

    pooled: np.ndarray
    views: tuple[QueryView, ...]
    grid: tuple[int, int]


class QueryEncoder:
    """Encodes image queries into :class:`QueryViews` with a vision encoder (the plain
    frames' tokens are computed once and kept). An encoder whose calls may run at once on
    several threads, each on one core (``concurrent``), encodes the views on every core."""

    def __init__(self, encoder: VisionEncoder):
        self.encoder = encoder
        self.encode_seconds = 0.0   # wall time spent encoding views
        self._blank_tokens: np.ndarray | None = None
        self._grid = (0, 0)
        self._pool: ThreadPoolExecutor | None = None

    def _encode(self, images: list[np.ndarray]) -> EncoderOutput:
        t0 = time.perf_counter()
        n = min(len(images), os.cpu_count() or 1) if getattr(self.encoder, "concurrent", False) else 1
        if n <= 1:
            out = self.encoder.encode(images)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(n, thread_name_prefix="query-views")
            cut = np.linspace(0, len(images), n + 1).round().astype(int)
            parts = list(self._pool.map(self.encoder.encode,
                                        [images[a:b] for a, b in zip(cut[:-1], cut[1:])]))
            out = EncoderOutput(np.concatenate([p.tokens for p in parts]),
                                np.concatenate([p.pooled for p in parts]), parts[0].grid)
        self.encode_seconds += time.perf_counter() - t0
        return out

    def views(self, image: np.ndarray) -> QueryViews:
        """The pooled vector, the in-context views and the token grid of ``image`` (RGB or
        RGBA uint8).

        The view sizes are set on the encoder's token grid: in view ``k`` the query's longer
        side spans ``VIEW_SPANS[k]`` tokens (never more than the frame). Each view keeps the
        tokens whose cells the picture's opaque pixels cover and that changed against the
        plain frame (at least ``VIEW_CHANGE`` of the most changed of them, at most
        ``VIEW_TOKENS``), weighted by how much. The cells are placed as an encoder that
        letterboxes the frame into its grid places them.
        """
        import cv2

        h, w = VIEW_FRAME
        rgb, alpha = split_alpha(image)
        ih, iw = rgb.shape[:2]
        blanks = [np.full((h, w, 3), v, np.uint8) for v in VIEW_SHADES]
        if self._blank_tokens is None:   # the plain frames encode the same every time
            plain = self._encode(blanks)
            self._blank_tokens, self._grid = plain.tokens, (int(plain.grid[0]), int(plain.grid[1]))
        gh, gw = self._grid
        canvases, base_of, under = [], [], []
        for span in VIEW_SPANS:
            # the scale at which the query's longer side spans `span` tokens
            s = min(span / max(ih / h * gh, iw / w * gw), h / ih, w / iw)
            nh, nw = max(2, min(h, int(round(ih * s)))), max(2, min(w, int(round(iw * s))))
            interp = cv2.INTER_AREA if nh < ih else cv2.INTER_LINEAR
            small = cv2.resize(rgb, (nw, nh), interpolation=interp).astype(np.float32)
            a = cv2.resize(alpha, (nw, nh), interpolation=interp)[..., None]
            y0, x0 = (h - nh) // 2, (w - nw) // 2
            cells = _cells_under(a[..., 0] >= 0.5, y0, x0, (h, w), (gh, gw))
            for b, blank in enumerate(blanks):
                c = blank.copy()
                region = c[y0:y0 + nh, x0:x0 + nw].astype(np.float32)
                c[y0:y0 + nh, x0:x0 + nw] = np.clip(small * a + region * (1 - a) + 0.5, 0, 255)
                canvases.append(c)
                base_of.append(b)
                under.append(cells)
        out = self._encode([composite(rgb, alpha, VIEW_SHADES[0]), *canvases])
        views: list[QueryView] = []
        for toks, b, cells in zip(out.tokens[1:], base_of, under):
            change = np.linalg.norm(toks - self._blank_tokens[b], axis=1)
            change[~cells] = 0.0
            if change.max() <= 0:
                continue
            keep = np.nonzero(change >= VIEW_CHANGE * change.max())[0]
            keep = keep[np.argsort(-change[keep], kind="stable")[:VIEW_TOKENS]]
            wts = change[keep] / change[keep].sum()
            r, c = keep // out.grid[1], keep % out.grid[1]
            views.append(QueryView(tokens=unit(toks[keep]), weights=wts,
                                   rows=r - int(round(float((r * wts).sum()))),
                                   cols=c - int(round(float((c * wts).sum()))),
                                   mean=unit((toks[keep] * wts[:, None]).sum(axis=0))))
        return QueryViews(pooled=unit(out.pooled[0]), views=tuple(views),
                          grid=(int(out.grid[0]), int(out.grid[1])))


def _cells_under(mask: np.ndarray, y0: int, x0: int, frame: tuple[int, int],
                 grid: tuple[int, int]) -> np.ndarray:
    """``[rows * cols]`` bool: the token cells a pasted picture's pixels (``mask`` at
    ``(y0, x0)`` in a ``frame``-sized image) fall in, for an encoder that scales the frame
    into its ``grid`` keeping the aspect and centres it."""
    (h, w), (gh, gw) = frame, grid
    s = min(gh / h, gw / w)                       # cells per pixel
    top, left = (gh - h * s) / 2, (gw - w * s) / 2
    ys, xs = np.nonzero(mask)
    out = np.zeros(gh * gw, bool)
    r = np.clip(np.floor(top + (ys + y0 + 0.5) * s).astype(np.int64), 0, gh - 1)
    c = np.clip(np.floor(left + (xs + x0 + 0.5) * s).astype(np.int64), 0, gw - 1)
    out[r * gw + c] = True
    return out
