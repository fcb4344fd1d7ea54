"""Bounded stores: hierarchical consolidation keeps the bound and the whole timeline."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DV, make_clip, unit
from memory.consolidate import compress_tokens, merge_clips
from memory.store import MemoryStore
from streamvid.config import MemoryConfig


def test_merge_clips_covers_both_and_compresses_tokens():
    a, b = make_clip(0, tokens=8, ocr="EXIT"), make_clip(1, tokens=8, ocr="OPEN 24H")
    m = merge_clips(a, b)
    assert (m.start, m.end) == (a.start, b.end)
    assert (m.level, m.merged) == (1, 2)
    assert m.n_tokens == 8 and m.tokens.dtype == np.float16
    assert np.linalg.norm(m.vector) == pytest.approx(1.0, abs=1e-5)
    # the merged vector sits between its parts
    assert float(m.vector @ a.vector) > float(b.vector @ a.vector)
    assert float(m.vector @ b.vector) > float(a.vector @ b.vector)
    assert "EXIT" in m.ocr_text and "OPEN 24H" in m.ocr_text
    assert dict(m.labels)["dog"] == pytest.approx(0.7)
    assert list(m.token_times) == sorted(m.token_times)
    assert m.token_times.min() >= a.start and m.token_times.max() <= b.end
    c = merge_clips(m, make_clip(2))  # weights follow the number of merged clips
    assert (c.level, c.merged) == (2, 3)


def test_compress_tokens_keeps_distinct_groups():
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(4, DV)))
    x = np.concatenate([c + 0.05 * rng.normal(size=(10, DV)) for c in centres]).astype(np.float32)
    t, times, pos = compress_tokens(x, np.arange(40, dtype=np.float32),
                                    np.arange(40, dtype=np.int32), 4)
    sims = unit(t) @ centres.T
    assert sorted(np.argmax(sims, axis=1).tolist()) == [0, 1, 2, 3]  # one token per group
    assert sims.max(axis=1).min() > 0.95


def _scene_stream(n: int, rng: np.random.Generator):
    scenes = unit(rng.normal(size=(12, DV)))
    scene = 0
    for i in range(n):
        if i % 17 == 0:
            scene = int(rng.integers(len(scenes)))
        v = unit(scenes[scene] + 0.3 * rng.normal(size=DV))
        yield make_clip(i, source="cam" if i % 5 else "door", vector=v, tokens=8,
                        ocr=f"T{i}" if i % 50 == 0 else "")


@pytest.mark.slow
def test_bounded_stream_stays_in_bound_and_covers_the_timeline(tmp_path, spec):
    cap = 80
    cfg = MemoryConfig(capacity_clips=cap)
    rng = np.random.default_rng(1)
    n = 900
    with MemoryStore.open(tmp_path / "s", spec, mode="w", config=cfg) as store:
        batch = []
        for clip in _scene_stream(n, rng):
            batch.append(clip)
            if len(batch) == 15:
                store.add(batch)
                store.commit()
                batch = []
                assert len(store) <= cap
        store.add(batch)
        store.commit()
        m = store.manifest
    store = MemoryStore.open(tmp_path / "s", spec, mode="r")
    assert len(store) <= cap
    clips = store.get(store.ids())
    assert m["counts"]["merges"] > 0 and m["counts"]["consolidated"] > 0
    assert sum(int(v) for v in m["counts"]["levels"].values()) == len(store)
    for src, originals in (("cam", [i for i in range(n) if i % 5]),
                           ("door", [i for i in range(n) if i % 5 == 0])):
        mine = sorted((c for c in clips if c.source_id == src), key=lambda c: c.start)
        # every original clip counted once, nothing dropped
        assert sum(c.merged for c in mine) == len(originals)
        # spans are disjoint and cover every original clip
        for a, b in zip(mine, mine[1:]):
            assert a.end <= b.start + 1e-6
        for i in originals:
            s = i * 4.0
            assert any(c.start <= s and s + 4.0 <= c.end for c in mine), f"clip {i} lost"
        # older memories are coarser; the newest ones are kept in full detail
        half = len(mine) // 2
        old = np.mean([c.merged for c in mine[:half]])
        new = np.mean([c.merged for c in mine[half:]])
        assert old > new
        assert mine[-1].level == 0
    # OCR text of consolidated clips survives
    ocr = " ".join(c.ocr_text for c in clips)
    assert "T0" in ocr and "T850" in ocr


def test_byte_bound_is_respected(tmp_path, spec):
    cfg = MemoryConfig(capacity_bytes=120_000)
    with MemoryStore.open(tmp_path / "s", spec, mode="w", config=cfg) as store:
        for b in range(12):
            store.add([make_clip(b * 20 + j, tokens=16) for j in range(20)])
            store.commit()
            assert store.bytes_estimate() <= 120_000 + 20_000
        assert store.manifest["counts"]["merges"] > 0
        assert sum(c.merged for c in store.get(store.ids())) == 240
