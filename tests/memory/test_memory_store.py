"""MemoryStore: persistence, filters, removal, index kinds, errors, crash safety, readers."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import DT, DV, SPEC, make_clip, unit, vec_for
from memory.store import MemoryStore, StoreSpec
from streamvid.config import MemoryConfig
from streamvid.errors import StoreError

REPO = Path(__file__).resolve().parents[2]


def test_round_trip_keeps_every_field(tmp_path, spec):
    clips = [make_clip(i, ocr="EXIT 12" if i == 3 else "") for i in range(40)]
    clips[5] = dataclasses.replace(clips[5], text_vector=None, tokens=None, token_times=None,
                                   token_positions=None, level=2, merged=4)
    with MemoryStore.open(tmp_path / "s", spec, mode="a") as store:
        ids = store.add(clips)
        assert ids == list(range(40))
        store.commit()
    store = MemoryStore.open(tmp_path / "s", spec, mode="r")
    assert len(store) == 40 and store.sources() == ["cam"]
    assert store.span("cam") == (0.0, 160.0)
    got = store.get([3, 5, 39])
    a, b = clips[3], got[0]
    assert b.id == 3 and b.ocr_text == "EXIT 12" and b.description == "clip 3"
    assert b.labels == a.labels and b.keyframes == a.keyframes and b.novelty == a.novelty
    np.testing.assert_array_equal(b.vector, a.vector)
    np.testing.assert_array_equal(b.text_vector, a.text_vector)
    np.testing.assert_array_equal(np.asarray(b.tokens), a.tokens)
    np.testing.assert_array_equal(b.token_times, a.token_times)
    np.testing.assert_array_equal(b.token_positions, a.token_positions)
    assert isinstance(b.tokens, np.memmap)  # tokens are read lazily from disk
    assert got[1].tokens is None and got[1].text_vector is None
    assert (got[1].level, got[1].merged) == (2, 4)
    assert store.search(clips[17].vector, 1)[0] == (17, pytest.approx(1.0, abs=1e-5))
    assert store.search(clips[3].text_vector, 1, space="text")[0][0] == 3
    m = store.manifest
    assert m["counts"]["clips"] == 40 and m["spec"]["encoder_id"] == spec.encoder_id
    # nothing pickled: every array loads with allow_pickle=False
    for p in (tmp_path / "s").rglob("*.npy"):
        np.load(p, allow_pickle=False)


def test_filters_by_source_and_time_match_brute_force(tmp_path, spec):
    rng = np.random.default_rng(3)
    clips = [make_clip(i, source=f"video{i % 3}") for i in range(300)]
    with MemoryStore.open(tmp_path / "s", spec, mode="w") as store:
        store.add(clips)
        store.commit()
        vecs = np.stack([c.vector for c in clips])
        for _ in range(10):
            q = unit(rng.normal(size=DV))
            src = f"video{rng.integers(3)}"
            lo = float(rng.uniform(0, 1000))
            hi = lo + 200
            got = store.search(q, 5, source=src, time_range=(lo, hi))
            ok = [i for i, c in enumerate(clips) if c.source_id == src and c.end >= lo
                  and c.start <= hi]
            want = sorted(ok, key=lambda i: -float(vecs[i] @ q))[:5]
            assert [i for i, _ in got] == want
            assert all(clips[i].source_id == src for i, _ in got)
        assert store.sources() == ["video0", "video1", "video2"]
        assert store.search(clips[0].vector, 3, source="nope") == []


def test_remove_is_durable_and_ids_are_never_reused(tmp_path, spec):
    with MemoryStore.open(tmp_path / "s", spec, mode="a") as store:
        ids = store.add([make_clip(i) for i in range(50)])
        store.commit()
        store.remove(ids[10:20])
        assert store.search(vec_for(15), 1)[0][0] != 15
        store.commit()
    with MemoryStore.open(tmp_path / "s", spec, mode="a") as store:
        assert len(store) == 40 and 15 not in store.ids()
        assert store.search(vec_for(15), 1)[0][0] != 15
        assert store.search(vec_for(15, DT, salt=1), 1, space="text")[0][0] != 15
        new = store.add([make_clip(99)])
        assert new == [50]
        store.commit()
        with pytest.raises(StoreError, match="not in the store"):
            store.get([15])


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(4, n // 100), dim))
    x = centres[rng.integers(len(centres), size=n)] + 0.5 * rng.normal(size=(n, dim))
    return unit(x)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_recall_and_persist(tmp_path, spec, kind):
    n = 4000
    x = _clustered(n, DV)
    clips = [make_clip(i, tokens=0, text=False, vector=x[i]) for i in range(n)]
    cfg = MemoryConfig(index=kind, nprobe=16)
    with MemoryStore.open(tmp_path / "s", spec, mode="w", config=cfg) as store:
        store.add(clips)
        store.commit()
        store.remove(list(range(0, 400)))
        store.commit()
    store = MemoryStore.open(tmp_path / "s", spec, mode="r", config=cfg)
    assert store.index_kind == kind and len(store) == n - 400
    rng = np.random.default_rng(1)
    queries = unit(x[rng.integers(400, n, size=50)] + 0.2 * rng.normal(size=(50, DV)))
    live = x[400:]
    hit = 0
    for q in queries:
        got = [i for i, _ in store.search(q, 10)]
        assert all(i >= 400 for i in got)  # removed clips never come back
        want = set((np.argsort(-(live @ q))[:10] + 400).tolist())
        hit += len(want & set(got))
    assert hit / 500 >= 0.9


def test_auto_switches_to_ivf_above_threshold(tmp_path, spec):
    cfg = MemoryConfig(index="auto", approx_threshold=500)
    with MemoryStore.open(tmp_path / "s", spec, mode="w", config=cfg) as store:
        store.add([make_clip(i, tokens=0) for i in range(400)])
        store.commit()
        assert store.index_kind == "flat"
        store.add([make_clip(i, tokens=0) for i in range(400, 900)])
        store.commit()
        assert store.index_kind == "ivf" and store.manifest["centroids"]
        assert store.search(vec_for(850), 1)[0][0] == 850


def test_model_mismatch_and_format_version_are_refused(tmp_path, spec):
    with MemoryStore.open(tmp_path / "s", spec, mode="a") as store:
        store.add([make_clip(0)])
        store.commit()
    other = dataclasses.replace(spec, encoder_id="siglip-base")
    with pytest.raises(StoreError) as err:
        MemoryStore.open(tmp_path / "s", other, mode="r")
    msg = str(err.value)
    assert "test-encoder/v1" in msg and "siglip-base" in msg and "--store" in msg
    with pytest.raises(StoreError, match="vector_dim=64.*vector_dim=32"):
        MemoryStore.open(tmp_path / "s", dataclasses.replace(spec, vector_dim=32), mode="a")
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    m["version"] = 99
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="version 99"):
        MemoryStore.open(tmp_path / "s", spec, mode="r")
    with pytest.raises(StoreError, match="no memory store"):
        MemoryStore.open(tmp_path / "missing", spec, mode="r")


def test_corrupted_files_give_store_errors(tmp_path, spec):
    def build(name: str, kind: str = "flat") -> Path:
        with MemoryStore.open(tmp_path / name, spec, mode="w",
                              config=MemoryConfig(index=kind)) as store:
            store.add([make_clip(i) for i in range(30)])
            store.commit()
        return tmp_path / name

    p = build("truncated-manifest")
    data = (p / "manifest.json").read_bytes()
    (p / "manifest.json").write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="manifest .* damaged"):
        MemoryStore.open(p, spec, mode="r")

    p = build("garbage-index", "hnsw")
    index_file = next(p.glob("hnsw-*.faiss"))
    size = index_file.stat().st_size
    index_file.write_bytes((b"\x00garbage" * size)[:size])  # same size, other content
    with pytest.raises(StoreError, match="checksum"):
        MemoryStore.open(p, spec, mode="r")

    p = build("truncated-vectors")
    vec = next(p.glob("seg-*/vectors.npy"))
    vec.write_bytes(vec.read_bytes()[:-100])
    with pytest.raises(StoreError, match="bytes"):
        MemoryStore.open(p, spec, mode="r")

    p = build("missing-segment")
    import shutil

    shutil.rmtree(next(p.glob("seg-*")))
    with pytest.raises(StoreError, match="does not exist"):
        MemoryStore.open(p, spec, mode="r")


def test_one_writer_at_a_time(tmp_path, spec):
    with MemoryStore.open(tmp_path / "s", spec, mode="a"):
        with pytest.raises(StoreError, match="another process"):
            MemoryStore.open(tmp_path / "s", spec, mode="a")
        MemoryStore.open(tmp_path / "s", spec, mode="r").close()  # readers are welcome


WRITER = textwrap.dedent("""
    import sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    from conftest import SPEC, make_clip
    from memory.store import MemoryStore
    from streamvid.config import MemoryConfig
    store = MemoryStore.open({path!r}, SPEC, mode="a", config=MemoryConfig(max_segments=4))
    n = store.manifest["next_id"]
    while True:
        store.add([make_clip(n + j) for j in range(25)])
        if n % 100 == 50:
            store.remove(store.ids()[:5])
        store.commit()
        n += 25
        print(store.manifest["next_id"], len(store), flush=True)
""")


@pytest.mark.slow
def test_kill_9_during_commits_keeps_every_committed_clip(tmp_path):
    path = tmp_path / "s"
    script = WRITER.format(repo=str(REPO), tests=str(Path(__file__).parent), path=str(path))
    rng = np.random.default_rng(0)
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        lines = []
        deadline = time.monotonic() + 60
        want = int(rng.integers(3, 8))
        while len(lines) < want and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        time.sleep(float(rng.uniform(0.0, 0.3)))  # land somewhere inside a later commit
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lines += proc.stdout.readlines()  # every commit reported before the kill
        assert lines, "the writer printed nothing"
        committed_next_id, committed_len = map(int, lines[-1].split())
        store = MemoryStore.open(path, None, mode="r")
        m = store.manifest
        # at least the last reported commit, maybe one more that finished before the kill
        assert m["next_id"] in (committed_next_id, committed_next_id + 25)
        assert len(store) >= committed_len
        ids = store.ids()
        clips = store.get(ids)
        for c in clips:  # data belongs to its clip: nothing torn, nothing mixed
            np.testing.assert_array_equal(c.vector, vec_for(int(c.description.split()[1])))
            assert c.n_tokens == 6
        store.close()
    leftovers = [p.name for p in path.iterdir() if p.name.startswith(".tmp")]
    assert len(leftovers) <= 1  # at most the segment the last kill interrupted


@pytest.mark.slow
def test_reader_sees_only_committed_consistent_data(tmp_path, spec):
    path = tmp_path / "s"
    writer = MemoryStore.open(path, spec, mode="a")
    errors: list[BaseException] = []
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        try:
            reader = MemoryStore.open(path, spec, mode="r")
            while not stop.is_set():
                reader.refresh()
                n = len(reader)
                assert n % 10 == 0, f"a reader saw a partial commit ({n} clips)"
                seen.append(n)
                if n:
                    top = reader.search(vec_for(n - 1), 3)
                    assert top[0][0] == n - 1
                    for c in reader.get([i for i, _ in top]):
                        np.testing.assert_array_equal(c.vector, vec_for(c.id))
        except BaseException as err:  # noqa: BLE001 - forwarded to the test thread
            errors.append(err)

    t = threading.Thread(target=read)
    t.start()
    for b in range(30):
        writer.add([make_clip(b * 10 + j) for j in range(10)])
        time.sleep(0.002)
        writer.commit()
    stop.set()
    t.join(30)
    writer.close()
    assert not errors, errors[0]
    assert seen == sorted(seen) and seen[-1] >= 100


def test_a_writer_keeps_only_small_rows_of_committed_clips(tmp_path, spec):
    """Committing every 50 clips, the writer's memory grows by small rows per clip (ids,
    times, vectors), never by what a clip carries: tokens, their times and positions and the
    keyframe JPEG are read back from the files (memory-mapped) — measured with tracemalloc
    between the second and the last commit."""
    import gc
    import tracemalloc

    jpeg = b"\xff\xd8" + bytes(16_000)
    per_clip = 256 * DV * 2 + 256 * 8 + len(jpeg)       # what one clip carries
    rows = 4 * (DV + DT) + 256                           # what may stay per clip
    traced = []
    tracemalloc.start()
    try:
        with MemoryStore.open(tmp_path / "s", spec, mode="a") as store:
            for k in range(8):
                store.add([dataclasses.replace(make_clip(i, tokens=256), keyframe_jpeg=jpeg)
                           for i in range(50 * k, 50 * (k + 1))])
                store.commit()
                gc.collect()
                traced.append(tracemalloc.get_traced_memory()[0])
            assert len(store) == 400 and store.keyframe(399) == jpeg
    finally:
        tracemalloc.stop()
    grown = (traced[-1] - traced[1]) / 300
    assert grown < rows < per_clip / 20, (grown, traced)


def test_clip_spans_per_source(tmp_path, spec):
    with MemoryStore.open(tmp_path / "s", spec, mode="w") as store:
        store.add([make_clip(i) for i in range(3)] + [make_clip(7, source="door")])
        store.commit()
        store.add([make_clip(3)])  # pending clips count too
        spans = store.clip_spans()
    assert spans == {"cam": {0: (0.0, 4.0), 1: (4.0, 8.0), 2: (8.0, 12.0), 4: (12.0, 16.0)},
                     "door": {3: (28.0, 32.0)}}

