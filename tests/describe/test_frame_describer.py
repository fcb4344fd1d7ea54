"""Labels through the lite encoder's classifier, and the FrameDescriber's change gate."""

from __future__ import annotations

import numpy as np
import pytest

from streamvid.config import DescribeConfig
from streamvid.describe import create_describer, picture_change, readable_label, thumbnail
from streamvid.errors import ConfigError
from streamvid.types import EncoderOutput, Frame, FrameFeatures, VisionEncoder

skdata = pytest.importorskip("skimage.data")

CAT_WORDS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}


def _features(enc, image, pts=0.0):
    out = enc.encode([image])
    return FrameFeatures(pts=pts, index=int(pts), tokens=out.tokens[0], pooled=out.pooled[0], grid=out.grid)


def test_readable_label():
    assert readable_label("Granny Smith") == "Granny Smith"
    assert readable_label("tabby, tabby cat") == "tabby cat"
    assert readable_label("notebook, notebook computer") == "notebook computer"
    assert readable_label("great white shark, white shark, man-eater") == "great white shark"
    assert readable_label("hen_of_the_woods") == "hen of the woods"


def test_labels_of_real_photos(lite):
    d = create_describer(DescribeConfig(ocr=False, top_k=3, min_prob=0.05), lite)
    cat = d.describe(Frame(pts=0.0, index=0, image=skdata.chelsea()), _features(lite, skdata.chelsea()))
    names = [n for n, _ in cat.labels]
    assert names and names[0] in CAT_WORDS, cat.labels
    assert all(p >= 0.05 for _, p in cat.labels) and len(cat.labels) <= 3
    assert [p for _, p in cat.labels] == sorted((p for _, p in cat.labels), reverse=True)
    coffee = d.describe(Frame(pts=0.0, index=0, image=skdata.coffee()))  # no features: encodes itself
    assert {"espresso", "cup", "coffee mug"} & {n for n, _ in coffee.labels}, coffee.labels
    assert cat.text == "" and "tabby" not in coffee.as_text()


def test_sign_and_labels_together(lite, sign):
    d = create_describer(DescribeConfig(), lite)
    desc = d.describe(Frame(pts=0.0, index=0, image=sign), _features(lite, sign))
    assert desc.text == "WIFI PASSWORD: tulip-42"
    assert desc.as_text().endswith('text: "WIFI PASSWORD: tulip-42"')


def test_gate_describes_only_changed_frames_and_every_max_interval(lite):
    photo = skdata.chelsea()
    feats = _features(lite, photo)
    cfg = DescribeConfig(ocr=False, change_threshold=0.05, max_interval=5.0)
    d = create_describer(cfg, lite)
    rng = np.random.default_rng(0)
    got = []
    for t in range(12):
        img = photo
        if t in (1, 2, 3, 4, 6, 7, 8, 9, 10, 11):  # sensor noise only
            img = np.clip(photo + rng.normal(0, 2, photo.shape), 0, 255).astype(np.uint8)
        if t == 3:  # a new object in one corner of the picture
            img = img.copy()
            img[:100, :120] = (250, 40, 40)
        got.append(d.maybe_describe(Frame(pts=float(t), index=t, image=img), feats) is not None)
    # first frame; the corner change at 3 and its disappearance at 4; max_interval at 9
    assert [t for t, g in enumerate(got) if g] == [0, 3, 4, 9]
    assert d.stats["described"] == 4 and d.stats["skipped"] == 8


def test_picture_change_is_local():
    a = np.zeros((64, 64, 3), np.uint8)
    b = a.copy()
    b[:16, :16] = 255  # one cell of the 4 x 4 grid turns white
    assert picture_change(thumbnail(a), thumbnail(b)) == pytest.approx(1.0, abs=0.02)
    assert picture_change(thumbnail(a), thumbnail(a)) == 0.0


class _NoClassifier(VisionEncoder):
    name = "plain"

    def encode(self, images):
        return EncoderOutput(np.zeros((len(images), 1, 4), np.float32), np.zeros((len(images), 4), np.float32), (1, 1))


def test_labels_need_a_classifier():
    with pytest.raises(ConfigError, match="describe.labels"):
        create_describer(DescribeConfig(labels=True), _NoClassifier())
    with pytest.raises(ConfigError, match="no vision encoder"):
        create_describer(DescribeConfig(labels=True), None)
    d = create_describer(DescribeConfig(labels=False, ocr=False, detector="none"), _NoClassifier())
    img = np.zeros((8, 8, 3), np.uint8)
    f = FrameFeatures(pts=0.0, index=0, tokens=np.zeros((1, 4), np.float32), pooled=np.zeros(4, np.float32), grid=(1, 1))
    assert not d.enabled and d.maybe_describe(Frame(pts=0.0, index=0, image=img), f) is None


def _paste_sign(image: np.ndarray, text: str, top: int, left: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=30)
    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = draw.textbbox((left + 12, top + 10), text, font=font)
    draw.rectangle([left, top, x1 + 12, y1 + 12], fill=(245, 245, 240))
    draw.text((left + 12, top + 10), text, fill=(10, 10, 10), font=font)
    return np.asarray(img)


def test_ocr_rereads_only_the_changed_part(lite):
    import cv2

    scene = cv2.resize(skdata.coffee(), (1280, 720), interpolation=cv2.INTER_LINEAR)
    with_a = _paste_sign(scene, "Platform 9 north", 40, 40)
    with_ab = _paste_sign(with_a, "WIFI PASSWORD: tulip-42", 600, 820)
    only_b = _paste_sign(scene, "WIFI PASSWORD: tulip-42", 600, 820)
    feats = _features(lite, scene)
    d = create_describer(DescribeConfig(labels=False, change_threshold=0.05, max_interval=60.0,
                                        ocr_interval=0.0), lite)
    texts = [d.maybe_describe(Frame(pts=float(t), index=t, image=im), feats)
             for t, im in enumerate([with_a, with_a, with_ab, only_b])]
    assert texts[1] is None
    assert texts[0].text == "Platform 9 north"
    assert texts[2].text == "Platform 9 north | WIFI PASSWORD: tulip-42"
    assert texts[3].text == "WIFI PASSWORD: tulip-42"
    assert d.stats["ocr_full"] == 1 and d.stats["ocr_partial"] == 2
    # describe() always reads the whole frame
    assert d.describe(Frame(pts=9.0, index=9, image=with_ab)).text == "Platform 9 north | WIFI PASSWORD: tulip-42"


def test_ocr_interval_defers_and_then_reads_a_new_sign(lite):
    """OCR reads at most every ocr_interval seconds; a sign that appears in between is read
    as soon as the interval allows, even when nothing changes any more."""
    import cv2

    scene = cv2.resize(skdata.coffee(), (1280, 720), interpolation=cv2.INTER_LINEAR)
    signed = _paste_sign(scene, "WIFI PASSWORD: tulip-42", 600, 820)
    feats = _features(lite, scene)
    d = create_describer(DescribeConfig(labels=False, change_threshold=0.05, max_interval=60.0,
                                        ocr_interval=2.0), lite)
    out = [d.maybe_describe(Frame(pts=float(t), index=t, image=im), feats)
           for t, im in enumerate([scene, signed, signed, signed])]
    assert out[0].text == ""
    assert out[1].text == ""                      # deferred: read 1 s ago
    assert out[2].text == "WIFI PASSWORD: tulip-42"  # read once the interval passed
    assert out[3] is None                         # nothing new since
    assert d.stats["ocr_deferred"] == 1
