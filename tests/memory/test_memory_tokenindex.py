"""The token index: shortlists for image questions that keep the exhaustive answer, kept up
to date by commits and consolidation, and surviving a crash during a commit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import memory.store as store_mod
from memory import tokenindex
from memory.retrieval import Retriever
from memory.store import MemoryStore
from streamvid.config import MemoryConfig, RetrievalConfig
from streamvid.errors import StoreError
from streamvid.types import Question

from conftest import DV, commit_killed_before_manifest, flip_middle_byte, make_clip, unit
from test_memory_retrieval import TableVision, image

N_CLIPS = 600
NEEDLE = 437   # the clip showing the pictured object: tokens a and b side by side in one frame


def _trap_store(path: Path, spec) -> tuple[np.ndarray, list[int]]:
    """A store where the needle clip is found only by matching the whole view.

    The query's tokens are ``a`` and ``b`` side by side. The needle clip shows both (a little
    noisy); 60 decoy clips show ``a`` exactly but no ``b`` (a shortlist by any one query token
    fills up with them), and 60 more have pooled vectors almost equal to the query's (a
    shortlist by pooled vectors finds only them; the needle's pooled vector is far off).
    Returns the query's tokens ``[8, D]`` (grid 2x4) and the decoy ids.
    """
    rng = np.random.default_rng(12345)   # not a seed of make_clip (those are clip numbers)
    a, b = unit(rng.normal(size=(2, DV)))
    query = np.zeros((8, DV), np.float32)
    query[1], query[2] = a, b
    pooled = unit(a + b)
    clips, decoys = [], []
    for i in range(N_CLIPS):
        c = make_clip(i, tokens=8)
        c = dataclasses.replace(c, token_times=np.full(8, c.start, np.float32))
        tk = unit(np.asarray(c.tokens, np.float32))
        if i == NEEDLE:
            tk[1] = unit(a + 0.25 * rng.normal(size=DV) / np.sqrt(DV))
            tk[2] = unit(b + 0.25 * rng.normal(size=DV) / np.sqrt(DV))
            c = dataclasses.replace(c, vector=unit(-pooled + 0.1 * rng.normal(size=DV)))
        elif i % 10 == 3:
            tk[1] = a
            decoys.append(i)
        elif i % 10 == 7:
            c = dataclasses.replace(c, vector=unit(pooled + 0.05 * rng.normal(size=DV)))
            decoys.append(i)
        clips.append(dataclasses.replace(c, tokens=tk.astype(np.float16)))
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add(clips)
        store.commit()
    return query, decoys


def _exhaustive_and_shortlist_top3(store: MemoryStore, query: np.ndarray
                                   ) -> tuple[list[int], list[int]]:
    """The top 3 clips of an image question whose views hold ``query``'s tokens, scored
    exhaustively and through a shortlist of 8."""
    enc = TableVision(unit(query.sum(0))[None], query[None])

    def top(cfg: RetrievalConfig) -> list[int]:
        ctx = Retriever(store, cfg, vision_encoder=enc).retrieve(Question(image=image(0)))
        return [it.clip.id for it in ctx.hits()]

    return (top(RetrievalConfig(top_k=3, anchors=0, image_shortlist=0)),
            top(RetrievalConfig(top_k=3, anchors=0, image_shortlist=8, image_exhaustive=0)))


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_shortlist_finds_what_exhaustive_scoring_finds(tmp_path, spec, monkeypatch, kind):
    if kind == "ivfpq":   # the large-store index (projected, IVF-PQ), on a small store
        monkeypatch.setattr(tokenindex, "IVF_FROM", 1024)
        monkeypatch.setattr(tokenindex, "PCA_DIMS", 32)
    query, decoys = _trap_store(tmp_path / "s", spec)
    store = MemoryStore.open(tmp_path / "s", spec, mode="r")
    assert store.manifest["tokindex"] and store.token_index().kind == kind
    exhaustive, short = _exhaustive_and_shortlist_top3(store, query)
    assert exhaustive[0] == NEEDLE and short[0] == NEEDLE
    # the traps are real: a shortlist of 8 by the pooled vector, or by any one query token,
    # misses the needle
    by_pooled = [i for i, _ in store.search(unit(query.sum(0)), 8)]
    assert NEEDLE not in by_pooled and set(by_pooled) <= set(decoys)
    a, b = query[1], query[2]
    ti = store.token_index()
    for t in (a, b):
        one = ti.shortlist([(t[None], np.ones(1, np.float32))], 8)
        assert NEEDLE not in one or t is b
    assert NEEDLE in ti.shortlist([(np.stack([a, b]), np.array([0.5, 0.5], np.float32))], 8)
    # a source filter is honoured
    assert ti.shortlist([(np.stack([a, b]), np.array([0.5, 0.5], np.float32))], 8,
                        np.array([1, 2, 3])) and set(
        ti.shortlist([(np.stack([a, b]), np.array([0.5, 0.5], np.float32))], 8,
                     np.array([1, 2, 3]))) <= {1, 2, 3}


def _covers_live(store: MemoryStore) -> None:
    ti = store.token_index()
    assert np.array_equal(ti.ids, store.ids())
    assert not ti.dirty   # read from the commit's file, nothing to add


def test_commits_and_consolidation_keep_the_index_current(tmp_path, spec):
    path = tmp_path / "s"
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add([make_clip(i) for i in range(40)])
        store.commit()
        first = store.manifest["tokindex"]
        store.remove([3, 4, 5])
        store.add([make_clip(i) for i in range(40, 50)])
        store.commit()
        assert store.manifest["tokindex"] != first
        assert not (path / first).exists() or first == store._previous_manifest["tokindex"]
    with MemoryStore.open(path, spec, mode="r") as r:
        _covers_live(r)
        assert 3 not in r.token_index().ids and 45 in r.token_index().ids
    # a bounded store consolidates: merged clips replace their parts in the index too
    cfg = MemoryConfig(capacity_clips=30, keep_recent=0.2)
    with MemoryStore.open(path, spec, mode="a", config=cfg) as store:
        store.add([make_clip(i) for i in range(50, 60)])
        store.commit()
        assert len(store) <= 30
    with MemoryStore.open(path, spec, mode="r") as r:
        _covers_live(r)
        merged = [c.id for c in r.get(r.ids()) if c.merged > 1]
        assert merged and set(merged) <= set(r.token_index().ids.tolist())


def test_a_store_without_a_token_index_gets_one(tmp_path, spec):
    path = tmp_path / "s"
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add([make_clip(i) for i in range(20)])
        store.commit()
    # as a store written before the token index existed: its manifest names none
    m = json.loads((path / "manifest.json").read_text())
    name = m.pop("tokindex")
    m["files"].pop(name)
    (path / "manifest.json").write_text(json.dumps(m))
    with MemoryStore.open(path, spec, mode="r") as r:   # a reader builds one for itself
        assert np.array_equal(r.token_index().ids, r.ids())
    with MemoryStore.open(path, spec, mode="a") as w:   # a writer's next commit saves it
        w.add([make_clip(20)])
        w.commit()
    with MemoryStore.open(path, spec, mode="r") as r:
        _covers_live(r)


def test_a_damaged_token_index_is_an_error(tmp_path, spec):
    path = tmp_path / "s"
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add([make_clip(i) for i in range(20)])
        store.commit()
        name = store.manifest["tokindex"]
    flip_middle_byte(path / name)
    with MemoryStore.open(path, spec, mode="r") as r:
        with pytest.raises(StoreError, match="checksum"):
            r.token_index()


def _state(path: Path) -> tuple[int, str]:
    m = json.loads((path / "manifest.json").read_text())
    return m["generation"], m["tokindex"]


def test_a_failed_commit_leaves_the_last_index(tmp_path, spec, monkeypatch):
    path = tmp_path / "s"
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add([make_clip(i) for i in range(30)])
        store.commit()
    before = _state(path)

    def fail(*_a, **_k):
        raise OSError(28, "No space left on device")

    store = MemoryStore.open(path, spec, mode="a")
    store.remove([1, 2])
    store.add([make_clip(i) for i in range(30, 40)])
    monkeypatch.setattr(store_mod, "atomic_write_json", fail)   # the manifest: the commit point
    with pytest.raises(OSError):
        store.commit()
    monkeypatch.undo()
    # the new token index was written, the manifest that would name it was not
    assert (path / tokenindex.file_name(before[0] + 1)).exists()
    store.close()
    assert _state(path) == before
    with MemoryStore.open(path, spec, mode="r") as r:
        _covers_live(r)
        assert len(r) == 30 and 1 in r.token_index().ids
    with MemoryStore.open(path, spec, mode="a"):   # a writer tidies the leftover away
        pass
    assert not (path / tokenindex.file_name(before[0] + 1)).exists()


def test_a_process_killed_during_commit_leaves_a_valid_index(tmp_path, spec):
    """A writer killed (SIGKILL) between writing the token index and the manifest."""
    path = tmp_path / "s"
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add([make_clip(i) for i in range(30)])
        store.commit()
    before = _state(path)
    commit_killed_before_manifest(path, "conftest:make_clip")
    assert (path / tokenindex.file_name(before[0] + 1)).exists()   # written, never named
    assert _state(path) == before
    with MemoryStore.open(path, spec, mode="r") as r:
        _covers_live(r)
        assert len(r) == 30
    with MemoryStore.open(path, spec, mode="a") as w:   # the next commit carries on
        w.add([make_clip(i) for i in range(30, 35)])
        w.commit()
    assert not (path / tokenindex.file_name(before[0] + 1)).exists() or \
        _state(path)[1] == tokenindex.file_name(before[0] + 1)
    with MemoryStore.open(path, spec, mode="r") as r:
        _covers_live(r)
        assert len(r) == 35


def test_identical_copies_do_not_crowd_the_shortlist(tmp_path, spec, monkeypatch):
    """Hours of one scene: 300 identical copies of a clip showing the query's token ``a``
    (and something like ``b`` beside it) and 300 of another showing ``b`` fill both tokens'
    nearest centroids, so a shortlist of single clips never sees the needle; grouped, each
    scene takes one place, and the shortlist ranks as exhaustive scoring does (the needle,
    then copies that tie, brought in from the best groups)."""
    query, _ = _trap_store(tmp_path / "s", spec)
    a, b = query[1], query[2]
    scenes = []
    for n, (pos, t) in enumerate(((1, a), (2, b))):
        scene = make_clip(N_CLIPS + n, tokens=8)
        tk = unit(np.asarray(scene.tokens, np.float32))
        tk[pos] = t
        if n == 0:   # next to it something like b: these copies rank right after the needle
            tk[2] = unit(b + 0.6 * unit(np.random.default_rng(7).normal(size=DV)))
        scenes += [dataclasses.replace(scene, start=s0, end=s0 + 4.0, keyframes=(s0 + 1.0,),
                                       token_times=np.full(8, s0, np.float32),
                                       tokens=tk.astype(np.float16))
                   for s0 in 4.0 * np.arange(N_CLIPS + 300 * n, N_CLIPS + 300 * (n + 1))]
    with MemoryStore.open(tmp_path / "s", spec, mode="a") as w:
        ids = w.add(scenes)
        w.commit()
    copies_a, copies_b = ids[:300], ids[300:]
    store = MemoryStore.open(tmp_path / "s", spec, mode="r")
    ti = store.token_index()
    assert not ti.dirty
    assert sorted(ti.group(copies_a[0])) == copies_a and sorted(ti.group(copies_b[7])) == copies_b
    views = [(np.stack([a, b]), np.array([0.5, 0.5], np.float32))]
    assert NEEDLE in ti.shortlist(views, 8)
    exhaustive, short = _exhaustive_and_shortlist_top3(store, query)
    assert exhaustive == [NEEDLE, *copies_a[:2]] and short == exhaustive
    # the group's first clip removed: the next takes its place (and the file says so)
    with MemoryStore.open(tmp_path / "s", spec, mode="a") as w:
        w.remove([copies_a[0]])
        w.commit()
    assert store.refresh()
    ti = store.token_index()
    assert not ti.dirty and sorted(ti.group(copies_a[1])) == copies_a[1:]
    assert {NEEDLE, copies_a[1]} <= set(ti.shortlist(views, 8))
    # the same store indexed clip by clip (no groups): the copies crowd the needle out
    monkeypatch.setattr(tokenindex, "GROUP_SIM", 2.0)
    single = tokenindex.TokenIndex(DV)
    single.sync(store)
    assert len(single.members) == len(store)
    assert NEEDLE not in single.shortlist(views, 8)
    # a source filter is honoured: the group's first allowed clip stands for it
    assert ti.shortlist(views, 8, np.array(copies_a[5:], np.int64)) == [copies_a[5]]
