"""Detections stored with clips: kept by the store and by consolidation, and used by retrieval
(objects named, a time named, the first appearance, summaries)."""

from __future__ import annotations

import dataclasses

from conftest import make_clip
from memory.consolidate import merge_clips
from memory.retrieval import Retriever
from memory.store import MemoryStore
from streamvid.config import RetrievalConfig
from streamvid.types import Detection, FrameObjects, Question
from test_memory_retrieval import HashText


def _objects(t: float, **counts: int) -> FrameObjects:
    dets = []
    for name, n in counts.items():
        dets += [Detection(name, 0.6, (0.1 * k, 0.2, 0.1 * k + 0.05, 0.5)) for k in range(n)]
    return FrameObjects(t, tuple(dets))


def _store(tmp_path, spec, clips):
    enc = HashText()
    clips = [dataclasses.replace(c, text_vector=enc.encode([c.description])[0]) for c in clips]
    store = MemoryStore.open(tmp_path / "s", spec, mode="w")
    store.add(clips)
    store.commit()
    return store, enc


def _street(n: int = 30):
    """Clips of 4 s; people everywhere, a car in clips 10 and 20, a dog nowhere."""
    clips = []
    for i in range(n):
        objs = [_objects(i * 4.0 + 1, person=1 + i % 4)]
        if i in (10, 20):
            objs.append(_objects(i * 4.0 + 2, person=2, car=1))
        clips.append(dataclasses.replace(make_clip(i, description="a street"), objects=tuple(objs)))
    return clips


def test_objects_survive_the_store_and_a_merge(tmp_path, spec):
    clips = _street(4)
    clips[1] = dataclasses.replace(clips[1], ocr_text="EXIT | Fire door", text_times=(4.0, 6.0))
    store, _ = _store(tmp_path, spec, clips)
    store.close()
    with MemoryStore.open(tmp_path / "s", spec, mode="r") as store:
        back = store.get([0, 1, 2, 3])
    assert [c.objects for c in back] == [c.objects for c in clips]
    assert back[1].text_times == (4.0, 6.0) and back[1].text_time("Fire door") == 6.0
    merged = merge_clips(back[0], back[1])
    assert merged.objects == back[0].objects + back[1].objects


def test_objects_named_find_their_clips_and_the_first_appearance(tmp_path, spec):
    store, enc = _store(tmp_path, spec, _street())
    r = Retriever(store, RetrievalConfig(top_k=3, anchors=0), text_encoder=enc)
    hits = r.retrieve(Question(text="when does a car appear?")).hits()
    assert {h.clip.id for h in hits[:2]} == {10, 20}
    assert r.retrieve(Question(text="when does a car first appear?")).hits()[0].clip.id == 10
    # how many: the clip with the most of them first
    assert r.retrieve(Question(text="how many people are there?")).hits()[0].clip.start % 16 == 12
    store.close()


def test_a_named_time_puts_the_clip_covering_it_first(tmp_path, spec):
    store, enc = _store(tmp_path, spec, _street())
    r = Retriever(store, RetrievalConfig(top_k=3, anchors=0), text_encoder=enc)
    top = r.retrieve(Question(text="how many people are there at 00:01:10?")).hits()[0].clip
    assert top.start <= 70 < top.end
    store.close()


def test_summary_takes_clips_spread_over_the_video(tmp_path, spec):
    store, enc = _store(tmp_path, spec, _street())
    r = Retriever(store, RetrievalConfig(top_k=5, anchors=0), text_encoder=enc)
    hits = r.retrieve(Question(text="what is this video about?")).hits()
    starts = sorted(h.clip.start for h in hits)
    assert starts[0] == 0 and starts[-1] == 29 * 4.0
    store.close()
