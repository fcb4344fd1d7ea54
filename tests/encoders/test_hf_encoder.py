"""hf encoder and the token-level cache on tiny CLIP / SigLIP / ViT / DINOv2 models built
locally from configs (random weights, never the hub)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
skdata = pytest.importorskip("skimage.data")

from streamvid.cache import TokenCache, adaptive_ratio, create_cache  # noqa: E402
from streamvid.config import CacheConfig, EncoderConfig  # noqa: E402
from streamvid.encoders import create_encoder  # noqa: E402
from streamvid.errors import ConfigError, ModelError  # noqa: E402
from streamvid.types import Frame  # noqa: E402

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "a", "photo", "of", "cat", "dog", "cup", "coffee", "red"]
VIS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
           image_size=64, patch_size=16)


def save_tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                                unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(path)


def build(kind, path):
    torch.manual_seed(0)
    text = dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=16, pad_token_id=0, bos_token_id=2,
                eos_token_id=3)
    if kind == "clip":
        cfg = transformers.CLIPConfig(text_config=text, vision_config=VIS, projection_dim=24)
        model = transformers.CLIPModel(cfg)
    elif kind == "siglip":
        cfg = transformers.SiglipConfig(text_config=dict(text, projection_size=32), vision_config=VIS)
        model = transformers.SiglipModel(cfg)
    elif kind == "vit":
        model = transformers.ViTModel(transformers.ViTConfig(**VIS), add_pooling_layer=False)
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, mlp_ratio=2,
            image_size=64, patch_size=16, layerscale_value=0.5))
    model.save_pretrained(path)
    if kind in ("clip", "siglip"):
        save_tokenizer(path)
    return str(path)


@pytest.fixture(scope="module", params=["clip", "siglip", "vit", "dinov2"])
def tiny(request, tmp_path_factory):
    path = build(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, create_encoder(EncoderConfig(name="hf", model=path, batch_size=2))


def images():
    return [skdata.chelsea(), skdata.coffee(), skdata.astronaut()]


def test_outputs_follow_the_model(tiny):
    kind, enc = tiny
    out = enc.encode(images())
    assert enc.grid == (4, 4) and out.tokens.shape[:2] == (3, 16)
    assert out.pooled.shape == (3, enc.pooled_dim) and out.tokens.shape[2] == enc.dim
    assert enc.pooled_dim == (24 if kind == "clip" else 32)
    assert enc.supports_text == (kind in ("clip", "siglip"))
    assert enc.model_id.startswith("hf:") and enc.model_id.endswith("@64")
    # pooled vectors are the model's own
    px = enc.preprocess(images())
    with torch.inference_mode():
        if kind == "clip":
            ref = enc._keep.get_image_features(pixel_values=px)
            ref = getattr(ref, "pooler_output", ref)
        elif kind == "siglip":
            ref = enc._vision(pixel_values=px).pooler_output
        else:
            ref = enc._vision(pixel_values=px).last_hidden_state[:, 0]
    np.testing.assert_allclose(out.pooled, ref.numpy(), atol=1e-5)
    # batched == one at a time
    single = enc.encode(images()[1:2])
    np.testing.assert_allclose(single.tokens[0], out.tokens[1], atol=1e-5)


def test_text_tower(tiny):
    kind, enc = tiny
    if not enc.supports_text:
        with pytest.raises(ModelError, match="no text tower"):
            enc.encode_text(["a photo of a cat"])
        return
    v = enc.encode_text(["a photo of a cat", "red coffee cup"])
    assert v.shape == (2, enc.pooled_dim)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(v[0], v[1])


def test_preprocessing_defaults_without_a_processor_file(tiny):
    kind, enc = tiny
    means = {"clip": 0.48145466, "siglip": 0.5, "vit": 0.5, "dinov2": 0.485}
    assert enc.image_mean[0] == pytest.approx(means[kind])
    assert enc.size == 64


def test_token_cache_ratio_one_equals_plain_forward(tiny):
    kind, enc = tiny
    cache = TokenCache(enc, CacheConfig(mode="token", recompute_ratio=1.0, adaptive=False,
                                        refresh_threshold=1.0, cut_threshold=1.0, max_age=100))
    imgs = images()
    plain = enc.encode(imgs)
    for i, im in enumerate(imgs):
        (f,) = cache.push(Frame(pts=float(i), index=i, image=im))
        np.testing.assert_allclose(f.tokens, plain.tokens[i], atol=1e-5)
        np.testing.assert_allclose(f.pooled, plain.pooled[i], atol=1e-5)
    assert cache.stats["frames_partial"] == 2


def test_recomputed_tokens_are_exact_at_any_ratio(tiny):
    """Each block's recomputed tokens equal the transformers block run on the same input;
    an unchanged frame gives the plain forward at any ratio."""
    kind, enc = tiny
    cache = TokenCache(enc, CacheConfig(mode="token", recompute_ratio=0.25, adaptive=False,
                                        refresh_threshold=1.0, cut_threshold=1.0, max_age=100))
    cat = skdata.chelsea()
    moved = cat.copy()
    moved[100:200, 150:300] = 255 - moved[100:200, 150:300]
    cache.push(Frame(pts=0.0, index=0, image=cat))
    cache.trace = []
    (f,) = cache.push(Frame(pts=1.0, index=1, image=moved))
    assert 0 < f.tokens_recomputed < 0.6
    blocks = cache.runner.blocks
    with torch.inference_mode():
        for rec in cache.trace:
            module = blocks[rec["layer"]].module
            full = module(rec["input"], None)
            full = full[0] if isinstance(full, tuple) else full
            np.testing.assert_allclose(rec["output"].numpy(), full[:, rec["idx"]].numpy(), atol=1e-5)
    # the same frame again: every block's input equals the reference's
    cache.trace = None
    (same,) = cache.push(Frame(pts=2.0, index=2, image=cat))
    np.testing.assert_allclose(same.tokens, enc.encode([cat]).tokens[0], atol=1e-5)


def test_token_cache_refreshes_on_a_jump_and_adapts_its_ratio(tmp_path):
    enc = create_encoder(EncoderConfig(name="hf", model=build("vit", tmp_path / "vit")))
    cache = create_cache(enc, CacheConfig(mode="token", recompute_ratio=0.25, threshold=0.02,
                                          refresh_threshold=0.1, cut_threshold=0.3, max_age=3))
    assert isinstance(cache, TokenCache)
    cat, cup = skdata.chelsea(), skdata.coffee()[:300, :451]
    seq = [cat, cat, cat, cat, cat, cup, cup]
    out = []
    for i, im in enumerate(seq):
        out += cache.push(Frame(pts=float(i), index=i, image=im))
    rec = [f.tokens_recomputed for f in out]
    assert rec[0] == 1.0 and rec[4] == 1.0 and rec[5] == 1.0     # first, max_age, jump
    assert all(r < 0.5 for r in rec[1:4] + rec[6:])
    assert adaptive_ratio(0.25, 0.0, 0.02) == pytest.approx(0.0625)
    assert adaptive_ratio(0.25, 0.02, 0.02) == pytest.approx(0.25)
    assert adaptive_ratio(0.25, 0.5, 0.02) == 1.0


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="encoder.model"):
        create_encoder(EncoderConfig(name="hf"))
    path = build("vit", tmp_path / "vit")
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        create_encoder(EncoderConfig(name="hf", model=path, size=70))
    bigger = create_encoder(EncoderConfig(name="hf", model=path, size=96))
    assert bigger.grid == (6, 6) and bigger.encode([skdata.coffee()]).tokens.shape == (1, 36, 32)
    with pytest.raises(ModelError):
        create_encoder(EncoderConfig(name="hf", model=str(tmp_path / "missing")))


def test_batched_token_cache_matches_one_frame_at_a_time(tiny):
    """Frames that share a reference are run together: same features, same order, and a new
    reference first finishes the frames waiting on the old one."""
    kind, enc = tiny
    cfg = CacheConfig(mode="token", recompute_ratio=0.25, adaptive=True, threshold=0.02,
                      refresh_threshold=0.1, cut_threshold=0.3, max_age=100)
    cat = skdata.chelsea()
    seq = []
    for i in range(4):
        im = cat.copy()
        im[40 + 20 * i:90 + 20 * i, 60:160] = 255 - im[40 + 20 * i:90 + 20 * i, 60:160]
        seq.append(im)
    cup = skdata.coffee()[:300, :451]
    seq += [cup, cup.copy()]
    frames = [Frame(pts=float(i), index=i, image=im) for i, im in enumerate(seq)]
    one = TokenCache(enc, cfg)
    ref = [f for fr in frames for f in one.push(fr)]
    many = TokenCache(enc, cfg, batch_size=3)
    per_push = [many.push(fr) for fr in frames]
    got = [f for fs in per_push for f in fs] + many.flush()
    # 0: reference; 1-3 wait for the batch; 4 (a jump) is a reference and finishes them
    assert [[f.index for f in fs] for fs in per_push] == [[0], [], [], [1, 2, 3], [4], []]
    assert [f.index for f in got] == list(range(6))
    assert [f.tokens_recomputed for f in got] == [f.tokens_recomputed for f in ref]
    assert len({f.tokens_recomputed for f in got[1:4]}) > 1  # adaptive: ratios differ per frame
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a.tokens, b.tokens, atol=1e-5)
        np.testing.assert_allclose(a.pooled, b.pooled, atol=1e-5)
    assert many.stats["frames_partial"] == one.stats["frames_partial"] == 4


def test_batched_partial_pass_is_exact_per_block(tiny):
    kind, enc = tiny
    cache = TokenCache(enc, CacheConfig(mode="token", recompute_ratio=0.5, adaptive=False))
    cat = skdata.chelsea()
    moved = [cat.copy(), cat.copy()]
    moved[0][100:200, 150:300] = 0
    moved[1][:120, :200] = 255
    with torch.inference_mode():
        cache.full_pass(enc.preprocess([cat]))
        cache.trace = []
        tokens, pooled, shares = cache.partial_pass(enc.preprocess(moved), [0.5, 0.5])
        assert len(shares) == 2 and shares[0] == shares[1] and 0.5 <= shares[0] < 0.8
        frames_seen = {rec["frame"] for rec in cache.trace}
        assert frames_seen == {0, 1}
        for rec in cache.trace:
            module = cache.runner.blocks[rec["layer"]].module
            full = module(rec["input"], None)
            full = full[0] if isinstance(full, tuple) else full
            np.testing.assert_allclose(rec["output"].numpy(), full[:, rec["idx"]].numpy(), atol=1e-5)
        # ratio 1 on a batch is the plain forward
        t1, p1, _ = cache.partial_pass(enc.preprocess(moved), 1.0)
    plain = enc.encode(moved)
    np.testing.assert_allclose(t1.numpy(), plain.tokens, atol=1e-5)
    np.testing.assert_allclose(p1.numpy(), plain.pooled, atol=1e-5)
