"""Property-based fuzzing (hypothesis) of config values and of store manifests.

- Any value for any config key either gives a Config whose numbers are finite and within
  their documented range, or a ConfigError; nothing else.
- Any change to a real store's manifest (values replaced by arbitrary JSON or by hostile
  paths) either opens as a store whose every clip can be read, or raises StoreError; and no
  file outside the store is read as data or changed, for readers and writers alike.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory.store import MemoryStore
from streamvid.config import _SECTIONS, Config
from streamvid.errors import ConfigError, StoreError

from ..memory.conftest import SPEC, make_clip
from .conftest import snapshot

KEYS = [(sec, f.name) for sec, cls in _SECTIONS.items() for f in dataclasses.fields(cls)]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), c, max_size=4)),
                          max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(KEYS), value=json_value)
def test_config_values(key, value):
    sec, name = key
    try:
        cfg = Config.from_dict({sec: {name: value}})
    except ConfigError:
        return
    got = getattr(getattr(cfg, sec), name)
    f = next(f for f in dataclasses.fields(_SECTIONS[sec]) if f.name == name)
    if isinstance(got, float):
        assert math.isfinite(got)
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        if f.metadata.get("min") is not None:
            assert got >= f.metadata["min"]
        if f.metadata.get("max") is not None:
            assert got <= f.metadata["max"]
    Config.from_dict(cfg.to_dict())  # what is accepted round-trips


HOSTILE = st.sampled_from(["../outside/seg-00000001", "../outside/victim.npy", "/etc/passwd",
                           "seg-00000001/../../outside", "outside", ".", "..", "",
                           "seg-00000009", "deleted-00000001.npy", "hnsw-00000001.faiss",
                           "centroids-1.npy", "assign-0.npy", "config.yaml", "manifest.json"])


def _paths(obj, prefix=()):
    """Every (path, value) inside a JSON object."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set(obj, path, value):
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """A real store with two segments, a deletion file and an HNSW graph."""
    from streamvid.config import MemoryConfig

    p = tmp_path_factory.mktemp("fuzz") / "store"
    with MemoryStore.open(p, SPEC, mode="w", config=MemoryConfig(index="hnsw")) as s:
        ids = s.add([make_clip(i) for i in range(6)])
        s.commit()
        s.add([make_clip(i) for i in range(6, 9)])
        s.remove(ids[:1])
        s.commit()
    return p


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_manifest_contents(small_store, data):
    base = json.loads((small_store / "manifest.json").read_text())
    paths = [p for p, _ in _paths(base) if p]
    m = json.loads(json.dumps(base))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        try:
            _set(m, path, data.draw(st.one_of(json_value, HOSTILE)))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed the parent
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = root / "store"
        shutil.copytree(small_store, store)
        outside = root / "outside"
        shutil.copytree(next(store.glob("seg-*")), outside / "seg-00000001")
        (outside / "victim.npy").write_bytes(b"not store data")
        (store / "manifest.json").write_text(json.dumps(m))
        before = snapshot(root, skip=store)
        for mode in ("r", "a"):
            try:
                with MemoryStore.open(store, SPEC if mode == "a" else None, mode=mode) as s:
                    ids = s.ids()
                    clips = s.get(ids)
                    assert len(clips) == len(ids)
                    for c in clips:
                        assert c.vector.shape == (SPEC.vector_dim,)
                    if len(ids):
                        s.search(np.ones(SPEC.vector_dim, np.float32), 3)
            except StoreError:
                pass
        assert snapshot(root, skip=store) == before
