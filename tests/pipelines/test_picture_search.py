"""A needle a fraction of a token high: the stored tokens cannot show it, the kept frame
pictures can. In a one-minute generated haystack (FFmpeg's mandelbrot zoom) a photo 3 % of
the frame high (11 of 360 pixels, a quarter of one of the lite encoder's 40-pixel tokens) is
found first by the picture search and not by the token matching alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.ask import Asker, load_image
from pipelines.index import index_video
from pipelines.models import Models
from pipelines.niah.haystack import NeedleSpec, build_haystack
from streamvid.config import Config
from streamvid.types import Question

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).resolve().parent.parent / "data" / "needles"
FOOTAGE = "lavfi:mandelbrot=size=640x360:rate=2"


@pytest.fixture(scope="module")
def haystack(tmp_path_factory):
    work = tmp_path_factory.mktemp("pictures")
    spec = NeedleSpec(kind="image", label="astronaut", image=str(DATA / "astronaut.png"),
                      start=30.0, duration=3.0, height=0.03, position=(0.3, 0.7), visible=1.0)
    info = build_haystack([FOOTAGE], work / "haystack.mp4", length=60.0, fps=2.0, seed=5,
                          needles=[spec], progress=False)
    config = Config.from_dict({"describe": {"ocr": False, "detector": "none"}})
    index_video(str(info.path), work / "store", config, models=Models(config), progress=False)
    return info, work / "store", config


def first(store, config, pictures: int):
    config = Config.from_dict({**config.to_dict(), "retrieval": {**config.to_dict()["retrieval"],
                                                                  "pictures": pictures}})
    with Asker(store, config) as a:
        return a.ask(Question(image=load_image(DATA / "astronaut.png"))).evidence[0]


def test_a_needle_under_one_token_is_found_by_the_picture_search_only(haystack):
    info, store, config = haystack
    needle = info.needles[0]

    def hit(top):
        return top.start < needle.end and top.end > needle.start

    assert hit(first(store, config, pictures=32))
    assert not hit(first(store, config, pictures=0))
