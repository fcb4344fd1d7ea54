"""The lexical index of text questions saved with the store: equal to one built from the
clips, kept up to date by commits and consolidation, surviving a crash during a commit, and
built for a store that has none."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from memory import lexical
from memory.store import MemoryStore
from streamvid.config import MemoryConfig
from streamvid.errors import StoreError
from streamvid.types import Detection, FrameObjects, SpeechSegment

from conftest import commit_killed_before_manifest, flip_middle_byte, make_clip

WORDS = "red car blue door sign exit parking orbit lemon cuckoo clock bird".split()


def wordy_clip(i: int):
    """A clip with a description, OCR text, labels, speech (some) and detections (some)."""
    c = make_clip(i, description=f"a {WORDS[i % 12]} and a {WORDS[(i * 5) % 12]} near clip {i}",
                  ocr=f"The door code is {WORDS[(i * 7) % 12]}-{i}" if i % 3 == 0 else "")
    extra: dict = {"labels": ((WORDS[(i * 3) % 12], 0.6),)}
    if i % 4 == 1:
        extra["speech"] = (SpeechSegment(c.start, c.end, f"hello {WORDS[i % 12]} there",
                                         (("hello", c.start, c.start + 1),
                                          (WORDS[i % 12], c.start + 1, c.start + 2))),)
    if i % 5 == 2:
        extra["objects"] = (FrameObjects(c.start + 1, (Detection("car", 0.7, (0.1, 0.2, 0.3, 0.4)),
                                                       Detection("person", 0.5, (0.5, 0.5, 0.6, 0.9)))),)
    return dataclasses.replace(c, **extra)


def _same(a: lexical.LexicalIndex, b: lexical.LexicalIndex) -> None:
    for name in ("all", "ocr", "speech"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.lengths == y.lengths and x.postings == y.postings, name
        assert x._total == y._total
        for q in (["car", "door"], ["orbit"], ["hello", "bird"]):
            assert x.score(q) == y.score(q)
    assert a.ocr_text == b.ocr_text
    assert a.objects() == b.objects()


def _rebuilt(store: MemoryStore) -> lexical.LexicalIndex:
    fresh = lexical.LexicalIndex()
    fresh.sync(store)
    return fresh


def _covers_live(store: MemoryStore) -> lexical.LexicalIndex:
    """The reader's index is the commit's file (nothing to add) and equals a rebuilt one."""
    idx = store.lexical_index()
    assert not idx.dirty
    assert np.array_equal(idx.ids(), store.ids())
    _same(idx, _rebuilt(store))
    return idx


def test_the_saved_index_equals_a_rebuilt_one(tmp_path, spec):
    path = tmp_path / "s"
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add([wordy_clip(i) for i in range(40)])
        store.commit()
        first = store.manifest["lexindex"]
        assert first == lexical.file_name(store.generation)
        store.remove([3, 4, 5])
        store.add([wordy_clip(i) for i in range(40, 55)])
        store.commit()
        assert store.manifest["lexindex"] != first
        # a removal of a clip read back from the file (its terms rebuilt from the postings)
        store.remove([6])
        store.commit()
    with MemoryStore.open(path, spec, mode="r") as r:
        idx = _covers_live(r)
        assert 3 not in idx.all and 6 not in idx.all and 45 in idx.all
        assert idx.objects()[7][0].objects[0].label == "car"
        assert idx.speech.score(["car"]) and idx.ocr.score(["code"])


def test_commits_and_consolidation_keep_the_index_current(tmp_path, spec):
    path = tmp_path / "s"
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add([wordy_clip(i) for i in range(50)])
        store.commit()
    cfg = MemoryConfig(capacity_clips=30, keep_recent=0.2)
    with MemoryStore.open(path, spec, mode="a", config=cfg) as store:
        store.add([wordy_clip(i) for i in range(50, 60)])
        store.commit()
        assert len(store) <= 30
    with MemoryStore.open(path, spec, mode="r") as r:
        idx = _covers_live(r)
        merged = [c.id for c in r.get(r.ids()) if c.merged > 1]
        assert merged and all(m in idx.all for m in merged)


def test_a_reader_follows_new_commits(tmp_path, spec):
    path = tmp_path / "s"
    with MemoryStore.open(path, spec, mode="w") as w:
        w.add([wordy_clip(i) for i in range(20)])
        w.commit()
        with MemoryStore.open(path, spec, mode="r") as r:
            assert 25 not in r.lexical_index().all
            w.remove([2])
            w.add([wordy_clip(i) for i in range(20, 30)])
            w.commit()
            assert r.refresh()
            idx = r.lexical_index()
            assert 25 in idx.all and 2 not in idx.all
            _same(idx, _rebuilt(r))


def test_a_store_without_a_lexical_index_gets_one(tmp_path, spec):
    path = tmp_path / "s"
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add([wordy_clip(i) for i in range(20)])
        store.commit()
    # as a store written before the lexical index existed: its manifest names none
    m = json.loads((path / "manifest.json").read_text())
    name = m.pop("lexindex")
    m["files"].pop(name)
    (path / "manifest.json").write_text(json.dumps(m))
    with MemoryStore.open(path, spec, mode="r") as r:   # a reader builds one for itself
        idx = r.lexical_index()
        assert idx.dirty and np.array_equal(idx.ids(), r.ids())
    with MemoryStore.open(path, spec, mode="a") as w:   # a writer's next commit saves it
        w.add([wordy_clip(20)])
        w.commit()
        assert w.manifest["lexindex"]
    with MemoryStore.open(path, spec, mode="r") as r:
        _covers_live(r)


def test_an_index_of_another_version_is_rebuilt(tmp_path, spec, monkeypatch):
    path = tmp_path / "s"
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add([wordy_clip(i) for i in range(20)])
        store.commit()
    monkeypatch.setattr(lexical, "VERSION", lexical.VERSION + 1)
    with MemoryStore.open(path, spec, mode="r") as r:
        idx = r.lexical_index()
        assert idx.dirty and len(idx) == 20
        _same(idx, _rebuilt(r))


def test_a_damaged_lexical_index_is_an_error(tmp_path, spec):
    path = tmp_path / "s"
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add([wordy_clip(i) for i in range(20)])
        store.commit()
        name = store.manifest["lexindex"]
    flip_middle_byte(path / name)
    with MemoryStore.open(path, spec, mode="r") as r:
        with pytest.raises(StoreError, match="checksum"):
            r.lexical_index()


def _state(path: Path) -> tuple[int, str]:
    m = json.loads((path / "manifest.json").read_text())
    return m["generation"], m["lexindex"]


def test_a_process_killed_during_commit_leaves_a_consistent_store(tmp_path, spec):
    """A writer killed (SIGKILL) between writing the lexical index and the manifest."""
    path = tmp_path / "s"
    with MemoryStore.open(path, spec, mode="w") as store:
        store.add([wordy_clip(i) for i in range(30)])
        store.commit()
    before = _state(path)
    commit_killed_before_manifest(path, "test_memory_lexical:wordy_clip")
    assert (path / lexical.file_name(before[0] + 1)).exists()   # written, never named
    assert _state(path) == before
    with MemoryStore.open(path, spec, mode="r") as r:
        idx = _covers_live(r)
        assert len(r) == 30 and 0 in idx.all and 40 not in idx.all
    with MemoryStore.open(path, spec, mode="a") as w:   # the next commit carries on
        w.add([wordy_clip(i) for i in range(30, 35)])
        w.commit()
    with MemoryStore.open(path, spec, mode="r") as r:
        _covers_live(r)
        assert len(r) == 35
