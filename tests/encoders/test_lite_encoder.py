"""The lite encoder on real photos (scikit-image) with its real ImageNet weights."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

skdata = pytest.importorskip("skimage.data")

from streamvid.config import EncoderConfig  # noqa: E402
from streamvid.encoders import create_encoder  # noqa: E402
from streamvid.encoders.lite import letterbox_geometry, imagenet_classes, letterbox  # noqa: E402
from streamvid.errors import ConfigError, ValidationError  # noqa: E402

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def enc():
    return create_encoder(EncoderConfig(name="lite", batch_size=4))


def test_class_names_are_the_ilsvrc_order():
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[0] == "tench" and names[281] == "tabby" and names[967] == "espresso"
    assert names[999] == "toilet tissue"


def test_labels_on_real_photos(enc):
    out = enc.encode([skdata.chelsea(), skdata.coffee()])
    cat, coffee = enc.labels(out.pooled, k=3)
    assert cat[0][0] in CATS, cat
    assert coffee[0][0] in {"espresso", "cup", "coffee mug"}, coffee
    assert "espresso" in [n for n, _ in coffee]
    for row in (cat, coffee):
        probs = [p for _, p in row]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6


def test_outputs_grid_and_pooled_space(enc):
    out = enc.encode([skdata.chelsea()])
    assert enc.grid == (9, 16) and enc.input_size == (288, 512)   # 16:9, longer side 512
    assert out.tokens.shape == (1, 144, 1280) and out.pooled.shape == (1, 1280)
    assert out.tokens.dtype == np.float32 and enc.dim == enc.pooled_dim == 1280
    np.testing.assert_allclose(out.pooled[0], out.tokens[0].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert "efficientnet-lite0-57934424.pth" in enc.model_id and enc.model_id.endswith("@512x288")


def test_batching_does_not_change_results(enc):
    imgs = [skdata.chelsea(), skdata.coffee(), skdata.astronaut(), skdata.rocket(), skdata.chelsea()]
    together = enc.encode(imgs)
    alone = [enc.encode([im]) for im in imgs]
    for i, single in enumerate(alone):
        np.testing.assert_allclose(together.tokens[i], single.tokens[0], atol=1e-4)


def test_small_object_lights_up_its_tokens(enc):
    import cv2

    cat = skdata.chelsea()[50:250, 100:350]
    query = enc.encode([cat]).pooled[0]
    scene = skdata.astronaut().copy()          # 512 x 512
    side = 162                                 # 10 % of the frame's area
    scene[330:330 + side, 330:330 + side] = cv2.resize(cat, (side, side))
    tokens = enc.encode([scene]).tokens[0]
    cos = tokens @ query / (np.linalg.norm(tokens, axis=1) * np.linalg.norm(query) + 1e-12)
    r, c = divmod(int(cos.argmax()), enc.grid[1])
    scale, _, _, top, left = letterbox_geometry(512, 512, enc.input_size)
    r_lo, r_hi = (top + 330 * scale) / 32, (top + (330 + side) * scale) / 32
    c_lo, c_hi = (left + 330 * scale) / 32, (left + (330 + side) * scale) / 32
    assert r_lo - 1 <= r <= r_hi and c_lo - 1 <= c <= c_hi, (r, c)
    assert cos.max() > 2 * np.median(cos)


def test_letterbox_keeps_aspect_and_centres():
    img = np.full((100, 200, 3), 255, np.uint8)
    box = letterbox(img, 64)
    assert box.shape == (64, 64, 3)
    assert (box[16:48] == 255).all() and (box[:15] == 127).all() and (box[49:] == 127).all()


def test_model_id_follows_the_input_size():
    small = create_encoder(EncoderConfig(name="lite", size=224, aspect="1:1"))
    assert small.grid == (7, 7) and small.model_id.endswith("@224x224")
    assert small.encode([skdata.coffee()]).tokens.shape == (1, 49, 1280)
    tall = create_encoder(EncoderConfig(name="lite", size=320, aspect="9:16"))
    assert tall.input_size == (320, 160) and tall.grid == (10, 5)
    assert tall.encode([skdata.coffee()]).tokens.shape == (1, 50, 1280)
    with pytest.raises(ConfigError, match="encoder.aspect"):
        create_encoder(EncoderConfig(name="lite", aspect="wide"))


def test_errors_name_the_problem(enc):
    with pytest.raises(ConfigError, match="multiple of 32"):
        create_encoder(EncoderConfig(name="lite", size=300))
    with pytest.raises(ValidationError, match="uint8"):
        enc.encode([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(ValidationError, match="pass \\[image\\]"):
        enc.encode(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValidationError):
        enc.labels(np.zeros((1, 7), np.float32))
    empty = enc.encode([])
    assert empty.tokens.shape == (0, 144, 1280)


def test_onnx_runtime_keeps_the_features(tmp_path, monkeypatch):
    """The ONNX Runtime build (exported once into the cache) gives the torch network's
    features on real video frames and photos: every token and pooled vector at cosine >= 0.99."""
    pytest.importorskip("onnx")
    from pathlib import Path

    from streamvid.config import Config
    from streamvid.sources import open_source

    monkeypatch.setenv("STREAMVID_CACHE", str(tmp_path))
    video = Path(__file__).resolve().parents[1] / "data" / "vtest_10s_1fps.mp4"
    src = open_source(str(video), Config.load(None, {}).source)
    try:
        images = [f.image for f in src][:6] + [skdata.chelsea(), skdata.coffee(), skdata.astronaut()]
    finally:
        src.close()
    torch_enc = create_encoder(EncoderConfig(name="lite", runtime="torch"))
    onnx_enc = create_encoder(EncoderConfig(name="lite", runtime="onnx"))
    assert (torch_enc.runtime, onnx_enc.runtime) == ("torch", "onnx")
    assert onnx_enc.model_id == torch_enc.model_id          # the same features: stores mix
    assert list((tmp_path / "onnx").glob("*.onnx"))         # exported into the cache
    a, b = torch_enc.encode(images), onnx_enc.encode(images)
    ta, tb = a.tokens.reshape(-1, a.tokens.shape[-1]), b.tokens.reshape(-1, b.tokens.shape[-1])
    live = np.linalg.norm(ta, axis=1) > 1e-3
    cos = (ta * tb).sum(1)[live] / (np.linalg.norm(ta, axis=1) * np.linalg.norm(tb, axis=1))[live]
    assert cos.min() >= 0.99, cos.min()
    pc = (a.pooled * b.pooled).sum(1) / (np.linalg.norm(a.pooled, axis=1) * np.linalg.norm(b.pooled, axis=1))
    assert pc.min() >= 0.99, pc.min()
    assert [r[0][0] for r in torch_enc.labels(a.pooled)] == [r[0][0] for r in onnx_enc.labels(b.pooled)]
    # loaded from the cache the second time: no export
    again = create_encoder(EncoderConfig(name="lite", runtime="onnx"))
    np.testing.assert_allclose(again.encode(images[:1]).tokens, b.tokens[:1], rtol=0, atol=1e-5)
