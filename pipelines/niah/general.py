"""The generalisation grid: needles of every size and place, drawn or photographed, opaque or
cut out, on footage the pipeline was never tuned on.

The development grids hide one kind of needle (a drawn cut-out covering a fixed share of the
frame, at a random place) in one set of videos. This grid varies each of those:

- **height**: the needle's height as a fraction of the frame height (``general.heights``);
- **position**: centre, the four corners, the four edges, or partly outside the frame over
  one edge (:data:`.grid.POSITIONS`);
- **picture**: a drawing from the needle set as a cut-out (transparent around it) or opaque
  (on a plain card), or a photo crop (a quarter of a scikit-image sample photo) opaque or cut
  out along an ellipse;
- **footage**: one haystack per named entry of ``general.footage`` (real videos or FFmpeg
  ``lavfi:`` generated scenes; other aspect ratios come out letter- or pillarboxed).

Every (height, position) pair appears ``repeats`` times; the pairs are shuffled and dealt to
the footage in turn, and the pictures cycle so that each height and each position sees every
kind. The query of a needle is the picture pasted (a cut-out with its transparency). Each
haystack carries only distinct pictures, so a question has one right moment.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from streamvid.errors import ConfigError, MissingDependencyError
from streamvid.io import atomic_write

from .grid import POSITIONS, HaystackPlan, NiahConfig, PlannedNeedle, PlannedQuestion
from .needles import choose_needles, composite, load_needle_set, load_rgba

log = logging.getLogger(__name__)

QUARTERS = ("top-left", "top-right", "bottom-left", "bottom-right")
CARD_COLOURS = ((236, 226, 200), (200, 220, 236), (214, 236, 204), (236, 204, 214),
                (60, 60, 72), (250, 250, 250))   # opaque drawings sit on one of these cards
CARD_MARGIN = 0.12


def _photo(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError as err:  # pragma: no cover - a dev dependency
        raise MissingDependencyError("the generalisation grid's photos come from scikit-image; "
                                     "fix: pip install scikit-image (or the dev extra)") from err
    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


def _quarter(img: np.ndarray, which: str) -> np.ndarray:
    h, w = img.shape[:2]
    r = slice(0, h // 2) if which.startswith("top") else slice(h // 2, h)
    c = slice(0, w // 2) if which.endswith("left") else slice(w // 2, w)
    return img[r, c]


def _ellipse(rgb: np.ndarray) -> np.ndarray:
    """A photo cut out along the largest ellipse inside it (RGBA, soft by one pixel)."""
    h, w = rgb.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.sqrt(((x + 0.5 - w / 2) / (w / 2)) ** 2 + ((y + 0.5 - h / 2) / (h / 2)) ** 2)
    a = np.clip((1.0 - d) * min(h, w) / 2, 0, 1)
    return np.dstack([rgb, (a * 255 + 0.5).astype(np.uint8)])


def _card(rgba: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """A cut-out drawing made opaque: pasted on a plain card with a margin."""
    h, w = rgba.shape[:2]
    m = int(round(max(h, w) * CARD_MARGIN))
    out = np.empty((h + 2 * m, w + 2 * m, 3), np.uint8)
    out[:] = colour
    composite(out, rgba, m, m)
    return out


def _write_png(path: Path, img: np.ndarray) -> str:
    if not path.is_file():
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: Image.fromarray(img).save(fh, format="PNG"))
    return str(path)


def _picture(kind: str, source: Any, folder: Path, index: int) -> tuple[str, str]:
    """The picture file of a needle and its label. ``source``: a needle-set entry (drawings)
    or ``(photo name, quarter)``."""
    if kind == "drawn-cutout":
        return source.path, source.label
    if kind == "drawn-opaque":
        colour = CARD_COLOURS[index % len(CARD_COLOURS)]
        img = _card(load_rgba(source.path), colour)
        return _write_png(folder / f"card{index % len(CARD_COLOURS)}-{Path(source.path).stem}.png",
                          img), source.label
    photo, quarter = source
    crop = _quarter(_photo(photo), quarter)
    label = f"{photo} {quarter} quarter"
    if kind == "photo-opaque":
        return _write_png(folder / f"{photo}-{quarter}.png", np.ascontiguousarray(crop)), label
    return _write_png(folder / f"{photo}-{quarter}-ellipse.png", _ellipse(crop)), label


def plan_general(cfg: NiahConfig) -> list[HaystackPlan]:
    """One haystack per footage, with its share of the (height, position) pairs as needles."""
    from .run import cache_dir

    g = cfg.general
    assert g is not None
    ns = cfg.needles
    length = cfg.grid.lengths[0]
    pairs = [(r, hi, pi) for r in range(g.repeats) for hi in range(len(g.heights))
             for pi in range(len(g.positions))]
    rng = np.random.default_rng([cfg.seed, 0x6E4E])
    order = [pairs[int(i)] for i in rng.permutation(len(pairs))]
    n_foot = len(g.footage)
    crops = [(p, q) for p in g.photos for q in QUARTERS]
    entries = load_needle_set(ns.dir)
    folder = cache_dir(cfg) / "general-needles"
    plans: list[HaystackPlan] = []
    for fi, (fname, videos) in enumerate(g.footage):
        mine = order[fi::n_foot]
        kinds = [g.pictures[(r + hi + pi) % len(g.pictures)] for r, hi, pi in mine]
        n_drawn = sum(k.startswith("drawn") for k in kinds)
        n_photo = len(kinds) - n_drawn
        if n_photo > len(crops):
            raise ConfigError(f"{cfg.name}: footage {fname!r} needs {n_photo} distinct photo crops but "
                              f"{len(g.photos)} photos give {len(crops)}; fix: add photos or footage")
        drawn = iter(choose_needles(entries, n_drawn, cfg.seed * 1000 + fi))
        frng = np.random.default_rng([cfg.seed, fi, 0xF00])
        photos = iter([crops[int(i)] for i in frng.permutation(len(crops))])
        hp = HaystackPlan(length=length, group=fi, seed=cfg.seed * 1000 + fi, videos=tuple(videos),
                          label=fname)
        for j, ((r, hi, pi), kind) in enumerate(zip(mine, kinds)):
            source = next(drawn) if kind.startswith("drawn") else next(photos)
            path, label = _picture(kind, source, folder, j)
            pos = g.positions[pi]
            x, y, vis = POSITIONS[pos]
            start = ns.min_gap + j * (ns.duration + ns.min_gap)
            nid = f"n{j:02d}"
            hp.needles.append(PlannedNeedle(nid, "image", label, None, start, image=path,
                                            category=kind, height=g.heights[hi], position=(x, y),
                                            visible=vis))
            variant = (("footage", fname), ("height", f"{g.heights[hi]:g}"), ("position", pos),
                       ("picture", kind))
            hp.questions.append(PlannedQuestion(f"{fname}-{nid}-image", "image", (nid,), length,
                                                None, image=path, category=kind, variant=variant))
        plans.append(hp)
    return plans
