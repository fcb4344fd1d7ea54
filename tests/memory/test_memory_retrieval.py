"""Retriever: token budget, chronological order, anchors, drift correction, lexical/OCR,
token-level image matching."""

from __future__ import annotations

import dataclasses
import re
import zlib

import numpy as np
import pytest

from conftest import DT, DV, make_clip, unit
from memory.budget import allocate
from memory.retrieval import Retriever, _View, _view_scores
from memory.store import MemoryStore
from streamvid.config import RetrievalConfig
from streamvid.types import EncoderOutput, Question, TextEncoder, VisionEncoder


class TableVision(VisionEncoder):
    """Test double: an image whose centre pixel is ``i`` encodes to ``pooled[i]``/``tokens[i]``
    (every token ``pooled[i]`` when no tokens are given)."""

    name = "table"
    model_id = "test-encoder/v1"
    dim = pooled_dim = DV
    grid = (2, 4)

    def __init__(self, pooled: np.ndarray, tokens: np.ndarray | None = None):
        self.pooled, self.tokens = pooled, tokens

    def encode(self, images):
        # a picture whose centre is not a row of the table (e.g. a plain frame of the
        # retriever's in-context views in a shade past the table) encodes to zeros
        idx = [int(im[im.shape[0] // 2, im.shape[1] // 2, 0]) for im in images]
        known = np.array([i < len(self.pooled) for i in idx])
        safe = [i if k else 0 for i, k in zip(idx, known)]
        p = self.pooled[safe].astype(np.float32) * known[:, None]
        t = self.tokens[safe] if self.tokens is not None else np.repeat(p[:, None], 8, axis=1)
        t = t.astype(np.float32) * known[:, None, None]
        return EncoderOutput(tokens=t, pooled=p, grid=self.grid)


class HashText(TextEncoder):
    """Test double: hashed bag of words, unit length."""

    name = "hash"
    model_id = "test-text/v1"
    dim = DT

    def encode(self, texts):
        out = np.zeros((len(texts), DT), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z0-9]+", t.lower()):
                out[i, zlib.crc32(w.encode()) % DT] += 1.0
        out += 1e-3
        return unit(out)


def image(i: int) -> np.ndarray:
    return np.full((8, 8, 3), i, np.uint8)


def test_allocate_is_proportional_with_a_floor():
    a = allocate([0.9, 0.5, 0.1], [100, 100, 100], 100, 10)
    assert sum(a) == 100 and a[0] > a[1] > a[2] >= 10
    assert allocate([0.9, 0.5], [5, 100], 60, 10) == [5, 55]  # capped hit gives the rest away
    a = allocate([0.9, 0.5, 0.1], [50, 50, 50], 25, 10)  # the floor fits two hits only
    assert sum(a) == 25 and a[0] > a[1] >= 10 and a[2] == 0
    assert sum(allocate([0.3] * 4, [3, 3, 3, 3], 100, 16)) == 12


def test_budget_order_anchors_and_ranks(tmp_path, spec):
    rng = np.random.default_rng(0)
    clips = [make_clip(i, tokens=int(rng.integers(0, 30)), source="v") for i in range(300)]
    with MemoryStore.open(tmp_path / "s", spec, mode="w") as store:
        store.add(clips)
        store.commit()
    store = MemoryStore.open(tmp_path / "s", spec, mode="r")
    enc = TableVision(np.stack([c.vector for c in clips]))
    for trial in range(40):
        cfg = RetrievalConfig(top_k=int(rng.integers(1, 10)), min_tokens=int(rng.integers(0, 8)),
                              anchors=int(rng.integers(0, 4)), anchor_tokens=int(rng.integers(1, 6)),
                              token_budget=int(rng.integers(1, 400)),
                              late_interaction=0.5)  # random tokens: let the exact vector win
        r = Retriever(store, cfg, vision_encoder=enc, text_encoder=HashText())
        target = int(rng.integers(0, 200))
        ctx = r.retrieve(Question(image=image(target)))
        assert ctx.tokens_used <= cfg.token_budget
        starts = [it.clip.start for it in ctx.items]
        assert starts == sorted(starts)
        hits = [it for it in ctx.items if not it.is_anchor]
        ranks = sorted(it.rank for it in hits)
        assert len(set(ranks)) == len(ranks) and all(0 <= k < cfg.top_k for k in ranks)
        by_rank = sorted(hits, key=lambda it: it.rank)
        assert [it.score for it in by_rank] == sorted((it.score for it in by_rank), reverse=True)
        if by_rank:
            assert by_rank[0].clip.id == target  # the exact match is the best hit
        n_anchor = sum(it.is_anchor for it in ctx.items)
        if cfg.token_budget >= 4 * cfg.anchors * cfg.anchor_tokens:
            assert n_anchor == cfg.anchors
        for it in ctx.items:
            assert it.tokens.shape[0] == it.token_times.shape[0] <= max(it.clip.n_tokens, 1)
            assert list(it.token_times) == sorted(it.token_times)
        if cfg.token_budget >= 300 and cfg.min_tokens:
            for it in hits:
                assert it.n_tokens >= min(cfg.min_tokens, max(it.clip.n_tokens, 1))
    # a generous budget: hits get tokens in order of relevance
    r = Retriever(store, RetrievalConfig(top_k=5, token_budget=60, min_tokens=2, anchors=0,
                                         late_interaction=0.5), vision_encoder=enc)
    ctx = r.retrieve(Question(image=image(7)))
    assert ctx.hits()[0].clip.id == 7 and ctx.tokens_used <= 60


def _drift_store(tmp_path, spec, n=1200):
    """A stream whose features drift: late clips share a growing common component."""
    rng = np.random.default_rng(5)
    drift = unit(rng.normal(size=DV))
    needles = unit(rng.normal(size=(2, DV)))
    early, late = 60, n - 60
    clips = []
    for i in range(n):
        g = 4.0 * i / n
        base = needles[0] if i == early else needles[1] if i == late else rng.normal(size=DV)
        base = unit(base)
        noise = 0.8 * unit(rng.normal(size=DV)) if i in (early, late) else 0
        clips.append(make_clip(i, tokens=0, text=False, vector=unit(base + noise + g * drift)))
    path = tmp_path / "drift"
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add(clips)
        store.commit()
    queries = unit(needles + drift)  # the query shares the drift direction, as late frames do
    return MemoryStore.open(path, spec, mode="r"), queries, (early, late)


def test_recency_correction_finds_early_and_late_needles(tmp_path, spec):
    store, queries, (early, late) = _drift_store(tmp_path, spec)
    enc = TableVision(queries)
    on = Retriever(store, RetrievalConfig(top_k=3, anchors=0), vision_encoder=enc)
    off = Retriever(store, RetrievalConfig(top_k=3, anchors=0, recency_correction=False),
                    vision_encoder=enc)
    assert on.retrieve(Question(image=image(0))).hits()[0].clip.id == early
    assert on.retrieve(Question(image=image(1))).hits()[0].clip.id == late
    # without the correction the drift buries the early needle under late clips
    top_off = [it.clip.id for it in off.retrieve(Question(image=image(0))).hits()]
    assert early not in top_off
    assert off.retrieve(Question(image=image(1))).hits()[0].clip.id == late


def test_token_level_matching_finds_a_small_needle(tmp_path, spec):
    rng = np.random.default_rng(1234)   # not a seed of make_clip's tokens (those are 0..199)
    needle = unit(rng.normal(size=DV))
    clips = [make_clip(i, tokens=8) for i in range(200)]
    tk = unit(rng.normal(size=(8, DV)))
    tk[3] = needle  # the needle fills one token of clip 120; its pooled vector does not show it
    clips[120] = dataclasses.replace(clips[120], tokens=tk.astype(np.float16),
                                     vector=unit(tk.mean(0) * 8 - needle))
    with MemoryStore.open(tmp_path / "s", spec, mode="w") as store:
        store.add(clips)
        store.commit()
    # a query image of the needle alone: pooled and all tokens are the needle
    q = unit(needle + 0.05 * rng.normal(size=DV))[None]
    enc = TableVision(q, np.repeat(q[:, None], 8, axis=1))
    ctx = Retriever(store, RetrievalConfig(top_k=1, anchors=0, candidates=200),
                    vision_encoder=enc).retrieve(Question(image=image(0)))
    assert ctx.hits()[0].clip.id == 120
    top = ctx.hits()[0]
    # the most query-relevant kept tokens are the ones given to the answerer
    assert np.max(unit(top.tokens) @ q[0]) > 0.85
    ctx0 = Retriever(store, RetrievalConfig(top_k=1, anchors=0, candidates=200,
                                            late_interaction=0.0),
                     vision_encoder=enc).retrieve(Question(image=image(0)))
    assert ctx0.hits()[0].clip.id != 120


def test_view_scores_need_the_view_layout_in_one_frame():
    rng = np.random.default_rng(3)
    a, b = unit(rng.normal(size=(2, DV)))
    view = _View(tokens=np.stack([a, b]), weights=np.array([0.5, 0.5]), rows=np.array([0, 0]),
                 cols=np.array([0, 1]), mean=unit(a + b))

    def clip(i, toks, times, pos):
        return dataclasses.replace(make_clip(i, tokens=0), tokens=np.stack(toks).astype(np.float16),
                                   token_times=np.array(times, np.float32),
                                   token_positions=np.array(pos, np.int32))

    grid = (3, 5)
    side_by_side = clip(0, [a, b], [1.0, 1.0], [6, 7])       # (1, 1) and (1, 2)
    far_apart = clip(1, [a, b], [5.0, 5.0], [0, 14])          # (0, 0) and (2, 4)
    two_frames = clip(2, [a, b], [9.0, 10.0], [6, 7])         # the right cells, apart in time
    off_grid = clip(3, [a, b], [13.0, 13.0], [6, 15])         # not positions on this grid
    s = _view_scores([side_by_side, far_apart, two_frames, off_grid, make_clip(4, tokens=0)],
                     [view], grid)
    assert s[0] == pytest.approx(1.0, abs=1e-2)
    assert s[1] == pytest.approx(0.5, abs=0.1) and s[2] == pytest.approx(0.5, abs=0.1)
    assert np.isnan(s[3]) and np.isnan(s[4])
    # a token one cell off still matches: no needle sits on the grid as in the view
    nudged = clip(5, [a, b], [1.0, 1.0], [6, 12])             # (1, 1) and (2, 2)
    assert _view_scores([nudged], [view], grid)[0] == pytest.approx(1.0, abs=1e-2)


def test_text_question_about_a_sign_prefers_ocr_text(tmp_path, spec):
    descr = ["a kitchen with a kettle", "a sign on the wall of a cafe",
             "a wifi router on a shelf with blinking lights", "people at a table",
             "a street at night"]
    clips = [make_clip(i, description=descr[i % len(descr)]) for i in range(100)]
    clips[77] = dataclasses.replace(clips[77], description="a wall", ocr_text="WIFI PASSWORD: tiger42")
    clips[33] = dataclasses.replace(clips[33], description="a door", ocr_text="EXIT ONLY")
    enc = HashText()
    clips = [dataclasses.replace(c, text_vector=enc.encode([c.description])[0]) for c in clips]
    with MemoryStore.open(tmp_path / "s", spec, mode="w") as store:
        store.add(clips)
        store.commit()
    r = Retriever(store, RetrievalConfig(top_k=3, anchors=0), text_encoder=enc)
    for q in ("what is the wifi password on the sign?", 'which clip shows "tiger42"?'):
        assert r.retrieve(Question(text=q)).hits()[0].clip.id == 77, q
    assert r.retrieve(Question(text="what does the exit sign say")).hits()[0].clip.id == 33
    # an ordinary question still follows the descriptions
    top = r.retrieve(Question(text="kettle in a kitchen")).hits()[0].clip
    assert "kettle" in top.description


def test_retriever_follows_a_live_store(tmp_path, spec):
    writer = MemoryStore.open(tmp_path / "s", spec, mode="a")
    writer.add([make_clip(i, ocr="") for i in range(20)])
    writer.commit()
    reader = MemoryStore.open(tmp_path / "s", spec, mode="r")
    r = Retriever(reader, RetrievalConfig(top_k=1, anchors=0), text_encoder=HashText())
    assert r.retrieve(Question(text="what does the sign say about zebra")).hits()[0].clip.id < 20
    writer.add([make_clip(20, ocr="ZEBRA CROSSING")])
    writer.commit()
    assert reader.refresh()
    assert r.retrieve(Question(text="what does the sign say about zebra")).hits()[0].clip.id == 20
    writer.close()


@pytest.mark.slow
def test_real_sentence_encoder_with_ocr_text(tmp_path, monkeypatch):
    """With the real MiniLM sentence encoder: dense text matching plus OCR lexical fusion."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from memory.store import StoreSpec
    from streamvid.config import TextConfig
    from streamvid.encoders import create_text_encoder

    enc = create_text_encoder(TextConfig())
    spec = StoreSpec("test-encoder/v1", DV, enc.model_id, enc.dim, {})
    descr = ["a dog running on a beach", "a man cooking pasta in a kitchen",
             "a sign on the wall of a cafe", "cars driving on a highway at night",
             "a wifi router with blinking lights", "children playing football in a park"]
    ocr = {2: "", 40: "WIFI PASSWORD tiger42", 41: "MENU espresso 2.50"}
    clips = []
    for i in range(60):
        d = descr[i % len(descr)] if i not in (40, 41) else "a wall in a cafe"
        clips.append(make_clip(i, description=d, ocr=ocr.get(i, "")))
    vecs = enc.encode([c.description for c in clips])
    clips = [dataclasses.replace(c, text_vector=vecs[i]) for i, c in enumerate(clips)]
    with MemoryStore.open(tmp_path / "s", spec, mode="w") as store:
        store.add(clips)
        store.commit()
    r = Retriever(store, RetrievalConfig(top_k=3, anchors=0), text_encoder=enc)
    assert r.retrieve(Question(text="what is the wifi password on the sign?")).hits()[0].clip.id == 40
    assert r.retrieve(Question(text="how much is an espresso?")).hits()[0].clip.id == 41
    top = r.retrieve(Question(text="when was someone making food?")).hits()[0].clip
    assert "cooking" in top.description


def test_shift_max_is_the_max_over_a_square_window():
    from memory.retrieval import _shift_max

    g = np.random.default_rng(0).normal(size=(2, 3, 5, 7)).astype(np.float32)   # [..., H, W]
    want = np.empty_like(g)
    for r in range(5):
        for c in range(7):
            want[..., r, c] = g[..., max(0, r - 1):r + 2, max(0, c - 1):c + 2].max(axis=(2, 3))
    assert np.array_equal(_shift_max(g, 1), want)
    assert _shift_max(g, 0) is g


def test_view_scores_equal_the_definition_cell_by_cell():
    """The vectorised layout matching gives, for random clips and views, what its docstring
    defines, computed here centre by centre and token by token."""
    from memory.retrieval import VIEW_INSIDE, VIEW_REACH

    rng = np.random.default_rng(5)
    gh, gw = 4, 6
    views = []
    for m in (1, 3, 5):
        cells = rng.choice(gh * gw, m, replace=False)
        w = rng.random(m) + 0.1
        views.append(_View(tokens=unit(rng.normal(size=(m, DV))), weights=w / w.sum(),
                           rows=cells // gw - 1, cols=cells % gw - 2, mean=unit(rng.normal(size=DV))))
    clips = []
    for i in range(7):
        times, pos = [], []
        for f in range(1 + i % 3):
            n = int(rng.integers(1, gh * gw))
            pos += rng.choice(gh * gw, n, replace=False).tolist()
            times += [float(f)] * n
        toks = rng.normal(size=(len(pos), DV)) * (rng.random((len(pos), 1)) + 0.5)
        clips.append(dataclasses.replace(make_clip(i, tokens=0), tokens=toks.astype(np.float16),
                                         token_times=np.array(times, np.float32),
                                         token_positions=np.array(pos, np.int32)))

    def reference(clip):
        toks = unit(np.asarray(clip.tokens, np.float32))
        best = -np.inf
        for t in np.unique(clip.token_times):
            on = clip.token_times == t
            at = {int(p): tok for p, tok in zip(clip.token_positions[on], toks[on])}
            for v in views:
                for r in range(gh):
                    for c in range(gw):
                        total = inside = 0.0
                        for tok, w, dr, dc in zip(v.tokens, v.weights, v.rows, v.cols):
                            rr, cc = r + dr, c + dc
                            if not (0 <= rr < gh and 0 <= cc < gw):
                                continue
                            inside += w
                            near = [float(tok @ at[y * gw + x]) for y in range(rr - VIEW_REACH, rr + VIEW_REACH + 1)
                                    for x in range(cc - VIEW_REACH, cc + VIEW_REACH + 1)
                                    if 0 <= y < gh and 0 <= x < gw and y * gw + x in at]
                            total += w * max(near + [0.0])
                        if inside >= VIEW_INSIDE:
                            best = max(best, total / inside)
        return best

    got = _view_scores(clips, views, (gh, gw))
    want = np.array([reference(c) for c in clips])
    assert np.allclose(got, want, atol=1e-3), (got, want)
