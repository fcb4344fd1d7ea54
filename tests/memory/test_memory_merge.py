"""merge_stores: shards into one store, ids renumbered, every per-clip file carried."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import DT, SPEC, make_clip
from memory.merge import merge_stores
from memory.store import MemoryStore, StoreSpec, file_check
from streamvid.config import MemoryConfig
from streamvid.errors import StoreError


def _shard(path, clips, *, commits=1, remove=()):
    with MemoryStore.open(path, SPEC, mode="w") as s:
        step = -(-len(clips) // commits)
        for i in range(0, len(clips), step):
            s.add(clips[i:i + step])
            s.commit()
        if remove:
            s.remove(remove)
            s.commit()
    return path


def _sequential(path, groups, config=None):
    with MemoryStore.open(path, SPEC, mode="w", config=config) as s:
        for clips in groups:
            s.add(clips)
            s.commit()
    return MemoryStore.open(path, mode="r", config=config)


def test_merge_equals_sequential_store_and_carries_unknown_per_clip_files(tmp_path):
    a = [make_clip(i, source="a.mp4") for i in range(5)]
    b = [make_clip(i + 5, source="long.mp4") for i in range(4)]       # two ranges of one video
    c = [make_clip(i + 9, source="long.mp4") for i in range(3)]
    shards = [_shard(tmp_path / "a", a), _shard(tmp_path / "b", b, commits=2),
              _shard(tmp_path / "c", c)]
    # a per-clip field the merge knows nothing about, as a newer store writer would add it:
    # an array file (in the segment directory, unknown to the manifest) and a metadata key
    for shard in shards:
        manifest = json.loads((shard / "manifest.json").read_text())
        for e in manifest["segments"]:
            seg = shard / e["name"]
            np.save(seg / "detections.npy", np.arange(e["rows"], dtype=np.int32) + 100)
            lines = [json.loads(x) for x in (seg / "meta.jsonl").read_text().splitlines()]
            for d in lines:
                d["future_field"] = f"said in clip {d['id']} of {shard.name}"
            (seg / "meta.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
            e["sizes"]["meta.jsonl"], e["hashes"]["meta.jsonl"] = file_check(seg / "meta.jsonl")
        (shard / "manifest.json").write_text(json.dumps(manifest))
    summary = merge_stores(shards, tmp_path / "m")
    assert (summary.shards, summary.clips) == (3, 12)
    assert summary.sources == ("a.mp4", "long.mp4")

    merged = MemoryStore.open(tmp_path / "m", SPEC, mode="r")
    ref = _sequential(tmp_path / "ref", [a, b, c])
    assert merged.ids().tolist() == list(range(12)) == ref.ids().tolist()
    assert merged.sources() == ref.sources() == ["a.mp4", "long.mp4"]
    assert merged.span("long.mp4") == ref.span("long.mp4") == (20.0, 48.0)
    for q in [make_clip(i) for i in (0, 6, 11)]:
        assert merged.search(q.vector, 5) == ref.search(q.vector, 5)
        assert merged.search(q.text_vector, 5, space="text") == \
            ref.search(q.text_vector, 5, space="text")
        assert merged.search(q.vector, 3, source="long.mp4", time_range=(20, 30)) == \
            ref.search(q.vector, 3, source="long.mp4", time_range=(20, 30))
    got, want = merged.get(range(12)), ref.get(range(12))
    for g, w in zip(got, want):
        assert (g.id, g.source_id, g.start, g.end, g.description) == \
            (w.id, w.source_id, w.start, w.end, w.description)
        np.testing.assert_array_equal(np.asarray(g.tokens), np.asarray(w.tokens))

    # the unknown field survived, row for row, with the new ids
    seen_speech, seen_det = [], []
    entries = merged.manifest["segments"]
    assert len(entries) == 4
    for e in entries:
        seg = tmp_path / "m" / e["name"]
        det = np.load(seg / "detections.npy")
        assert det.tolist() == list(range(100, 100 + e["rows"]))
        seen_det.extend(det.tolist())
        meta = [json.loads(x) for x in (seg / "meta.jsonl").read_text().splitlines()]
        assert [d["id"] for d in meta] == np.load(seg / "ids.npy").tolist()
        seen_speech.extend(d["future_field"] for d in meta)
    assert seen_speech == [f"said in clip {i} of a" for i in range(5)] + \
        [f"said in clip {i} of b" for i in range(4)] + [f"said in clip {i} of c" for i in range(3)]
    assert len(seen_det) == 12
    # the merged store is an ordinary store: a writer adds on top with fresh ids
    merged.close()
    with MemoryStore.open(tmp_path / "m", SPEC, mode="a") as w:
        assert w.add([make_clip(99, source="d.mp4")]) == [12]
        w.commit()
        assert len(w) == 13


def test_removed_clips_stay_removed_and_ivf_is_trained_once_on_all(tmp_path):
    a = [make_clip(i, source="a") for i in range(30)]
    b = [make_clip(i + 30, source="b") for i in range(30)]
    shards = [_shard(tmp_path / "a", a, remove=[3, 4]), _shard(tmp_path / "b", b)]
    cfg = MemoryConfig(index="ivf")
    summary = merge_stores(shards, tmp_path / "m", config=cfg)
    assert summary.clips == 58
    with MemoryStore.open(tmp_path / "m", mode="r", config=cfg) as m:
        ids = m.ids().tolist()
        assert 3 not in ids and 4 not in ids and len(ids) == 58
        # shard b's ids follow shard a's id space (next_id 30), as in one sequential store
        assert ids[-1] == 59 and m.get([30])[0].start == b[0].start
        man = m.manifest
        assert man["centroids"] and man["ivf_trained_on"] == 58
        assert m.search(b[7].vector, 1)[0] == (37, pytest.approx(1.0, abs=1e-5))


def test_merge_refuses_shards_of_another_model(tmp_path):
    a = _shard(tmp_path / "a", [make_clip(0)])
    other = StoreSpec("other-encoder/v2", SPEC.vector_dim, SPEC.text_id, DT)
    with MemoryStore.open(tmp_path / "b", other, mode="w") as s:
        s.add([make_clip(1)])
        s.commit()
    with pytest.raises(StoreError, match="encoder_id"):
        merge_stores([a, tmp_path / "b"], tmp_path / "m")
    with pytest.raises(StoreError, match="no shards"):
        merge_stores([], tmp_path / "m2")
