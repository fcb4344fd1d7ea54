"""End to end on real footage: an image needle and a text sign shown for 3 s are found."""

from __future__ import annotations

import os

import pytest

from pipelines.ask import Asker, load_image
from pipelines.demo import DEMO_NEEDLE, DEMO_VIDEO
from pipelines.index import index_video
from pipelines.models import Models
from pipelines.niah.haystack import NeedleSpec, build_haystack
from streamvid.config import Config
from streamvid.types import Question, format_time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIGN = "WIFI PASSWORD: tulip-42"


@pytest.fixture(scope="module")
def haystack(tmp_path_factory):
    work = tmp_path_factory.mktemp("needles")
    info = build_haystack(
        [DEMO_VIDEO], work / "haystack.mp4", length=75.0, fps=2.0, seed=7, progress=False,
        needles=[NeedleSpec(kind="image", label="espresso", image=str(DEMO_NEEDLE), start=21.0,
                            duration=3.0, area=0.08),
                 NeedleSpec(kind="text", label="sign", text=SIGN, start=52.0, duration=3.0)])
    config = Config()
    models = Models(config)
    index_video(str(info.path), work / "store", config, models=models, progress=False)
    asker = Asker(work / "store", config, models=models)
    yield info, asker
    asker.close()


def _overlaps(ev, needle) -> bool:
    return ev.start < needle.end and ev.end > needle.start


@pytest.mark.slow
def test_image_question_puts_needle_first(haystack):
    info, asker = haystack
    needle = next(n for n in info.needles if n.label == "espresso")
    ans = asker.ask(Question(image=load_image(DEMO_NEEDLE)))
    assert ans.evidence, ans
    assert _overlaps(ans.evidence[0], needle), (ans.evidence[0], needle)


@pytest.mark.slow
def test_text_question_quotes_the_sign(haystack):
    info, asker = haystack
    needle = next(n for n in info.needles if n.label == "sign")
    ans = asker.ask(Question(text="What is the wifi password on the sign?"))
    assert "tulip-42" in ans.answer.lower(), ans.answer
    assert ans.answer.startswith('"')  # quoted
    assert _overlaps(ans.evidence[0], needle)


@pytest.mark.slow
def test_when_question_for_the_sign_gives_its_time(haystack):
    info, asker = haystack
    needle = next(n for n in info.needles if n.label == "sign")
    ans = asker.ask(Question(text="When does the wifi password appear?"))
    assert _overlaps(ans.evidence[0], needle)
    assert ans.answer.startswith(f"At {format_time(ans.evidence[0].keyframe)} in haystack.mp4: ")
    assert needle.start - 6.0 <= ans.evidence[0].keyframe <= needle.end


def test_an_image_query_keeps_a_cutouts_transparency(tmp_path):
    import numpy as np
    from PIL import Image

    from streamvid.errors import ValidationError

    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[10:30, 5:25] = (200, 30, 30, 255)      # an opaque square on a transparent sheet
    Image.fromarray(rgba).save(tmp_path / "cutout.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "photo.png")
    full = rgba.copy()
    full[..., 3] = 255
    Image.fromarray(full).save(tmp_path / "opaque.png")
    cut = load_image(tmp_path / "cutout.png")
    assert cut.shape == (40, 30, 4) and (cut == rgba).all()
    assert load_image(tmp_path / "photo.png").shape == (40, 30, 3)
    assert load_image(tmp_path / "opaque.png").shape == (40, 30, 3)  # alpha that hides nothing
    Question(image=cut)
    with pytest.raises(ValidationError, match="RGBA"):
        Question(image=np.zeros((4, 4, 2), np.uint8))
