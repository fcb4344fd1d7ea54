"""The hf answerer's token injection on tiny random-weight models of each VideoLLM family
(built locally from configs, tokenizer written locally; never the hub).

Exactness: with every token kept, the first generated token's logits through the injection
path equal the model's own forward on the same frames prepared as its processor prepares
them; with pruning, kept tokens keep the positions they have in the full run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pipelines.answerers import create_answerer  # noqa: E402
from streamvid.config import AnswerConfig, EncoderConfig  # noqa: E402
from streamvid.encoders import create_encoder  # noqa: E402
from streamvid.errors import StoreError  # noqa: E402
from streamvid.types import ClipMemory, Context, ContextItem, Question  # noqa: E402
from tests.vlm_models import build, processor_class  # noqa: E402

FAMILIES = ("llava-ov", "qwen2.5-vl", "smolvlm")
SIZE = {"llava-ov": 40, "qwen2.5-vl": 32, "smolvlm": 32}
FRAMES = 3   # per clip, 1 s apart
CLIPS = ((0.0, "OPEN"), (10.0, ""))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    return {f: build(f, root / f) for f in FAMILIES}


def frames(seed: int, size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(FRAMES)]


def make_context(family, model_dir, keep=1.0, seed=0):
    """Two clips of FRAMES frames each, encoded by the family's vlm encoder (no cache); a
    fraction ``keep`` of each clip's tokens kept (at random, in time then grid order)."""
    enc = create_encoder(EncoderConfig(name="vlm", model=model_dir, size=SIZE[family]))
    rng = np.random.default_rng(seed)
    items, images = [], []
    for c, (start, ocr) in enumerate(CLIPS):
        imgs = frames(10 + c, SIZE[family])
        images.append(imgs)
        out = enc.encode(imgs)
        n = out.tokens.shape[1]
        toks = out.tokens.reshape(-1, out.tokens.shape[2])
        times = np.repeat(start + np.arange(FRAMES, dtype=np.float32), n)
        pos = np.tile(np.arange(n, dtype=np.int32), FRAMES)
        clip = ClipMemory(source_id="v", start=start, end=start + FRAMES - 1, vector=out.pooled[0],
                          keyframes=(start,), tokens=toks, token_times=times, token_positions=pos,
                          ocr_text=ocr, id=c)
        idx = np.arange(len(toks))
        if keep < 1.0:
            idx = np.sort(rng.choice(len(toks), max(1, int(len(toks) * keep)), replace=False))
        items.append(ContextItem(clip=clip, score=1.0 - c / 10, tokens=toks[idx], token_times=times[idx],
                                 token_positions=pos[idx], rank=c))
    ctx = Context(items=tuple(items), budget=10_000, question=Question("what happens in the video ?"),
                  tokens=enc.token_spec)
    return ctx, images


def reference_inputs(family, model_dir, vlm, ids, images):
    """What the model's own forward gets for these frames, prepared as its processor does."""
    cfg = vlm.model.config
    input_ids = torch.tensor([ids])
    if family == "qwen2.5-vl":
        vc = cfg.vision_config
        proc = processor_class(family).from_pretrained(
            model_dir, patch_size=vc.patch_size, merge_size=vc.spatial_merge_size,
            temporal_patch_size=vc.temporal_patch_size, min_pixels=16, max_pixels=10 ** 6)
        out = proc([im for clip in images for im in clip], return_tensors="pt")
        grid = out["image_grid_thw"][0]
        return dict(input_ids=input_ids, pixel_values_videos=out["pixel_values"],
                    video_grid_thw=torch.tensor([[FRAMES, int(grid[1]), int(grid[2])]] * len(images)),
                    second_per_grid_ts=torch.tensor([1.0] * len(images)),
                    mm_token_type_ids=(input_ids == cfg.video_token_id).int() * 2)
    proc = processor_class(family).from_pretrained(model_dir)
    mean = torch.tensor(proc.image_mean).view(3, 1, 1)
    std = torch.tensor(proc.image_std).view(3, 1, 1)
    px = torch.stack([torch.stack([(torch.from_numpy(im).permute(2, 0, 1).float() * proc.rescale_factor
                                    - mean) / std for im in clip]) for clip in images])
    if family == "llava-ov":   # each clip a video: [clips, frames, 3, H, W]
        return dict(input_ids=input_ids, pixel_values_videos=px)
    return dict(input_ids=input_ids, pixel_values=px.reshape(1, -1, *px.shape[2:]))


@pytest.mark.parametrize("family", FAMILIES)
def test_injection_equals_model_forward(models, family):
    ctx, images = make_context(family, models[family])
    ans = create_answerer(AnswerConfig(name="hf", model=models[family], device="cpu"))
    vlm = ans.vlm_for(ctx.tokens)
    p = ans.prompt(ctx, vlm)
    assert p.visual_tokens == sum(it.n_tokens for it in ctx.items)
    with torch.inference_mode():
        ours = vlm.model(inputs_embeds=ans.embeds(p, vlm), position_ids=p.positions).logits[0, -1]
        ref_in = reference_inputs(family, models[family], vlm, p.ids, images)
        ref = vlm.model(**ref_in).logits[0, -1]
    assert torch.isfinite(ref).all() and ref.abs().max() > 0
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), float((ours - ref).abs().max())
    if family == "qwen2.5-vl":   # the model's own M-RoPE ids for the same sequence
        keys = ("input_ids", "mm_token_type_ids", "video_grid_thw", "second_per_grid_ts")
        own, _ = vlm.model.model.get_rope_index(**{k: ref_in[k] for k in keys})
        assert torch.equal(own, p.positions)
        # real times in the temporal channel: frames 1 s apart are tokens_per_second apart
        vis = p.positions[:, 0, torch.from_numpy(p.is_visual)]
        tps = vlm.config.vision_config.tokens_per_second
        n = ctx.tokens.grid[0] * ctx.tokens.grid[1]
        assert int(vis[0, n] - vis[0, 0]) == tps


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_tokens_keep_their_positions(models, family):
    full, _ = make_context(family, models[family])
    pruned, _ = make_context(family, models[family], keep=0.3, seed=1)
    ans = create_answerer(AnswerConfig(name="hf", model=models[family], device="cpu"))
    vlm = ans.vlm_for(full.tokens)
    grid = full.tokens.grid
    for f_it, p_it in zip(full.items, pruned.items):
        assert 0 < p_it.n_tokens < f_it.n_tokens
        # each kept token carries its (t, row, col), the same as in the full clip
        fc = f_it.coords(grid)
        pc = p_it.coords(grid)
        key = {tuple(r): i for i, r in enumerate(fc.tolist())}
        at = [key[tuple(r)] for r in pc.tolist()]
        assert np.array_equal(f_it.tokens[at], p_it.tokens)
    pf, pp = ans.prompt(full, vlm), ans.prompt(pruned, vlm)
    assert pp.visual_tokens < pf.visual_tokens
    # the same text around the visual tokens in both runs
    assert [i for i, v in zip(pf.ids, pf.is_visual) if not v] == \
        [i for i, v in zip(pp.ids, pp.is_visual) if not v]
    if family == "qwen2.5-vl":   # M-RoPE ids of each kept token = its ids in the full run
        fpos = pf.positions[:, 0, torch.from_numpy(pf.is_visual)]
        ppos = pp.positions[:, 0, torch.from_numpy(pp.is_visual)]
        off = start = 0
        for f_it, p_it in zip(full.items, pruned.items):
            key = {tuple(r): i for i, r in enumerate(f_it.coords(grid).tolist())}
            at = torch.tensor([key[tuple(r)] for r in p_it.coords(grid).tolist()])
            assert torch.equal(fpos[:, off + at], ppos[:, start:start + p_it.n_tokens])
            off += f_it.n_tokens
            start += p_it.n_tokens
        # decoding continues from the same offset as after the full prefill
        assert pp.next_position == pf.next_position


def test_answer_generates_with_timings(models):
    family = "qwen2.5-vl"
    ctx, _ = make_context(family, models[family], keep=0.5)
    ans = create_answerer(AnswerConfig(name="hf", model=models[family], device="cpu",
                                       max_new_tokens=4))
    out = ans.answer(ctx.question, ctx)
    assert isinstance(out.answer, str) and out.answer
    assert out.timings["visual_tokens"] == sum(it.n_tokens for it in ctx.items)
    assert out.timings["prefill_s"] > 0 and out.timings["generate_s"] >= 0
    assert 1 <= out.timings["generated_tokens"] <= 4
    assert [e.start for e in out.evidence] == [0.0, 10.0]


@pytest.mark.parametrize("store_family,asked", [("llava-ov", "qwen2.5-vl"), ("smolvlm", "llava-ov")])
def test_refuses_tokens_of_another_tower(models, store_family, asked):
    ctx, _ = make_context(store_family, models[store_family])
    ans = create_answerer(AnswerConfig(name="hf", model=models[asked], device="cpu"))
    with pytest.raises(StoreError, match="store's visual tokens come from .*answer.model: "):
        ans.answer(ctx.question, ctx)


DATA = Path(__file__).resolve().parents[1] / "data"
ROOT = Path(__file__).resolve().parents[2]


def test_index_then_ask_end_to_end(models, tmp_path, capsys):
    """A real video indexed with a family profile (the tiny model in place of the hub one),
    then asked through the CLI: the hf answerer reads the stored tokens; another family's
    answerer is refused with one error line."""
    from pipelines.cli import main

    store = tmp_path / "store"
    tiny = ["--set", f"encoder.model={models['qwen2.5-vl']}", "--set", "encoder.size=32"]
    code = main(["index", str(DATA / "world_3s.mp4"), "--store", str(store), "--config",
                 str(ROOT / "configs" / "hf-qwen2.5-vl.yaml"), *tiny, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    manifest = json.loads((store / "manifest.json").read_text())
    spec = manifest["spec"]["tokens"]
    assert spec["model"] == models["qwen2.5-vl"] and spec["space"] == "llm-input:qwen2_5_vl:32"
    assert spec["grid"] == [4, 4]
    code = main(["ask", "--store", str(store), "what happens in the video ?", "--json",
                 "--set", "answer.name=hf", "--set", "answer.max_new_tokens=3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    assert res["answer"]
    assert res["timings"]["visual_tokens"] > 0 and res["timings"]["prefill_s"] > 0
    # a store built with Qwen2.5-VL's tower, asked with LLaVA-OneVision: one clear error line
    code = main(["ask", "--store", str(store), "what happens ?", "--set", "answer.name=hf",
                 "--set", f"answer.model={models['llava-ov']}"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "answer.model: " + models["qwen2.5-vl"] in lines[0]
