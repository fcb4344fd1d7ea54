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
from streamvid.encoders.query import VIEW_SHADES, VIEW_SPANS, VIEW_TOKENS, QueryEncoder
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


def test_views_are_sized_on_the_token_grid(asker):
    _, a = asker
    qv = QueryEncoder(a.retriever.vision_encoder).views(load_image(DATA / "coffee.png"))
    assert len(qv.views) == len(VIEW_SPANS) * len(VIEW_SHADES)
    for v in qv.views:
        assert 0 < len(v.tokens) <= VIEW_TOKENS
        assert abs(float(v.weights.sum()) - 1) < 1e-5
    assert np.allclose(np.linalg.norm(qv.pooled), 1, atol=1e-5)

    def extent(v):   # cells covered by the view's tokens
        return (int(np.ptp(v.rows)) + 1) * (int(np.ptp(v.cols)) + 1)

    n = len(VIEW_SHADES)
    smallest, largest = qv.views[:n], qv.views[-n:]   # in the order of VIEW_SPANS
    assert min(extent(v) for v in largest) > max(extent(v) for v in smallest)


def test_views_encoded_on_every_core_equal_one_by_one(asker, monkeypatch):
    """Encoding the views in threads (an encoder whose calls may run at once) splits and
    joins them in order: the same views as encoding them one after another."""
    _, a = asker
    enc = a.retriever.vision_encoder
    if not enc.concurrent:
        pytest.skip("the lite encoder runs on torch here (no onnx): one call at a time")

    class OneByOne:
        concurrent = False

        def encode(self, images):
            return enc.encode(images)

    monkeypatch.setattr("os.cpu_count", lambda: 3)   # uneven parts of the 19 pictures
    image = load_image(DATA / "astronaut.png")
    threaded, serial = QueryEncoder(enc).views(image), QueryEncoder(OneByOne()).views(image)
    assert np.allclose(threaded.pooled, serial.pooled, atol=1e-6)
    assert len(threaded.views) == len(serial.views)
    for t, s in zip(threaded.views, serial.views):
        assert np.array_equal(t.rows, s.rows) and np.array_equal(t.cols, s.cols)
        assert np.allclose(t.tokens, s.tokens, atol=1e-5)
