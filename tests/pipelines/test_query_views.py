"""Image queries at any size and place: needles far from the development grid's (a large
centred photo, a small drawing in a corner, one partly outside the frame) are found in a
short generated haystack (FFmpeg's testsrc2, not footage anything was tuned on)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipelines.ask import Asker, load_image
from pipelines.index import index_video
from pipelines.models import Models
from pipelines.niah.haystack import NeedleSpec, build_haystack
from streamvid.config import Config
from streamvid.encoders.query import QueryEncoder
from streamvid.types import Question

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).resolve().parent.parent / "data" / "needles"
FOOTAGE = "lavfi:testsrc2=size=640x360:rate=2"
NEEDLES = {   # label: (picture, start s, height of the frame, centre, fraction in view)
    "coffee": ("coffee.png", 4.0, 0.6, (0.5, 0.5), 1.0),       # large, centred, opaque
    "astronaut": ("astronaut.png", 14.0, 0.15, (1.0, 0.0), 1.0),  # small, top-right corner
    "rocket": ("rocket.png", 24.0, 0.3, (0.0, 0.5), 0.6),      # partly outside on the left
}


@pytest.fixture(scope="module")
def asker(tmp_path_factory):
    work = tmp_path_factory.mktemp("views")
    specs = [NeedleSpec(kind="image", label=k, image=str(DATA / f), start=t, duration=3.0,
                        height=h, position=pos, visible=vis)
             for k, (f, t, h, pos, vis) in NEEDLES.items()]
    info = build_haystack([FOOTAGE], work / "haystack.mp4", length=32.0, fps=2.0, seed=3,
                          needles=specs, progress=False)
    config = Config.from_dict({"describe": {"ocr": False, "detector": "none"}})
    models = Models(config)
    index_video(str(info.path), work / "store", config, models=models, progress=False)
    with Asker(work / "store", config, models=models) as a:
        yield info, a


@pytest.mark.parametrize("label", list(NEEDLES))
def test_needle_of_any_size_and_place_is_found_first(asker, label):
    info, a = asker
    needle = next(n for n in info.needles if n.label == label)
    ans = a.ask(Question(image=load_image(DATA / NEEDLES[label][0])))
    top = ans.evidence[0]
    assert top.start < needle.end and top.end > needle.start, (label, top, needle)


def test_views_span_the_token_grid_from_a_token_to_the_frame(asker):
    _, a = asker
    qe = QueryEncoder(a.retriever.vision_encoder)
    qv = qe.views(load_image(DATA / "coffee.png"))
    rows = qv.grid[0]
    extents = sorted({int(v.rows.max() - v.rows.min()) + 1 for v in qv.views})
    assert extents[0] <= 2 and extents[-1] >= rows - 1, (extents, qv.grid)
    assert all(abs(float(v.weights.sum()) - 1) < 1e-5 for v in qv.views)
    assert np.allclose(np.linalg.norm(qv.pooled), 1, atol=1e-5)
