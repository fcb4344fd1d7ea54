"""The clip memory store: clip memories of many sources in a directory, searchable by vector.

:class:`MemoryStore` composes the parts: the directory's files (segments, the manifest
and their checks, :mod:`memory.segments`), the writer lock (:mod:`memory.locking`), the
FAISS indexes and candidate filter (:mod:`memory.search`) and the consolidation policy of
a bounded store (:mod:`memory.consolidate`), the token index of image questions
(:mod:`memory.tokenindex`) and the lexical index of text questions (:mod:`memory.lexical`).
The layout of a store directory is described in :mod:`memory.segments`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import faiss
import numpy as np

from streamvid.config import MemoryConfig
from streamvid.errors import StoreError
from streamvid.io import atomic_save_npy, atomic_write, atomic_write_json
from streamvid.types import ClipMemory

from . import lexical, tokenindex
from .consolidate import excess, plan_consolidation, recent_ids
from .index import VecIndex, ivf_nlist
from .locking import StoreBusyError, WriterLock
from .search import ClipIndex, candidates
from .segments import (ATTACHABLE, DAMAGED, FORMAT, FORMAT_VERSION, MANIFEST, SEG_NAMES, Segment,
                       StoreSpec, clip_bytes, file_check, load_npy, new_manifest, objects_from_json,
                       objects_to_json, read_manifest, remove_unnamed, verify_file, wipe,
                       write_segment)

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "MemoryStore", "StoreBusyError", "StoreError",
           "StoreSpec", "clip_bytes", "consolidate_store", "file_check", "objects_from_json",
           "objects_to_json"]

log = logging.getLogger(__name__)


class MemoryStore:
    """Clip memories of one or many sources, searchable by visual or text vector.

    Open with :meth:`open`. A writer (mode ``"a"`` or ``"w"``) sees its own uncommitted
    changes; :meth:`commit` makes them durable and visible to readers, which pick them up
    with :meth:`refresh`. Ids are stable int64s, never reused.
    """

    def __init__(self, path: Path, mode: str, config: MemoryConfig):
        self.path = Path(path)
        self.mode = mode
        self.config = config
        self._lock = WriterLock(self.path)
        self._segments: dict[str, Segment] = {}
        self._manifest: dict[str, Any] = {}
        self._pending: dict[int, ClipMemory] = {}
        self._deleted: set[int] = set()
        self._dirty = False
        self._previous_manifest: dict[str, Any] | None = None
        self._closed = False
        self.created = False   # this open() wrote the store's first manifest
        self._attached: set[str] = set()
        self._tok: tokenindex.TokenIndex | None = None   # loaded on first use
        self._tok_file: str | None = None                # the commit's file it came from
        self._lex: lexical.LexicalIndex | None = None    # loaded on first use, then kept in
        self._lex_file: str | None = None                # step with the clips (synced)
        self._lex_key: tuple[int, int, int] | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike[str], spec: StoreSpec | None = None, *, mode: str = "r",
             config: MemoryConfig | None = None) -> "MemoryStore":
        """Open (``"r"``, ``"a"``) or create (``"a"`` when missing, ``"w"`` always) a store.

        ``spec`` is checked against the store's; a different encoder, text model or
        dimension, or another format version, raises :class:`StoreError`.
        """
        if mode not in ("r", "a", "w"):
            raise StoreError(f"store mode {mode!r} is not one of 'r', 'a', 'w'")
        path = Path(path)
        exists = (path / MANIFEST).exists()
        if mode == "r" and not exists:
            raise StoreError(f"no memory store at {path} (no {MANIFEST}); fix: index a video "
                             "into it first, or pass the right --store")
        if path.exists() and not path.is_dir():
            raise StoreError(f"store path {path} is a file, not a directory; fix: pass a "
                             "directory as --store")
        store = cls(path, mode, config or MemoryConfig())
        if mode != "r":
            path.mkdir(parents=True, exist_ok=True)
            store._lock.acquire()
            exists = (path / MANIFEST).exists()  # another writer may have created it meanwhile
        try:
            if mode == "w" or not exists:
                if spec is None:
                    raise StoreError(f"creating the store {path} needs a StoreSpec (model ids "
                                     "and dims); fix: pass spec=")
                if mode == "w":
                    wipe(path)
                new_manifest(path, spec, store.config)
                store.created = not exists
            store._load(spec)
            if mode != "r" and not store.created:  # a new store has nothing to tidy (and a
                store._gc()                         # directory's own files are not ours)
        except BaseException:
            if store.created:
                (path / MANIFEST).unlink(missing_ok=True)
            store._lock.release()
            raise
        return store

    def _load(self, spec: StoreSpec | None) -> None:
        """Read the latest manifest and everything it names (retrying if a commit races)."""
        last: Exception | None = None
        for _ in range(20):
            m = read_manifest(self.path)
            try:
                self._load_manifest(m, spec)
                return
            except FileNotFoundError as err:  # a newer commit removed what we were reading
                last = err
                time.sleep(0.05)
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
                raise StoreError(f"the store {self.path} has a malformed manifest or file "
                                 f"({type(err).__name__}: {err}); {DAMAGED}") from err
        raise StoreError(f"the store {self.path} names a file that does not exist ({last}); "
                         "fix: the store is damaged, re-index into a new --store")

    def _load_manifest(self, m: dict[str, Any], spec: StoreSpec | None, *,
                       keep_index: bool = False) -> None:
        try:
            stored = StoreSpec.from_json(m["spec"])
        except (KeyError, TypeError, ValueError) as err:
            raise StoreError(f"the store manifest {self.path / MANIFEST} has a bad spec ({err}); "
                             "fix: re-index into a new --store") from err
        self.spec = stored
        if spec is not None:
            self.check_spec(spec)
        segs: dict[str, Segment] = {}
        for entry in m["segments"]:
            old = self._segments.get(entry["name"])
            segs[entry["name"]] = old if old is not None and old.assign_file == entry.get("assign") \
                else Segment(self.path, entry, stored)
        files = m.get("files") or {}

        for name in ATTACHABLE & set(files):
            self._verified(name, m)
        deleted = np.zeros(0, np.int64)
        if m.get("deleted"):
            deleted = np.asarray(load_npy(self._verified(m["deleted"], m)), dtype=np.int64)
        centroids = None
        if m.get("centroids"):
            centroids = np.asarray(load_npy(self._verified(m["centroids"], m)), dtype=np.float32)
        hnsw_index = None
        if m.get("hnsw") and not keep_index:
            p = self._verified(m["hnsw"], m)
            try:
                hnsw_index = faiss.read_index(str(p))
            except RuntimeError as err:
                raise StoreError(f"the store index {p} cannot be read ({str(err).splitlines()[0]}"
                                 "); fix: the store is damaged, re-index into a new --store") from err
        self._manifest = m
        self._segments = segs
        self._deleted = set(int(i) for i in deleted)
        if m.get("tokindex") != self._tok_file:   # another commit's: read again when needed
            self._tok, self._tok_file = None, m.get("tokindex")
        self._build_state(centroids, hnsw_index, keep_index=keep_index)

    def _build_state(self, centroids: np.ndarray | None, hnsw_index: Any, *,
                     keep_index: bool = False) -> None:
        """Row tables (id -> segment/row, start, end, source) and the in-memory indexes."""
        m = self._manifest
        self._next_id = int(m["next_id"])
        seg_list = list(self._segments.values())
        src_names: list[str] = sorted({s for seg in seg_list for s in seg.sources}
                                      | {c.source_id for c in self._pending.values()})
        self._src_code = {s: i for i, s in enumerate(src_names)}
        self._src_names = src_names
        ids, segi, rows, start, end, src, lev, txt = [], [], [], [], [], [], [], []
        deleted = np.fromiter(self._deleted, np.int64, len(self._deleted))
        for si, seg in enumerate(seg_list):
            live = ~np.isin(seg.ids, deleted) if len(deleted) else np.ones(seg.rows, bool)
            r = np.nonzero(live)[0]
            ids.append(seg.ids[r])
            segi.append(np.full(len(r), si, np.int32))
            rows.append(r.astype(np.int64))
            start.append(seg.start[r])
            end.append(seg.end[r])
            lev.append(seg.level[r])
            txt.append(seg.has_text[r])
            remap = np.array([self._src_code[s] for s in seg.sources], np.int32)
            src.append(remap[seg.source[r]] if len(seg.sources) else np.zeros(0, np.int32))
        self._seg_list = seg_list
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
        self._ids = cat(ids, np.int64)
        self._segi = cat(segi, np.int32)
        self._rows = cat(rows, np.int64)
        self._start = cat(start, np.float64)
        self._end = cat(end, np.float64)
        self._src = cat(src, np.int32)
        self._lev = cat(lev, np.int16)
        self._txt = cat(txt, bool)
        self._order = np.argsort(self._ids, kind="stable")
        self._sorted_ids = self._ids[self._order]
        # pending (uncommitted) clips of a writer
        self._pend_ids = np.array(sorted(self._pending), np.int64)
        if keep_index:
            return
        self._index = ClipIndex(self.config, self.spec.vector_dim, self.spec.text_dim)
        self._index.build(seg_list, self._segi, self._rows, self._ids, int(m.get("qgen", 0)),
                          centroids, hnsw_index, self._pending.values())

    def check_spec(self, spec: StoreSpec) -> None:
        """Raise :class:`StoreError` unless ``spec``'s models are the ones the store holds."""
        for key in ("encoder_id", "vector_dim", "text_id", "text_dim"):
            a, b = getattr(self.spec, key), getattr(spec, key)
            if a != b:
                raise StoreError(
                    f"the store {self.path} was built with {key}={a!r}, but the current "
                    f"models have {key}={b!r}; fix: use another --store for these models, "
                    "or re-index the videos into this one with mode 'w'")

    # ------------------------------------------------------------------ reading
    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest of the last commit (a copy)."""
        return json.loads(json.dumps(self._manifest))

    @property
    def generation(self) -> int:
        return int(self._manifest["generation"])

    @property
    def index_kind(self) -> str:
        """The kind of the visual index now in use: ``flat``, ``ivf`` or ``hnsw``."""
        return self._index.kind

    def __len__(self) -> int:
        return int(len(self._ids) + len(self._pending))

    def ids(self) -> np.ndarray:
        """Ids of all clips (committed and, for a writer, pending), ascending."""
        return np.union1d(self._sorted_ids, self._pend_ids).astype(np.int64)

    def sources(self) -> list[str]:
        """Source ids with at least one clip, sorted."""
        present = set(np.unique(self._src).tolist())
        out = {self._src_names[i] for i in present}
        out |= {c.source_id for c in self._pending.values()}
        return sorted(out)

    def span(self, source: str | None = None) -> tuple[float, float]:
        """``(start, end)`` covered by ``source`` (or by all sources)."""
        t = self.table()
        mask = np.ones(len(t["id"]), bool) if source is None else \
            (t["source"] == self._src_code.get(source, -1))
        starts, ends = t["start"][mask], t["end"][mask]
        if len(starts) == 0:
            raise StoreError(f"the store {self.path} has no clips of source {source!r}; "
                             f"sources: {', '.join(self.sources()) or 'none'}")
        return float(starts.min()), float(ends.max())

    def clip_spans(self) -> dict[str, dict[int, tuple[float, float]]]:
        """Per source id: each clip's id -> ``(start, end)`` (committed and pending clips)."""
        t = self.table()
        out: dict[str, dict[int, tuple[float, float]]] = {}
        for i, cid in enumerate(t["id"]):
            name = str(t["source_names"][t["source"][i]])
            out.setdefault(name, {})[int(cid)] = (float(t["start"][i]), float(t["end"][i]))
        return out

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``ids`` in the committed row tables (-1 where absent)."""
        ids = np.asarray(ids, np.int64)
        if len(self._sorted_ids) == 0 or len(ids) == 0:
            return np.full(len(ids), -1, np.int64), np.zeros(len(ids), bool)
        pos = np.clip(np.searchsorted(self._sorted_ids, ids), 0, len(self._sorted_ids) - 1)
        found = self._sorted_ids[pos] == ids
        return np.where(found, self._order[pos], -1).astype(np.int64), found

    def get(self, ids: Iterable[int]) -> list[ClipMemory]:
        """The clips with these ids, in the same order (tokens memory-mapped)."""
        ids = np.asarray(list(ids), np.int64)
        pos, found = self._locate(ids)
        out = []
        for cid, p, f in zip(ids.tolist(), pos.tolist(), found.tolist()):
            if cid in self._pending:
                out.append(self._pending[cid])
            elif f:
                seg = self._seg_list[int(self._segi[p])]
                out.append(seg.clip(int(self._rows[p]), vector_dim=self.spec.vector_dim))
            else:
                raise StoreError(f"clip id {cid} is not in the store {self.path}; fix: use ids "
                                 "returned by search()/ids() of the current generation")
        return out

    def keyframe(self, clip_id: int) -> bytes | None:
        """The JPEG of clip ``clip_id``'s keyframe (longer side <= 384 px), or None when the
        clip has none (stores written before keyframes were kept)."""
        cid = int(clip_id)
        if cid in self._pending:
            return self._pending[cid].keyframe_jpeg
        pos, found = self._locate(np.array([cid], np.int64))
        if not found[0]:
            raise StoreError(f"clip id {cid} is not in the store {self.path}; fix: use ids "
                             "returned by search()/ids() of the current generation")
        p = int(pos[0])
        return self._seg_list[int(self._segi[p])].keyframe(int(self._rows[p]))

    def vectors(self, ids: np.ndarray, *, space: str = "visual") -> np.ndarray:
        """``[n, D]`` float32 vectors of ``ids`` (zeros for clips without a text vector)."""
        ids = np.asarray(ids, np.int64)
        dim = self.spec.vector_dim if space == "visual" else self.spec.text_dim
        out = np.zeros((len(ids), dim), np.float32)
        pos, found = self._locate(ids)
        if found.any():
            fi = np.nonzero(found)[0]
            segi, rows = self._segi[pos[fi]], self._rows[pos[fi]]
            for si in np.unique(segi):
                seg = self._seg_list[int(si)]
                sel = segi == si
                arr = seg.vectors if space == "visual" else seg.text_vectors
                r = rows[sel]
                order = np.argsort(r)
                block = np.asarray(arr[r[order]])
                tgt = fi[sel][order]
                out[tgt] = block
        for i, cid in enumerate(ids.tolist()):
            c = self._pending.get(cid)
            if c is not None:
                v = c.vector if space == "visual" else c.text_vector
                if v is not None:
                    out[i] = v
        return out

    def table(self) -> dict[str, np.ndarray]:
        """Columns of all clips: ``id``, ``start``, ``end``, ``source`` (code), for scans.

        ``source_names[source]`` gives the source id of a code.
        """
        pend = list(self._pending.values())
        return {"id": np.concatenate([self._ids, np.array([c.id for c in pend], np.int64)]),
                "start": np.concatenate([self._start, np.array([c.start for c in pend], np.float64)]),
                "end": np.concatenate([self._end, np.array([c.end for c in pend], np.float64)]),
                "source": np.concatenate([self._src, np.array([self._src_code[c.source_id]
                                                               for c in pend], np.int32)]),
                "level": np.concatenate([self._lev, np.array([c.level for c in pend], np.int16)]),
                "source_names": np.asarray(self._src_names, dtype=object)}

    def _selected(self, space: str, source: str | None,
                  time_range: tuple[float, float] | None) -> np.ndarray:
        code = None if source is None else self._src_code.get(source, -1)
        ids = candidates(self.table(), code, time_range)
        if space == "text":
            ids = ids[self._has_text(ids)]
        return ids

    def _has_text(self, ids: np.ndarray) -> np.ndarray:
        pos, found = self._locate(ids)
        out = found & self._txt[np.where(found, pos, 0)] if len(self._txt) else \
            np.zeros(len(ids), bool)
        for i in np.nonzero(~found)[0].tolist():
            c = self._pending.get(int(ids[i]))
            if c is not None:
                out[i] = c.text_vector is not None
        return out

    def search(self, vector: np.ndarray, k: int, *, space: str = "visual",
               source: str | None = None,
               time_range: tuple[float, float] | None = None) -> list[tuple[int, float]]:
        """The ``k`` most similar clips as ``(id, cosine)``, best first.

        ``space`` is ``"visual"`` (clip vectors) or ``"text"`` (description vectors);
        ``source`` and ``time_range`` (seconds, overlapping clips) filter the candidates.
        """
        if space not in ("visual", "text"):
            raise StoreError(f"search space {space!r} is not 'visual' or 'text'")
        dim = self.spec.vector_dim if space == "visual" else self.spec.text_dim
        q = np.asarray(vector, np.float32).reshape(-1)
        if q.shape[0] != dim:
            raise StoreError(f"a {space} query vector must have {dim} dims (store {self.path}), "
                             f"got {q.shape[0]}; fix: encode the query with the store's model")
        if k <= 0 or len(self) == 0:
            return []
        return self._index.search(q, k, space, filtered=source is not None or time_range is not None,
                                  selected=lambda: self._selected(space, source, time_range),
                                  next_id=self._next_id,
                                  vectors_of=lambda s: self.vectors(s, space=space))

    # ------------------------------------------------------------------ writing
    def _writable(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        if self.mode == "r":
            raise StoreError(f"the store {self.path} is open read-only; fix: open it with "
                             "mode 'a' to add or remove clips")

    def add(self, clips: Sequence[ClipMemory]) -> list[int]:
        """Add clips (visible to this writer at once, to readers after :meth:`commit`).

        Returns the new ids; the stored clips carry them.
        """
        self._writable()
        out = []
        for c in clips:
            if c.vector.shape[0] != self.spec.vector_dim:
                raise StoreError(f"clip {c.source_id}@{c.start:.1f}s has a {c.vector.shape[0]}-d "
                                 f"vector, the store {self.path} holds {self.spec.vector_dim}-d "
                                 "ones; fix: encode with the store's model or use another --store")
            if c.text_vector is not None and c.text_vector.shape[0] != self.spec.text_dim:
                raise StoreError(f"clip {c.source_id}@{c.start:.1f}s has a "
                                 f"{c.text_vector.shape[0]}-d text vector, the store holds "
                                 f"{self.spec.text_dim}-d ones; fix: use the store's text model")
            cid = self._next_id
            self._next_id += 1
            c = dataclasses.replace(c, id=cid)
            self._pending[cid] = c
            if c.source_id not in self._src_code:
                self._src_code[c.source_id] = len(self._src_names)
                self._src_names.append(c.source_id)
            self._pend_ids = np.append(self._pend_ids, cid)
            self._dirty = True
            self._index.add(c)
            out.append(cid)
        return out

    def adopt_segments(self, entries: Sequence[dict[str, Any]], *, next_id: int,
                       deleted: Iterable[int] = ()) -> None:
        """Add segments whose directories were already written under this store's root
        (by :func:`memory.merge.merge_stores`); durable at the next :meth:`commit`.

        Each entry is a manifest segment entry (``name``, ``rows``, ``sources`` and any
        other keys); the sizes and checksums of its known files are taken from the directory, IVF assignments are dropped
        (the next commit assigns or trains). Their ids must be new and below ``next_id``;
        ``deleted`` names ids among them that are not live.
        """
        self._writable()
        new = []
        for e in entries:
            d = self.path / e["name"]
            checks = {p.name: file_check(p) for p in sorted(d.iterdir())
                      if p.is_file() and p.name in SEG_NAMES}
            new.append({**e, "sizes": {k: c[0] for k, c in checks.items()},
                        "hashes": {k: c[1] for k, c in checks.items()}, "assign": None})
        m = dict(self._manifest)
        m["segments"] = list(m["segments"]) + new
        m["next_id"] = max(int(m["next_id"]), int(next_id))
        self._manifest = m
        self._segments = {**self._segments, **{e["name"]: Segment(self.path, e, self.spec) for e in new}}
        self._deleted |= {int(i) for i in deleted}
        self._build_state(None, None)
        self._dirty = True

    def remove(self, ids: Iterable[int]) -> None:
        """Remove clips by id (durable at the next :meth:`commit`)."""
        self._writable()
        ids = np.asarray(list(ids), np.int64)
        if len(ids) == 0:
            return
        pos, found = self._locate(ids)
        missing = [int(i) for i, f in zip(ids, found) if not f and int(i) not in self._pending]
        if missing:
            raise StoreError(f"cannot remove clip id(s) {missing[:5]} from {self.path}: not in "
                             "the store")
        self._dirty = True
        pend = [int(i) for i in ids if int(i) in self._pending]
        for cid in pend:
            del self._pending[cid]
        self._pend_ids = np.array(sorted(self._pending), np.int64)
        committed = ids[found]
        if len(committed):
            self._deleted.update(int(i) for i in committed)
            keep = np.ones(len(self._ids), bool)
            keep[pos[found]] = False
            for name in ("_ids", "_segi", "_rows", "_start", "_end", "_src", "_lev", "_txt"):
                setattr(self, name, getattr(self, name)[keep])
            self._order = np.argsort(self._ids, kind="stable")
            self._sorted_ids = self._ids[self._order]
        self._index.remove(ids)

    def bytes_estimate(self) -> int:
        """Bytes the committed files take plus an estimate for pending clips."""
        b = int(self._manifest["counts"].get("bytes", 0))
        tok_bytes = 2 if self.config.token_dtype == "float16" else 4
        for c in self._pending.values():
            b += clip_bytes(c, tok_bytes)
        return b

    def commit(self) -> None:
        """Make every change durable and visible to readers, atomically.

        When the store is over its capacity, older clips are consolidated first.
        """
        self._writable()
        stats = consolidate_store(self)
        if not self._dirty:  # nothing to commit
            return
        m = dict(self._manifest)
        gen = int(m["generation"]) + 1
        n_live = len(self)
        kind_cfg = self.config.index
        use_ivf = kind_cfg == "ivf" or (kind_cfg == "auto" and n_live > self.config.approx_threshold)
        centroids_name = m.get("centroids")
        qgen = int(m.get("qgen", 0))
        retrain = use_ivf and (centroids_name is None or
                               n_live > 8 * max(1, int(m.get("ivf_trained_on", 0))))
        segments = [e for e in m["segments"]]
        deleted = set(self._deleted)
        pending = [self._pending[i] for i in sorted(self._pending)]
        ivf: VecIndex | None = None
        if use_ivf and not retrain and self._index.kind == "ivf":
            ivf = self._index.visual
        compact = retrain or len(segments) >= self.config.max_segments or (
            len(deleted) > 0.25 * max(1, n_live + len(deleted)))
        if retrain and n_live > 0:
            allv = self.vectors(self.ids())
            cents = VecIndex.train_centroids(allv, ivf_nlist(n_live))
            qgen += 1
            centroids_name = f"centroids-{qgen}.npy"
            atomic_save_npy(self.path / centroids_name, cents)
            ivf = VecIndex("ivf", self.spec.vector_dim, nprobe=self.config.nprobe,
                           centroids=cents)
            m["ivf_trained_on"] = n_live
        if compact:
            all_clips = self.get(self.ids()) if n_live else []
            entry = write_segment(self.path, f"seg-{gen:08d}", all_clips,
                                   self.spec.vector_dim, self.spec.text_dim,
                                   self.config.token_dtype, ivf if use_ivf else None, qgen)
            segments = [entry] if all_clips else []
            deleted = set()
        elif pending:
            entry = write_segment(self.path, f"seg-{gen:08d}", pending, self.spec.vector_dim,
                                   self.spec.text_dim, self.config.token_dtype,
                                   ivf if use_ivf else None, qgen)
            segments.append(entry)
        deleted_name = None
        if deleted:
            deleted_name = f"deleted-{gen:08d}.npy"
            atomic_save_npy(self.path / deleted_name, np.array(sorted(deleted), np.int64))
        hnsw_name = None
        if kind_cfg == "hnsw" or (self._index.kind == "hnsw"):
            hnsw_name = f"hnsw-{gen:08d}.faiss"
            self._write_hnsw(hnsw_name)
        tok_name = self._write_token_index(gen)
        lex_name = self._write_lexical_index(gen)
        # counts and sources
        t = self.table()
        sources = {}
        for code in np.unique(t["source"]):
            mask = t["source"] == code
            sources[str(t["source_names"][code])] = [float(t["start"][mask].min()),
                                                     float(t["end"][mask].max())]
        counts = dict(m["counts"])
        counts["clips"] = n_live
        counts["consolidated"] = int(counts.get("consolidated", 0)) + stats.get("consolidated", 0)
        counts["merges"] = int(counts.get("merges", 0)) + stats.get("merges", 0)
        lv, lc = np.unique(t["level"], return_counts=True)
        counts["levels"] = {str(int(a)): int(b) for a, b in zip(lv, lc)}
        size = 0
        for e in segments:
            size += sum(int(v) for v in e["sizes"].values())
        counts["bytes"] = size
        files = {name: file_check(self.path / name)
                 for name in (deleted_name, centroids_name if use_ivf else None, hnsw_name,
                              tok_name, lex_name) if name}
        for name in ATTACHABLE & (self._attached | set(m.get("files") or {})):
            if (self.path / name).is_file():
                files[name] = file_check(self.path / name)
        m.update({"generation": gen, "next_id": self._next_id, "segments": segments, "files": files,
                  "deleted": deleted_name, "centroids": centroids_name if use_ivf else None,
                  "qgen": qgen, "hnsw": hnsw_name, "tokindex": tok_name, "lexindex": lex_name,
                  "committed": time.time(),
                  "sources": sources, "counts": counts,
                  "memory_config": dataclasses.asdict(self.config)})
        atomic_write_json(self.path / MANIFEST, m)  # the commit point
        prev = self._manifest
        self._pending = {}
        self._dirty = False
        self._previous_manifest = prev
        self._tok_file = tok_name   # the writer's token and lexical indexes are this commit's
        self._lex_file = lex_name
        # the writer's indexes already hold this state unless they were retrained/rebuilt
        keep = self._index.built and not retrain and (self._index.kind == "ivf") == use_ivf and (
            hnsw_name is None or self._index.kind == "hnsw")
        self._load_manifest(m, None, keep_index=keep)
        self._gc()

    def _verified(self, name: str, manifest: dict[str, Any] | None = None) -> Path:
        """The store file ``name``, checked against the size and checksum that ``manifest``
        (the current one when None) records for it."""
        files = (self._manifest if manifest is None else manifest).get("files") or {}
        p = self.path / name
        verify_file(p, *(files.get(name) or (None, None)))
        return p

    def token_index(self) -> tokenindex.TokenIndex:
        """The token index of the clips (image-question shortlists): the commit's file, read
        once per commit and checked against its size and checksum, brought up to date with
        a writer's pending changes; built from the clips when the commit has none."""
        if self._tok is None:
            name = self._manifest.get("tokindex")
            if name:
                self._tok = tokenindex.TokenIndex.read(self._verified(name), self.spec.vector_dim)
            if self._tok is None:
                self._tok = tokenindex.TokenIndex(self.spec.vector_dim)
        if self._tok.sync(self) and self.mode == "r":
            log.info("the store %s has no current token index; built one for this reader "
                     "(a writer's next commit saves it)", self.path)
        return self._tok

    def _write_token_index(self, gen: int) -> str | None:
        """Bring the token index up to date and write it, under a new name when it changed."""
        old = self._manifest.get("tokindex")
        tok = self.token_index()
        if old and self._tok_file == old and not tok.dirty:
            return old
        name = tokenindex.file_name(gen)
        tok.write(self.path / name)
        return name

    def lexical_index(self) -> lexical.LexicalIndex:
        """The lexical index of the clips (text questions): the commit's file, read and checked
        against its size and checksum at first use, then kept up to date with the clips of
        later commits and a writer's pending changes (the clips it lacks are read); built from
        the clips when the store has none."""
        if self._lex is None:
            name = self._manifest.get("lexindex")
            if name:
                self._lex = lexical.LexicalIndex.read(self._verified(name))
            self._lex_file = name if self._lex is not None else None
            if self._lex is None:
                self._lex = lexical.LexicalIndex()
        key = (self.generation, len(self), self._next_id)   # the clips it was synced with
        if self._lex_key == key:
            return self._lex
        self._lex_key = key
        if self._lex.sync(self) and self._lex_file is None and self.mode == "r":
            log.info("the store %s has no current lexical index; built one for this reader "
                     "(a writer's next commit saves it)", self.path)
        return self._lex

    def _write_lexical_index(self, gen: int) -> str:
        """Bring the lexical index up to date and write it, under a new name when it changed.

        The writer then lets it go (it asks no questions; the next commit reads the file
        again), so that its memory does not grow with the words of every clip."""
        old = self._manifest.get("lexindex")
        lex = self.lexical_index()
        name = old if old and self._lex_file == old and not lex.dirty else lexical.file_name(gen)
        if name != old:
            lex.write(self.path / name)
        self._lex = self._lex_key = None
        return name

    def attach(self, name: str) -> None:
        """Record ``name`` (a file the caller keeps in the store directory, e.g. the config it
        was built with) in the manifest at each commit, so it is verified like the data."""
        if name not in ATTACHABLE:
            raise StoreError(f"cannot attach {name!r} to the store {self.path}; attachable: "
                             f"{', '.join(sorted(ATTACHABLE))}")
        self._writable()
        self._attached.add(name)
        self._dirty = True

    def _write_hnsw(self, name: str) -> None:
        """Write the HNSW graph of the live clips (rebuilt when many were removed)."""
        data = self._index.hnsw_graph(self.ids(), self.vectors)
        atomic_write(self.path / name, lambda fh: fh.write(data))

    def _gc(self) -> None:
        """Remove files that neither the current nor the previous manifest names."""
        remove_unnamed(self.path, (self._manifest, self._previous_manifest))

    # ------------------------------------------------------------------ readers
    def refresh(self) -> bool:
        """Re-read the latest commit; True when it changed. Pending changes are kept."""
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        m = read_manifest(self.path)
        if m["generation"] == self._manifest.get("generation"):
            return False
        last: Exception | None = None
        for _ in range(20):
            try:
                self._load_manifest(m, None)
                return True
            except FileNotFoundError as err:
                last = err
                time.sleep(0.05)
                m = read_manifest(self.path)
        raise StoreError(f"the store {self.path} names a file that does not exist ({last}); "
                         "fix: the store is damaged, re-index into a new --store")

    def close(self) -> None:
        """Release the store (uncommitted changes are discarded)."""
        if self._closed:
            return
        if self._dirty:
            log.warning("closing the store %s with uncommitted changes; they are discarded",
                        self.path)
        self._closed = True
        self._lock.release()

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"MemoryStore({str(self.path)!r}, mode={self.mode!r}, clips={len(self)}, "
                f"generation={self._manifest.get('generation')})")


def consolidate_store(store: MemoryStore) -> dict[str, Any]:
    """Bring ``store`` back under its capacity by consolidating older clips (before a commit),
    as the policy of :mod:`memory.consolidate` plans it.

    Returns counts: ``merges`` (pairwise merges done), ``consolidated`` (stored clips
    replaced by coarser ones).
    """
    cfg = store.config
    n = len(store)
    token_bytes = 2 if cfg.token_dtype == "float16" else 4
    est = store.bytes_estimate() if cfg.capacity_bytes > 0 else 0
    stats: dict[str, Any] = {"merges": 0, "consolidated": 0}
    need = excess(cfg, n, est)
    if need is None:
        return stats
    need_clips, need_bytes = need
    t = store.table()
    protected_ids = recent_ids(cfg, t["id"], t["source"], t["end"])
    movable = [int(i) for i in t["id"] if int(i) not in protected_ids]
    clips = store.get(movable)
    new, merges = plan_consolidation(clips, set(), need_clips, need_bytes, token_bytes)
    kept_ids = {c.id for c in new if c.id >= 0}
    gone = sorted({c.id for c in clips} - kept_ids)
    created = [c for c in new if c.id < 0]   # merged clips get fresh ids from add()
    store.remove(gone)
    store.add(created)
    stats["merges"] = merges
    stats["consolidated"] = len(gone)
    log.info("consolidated %d clips into %d coarser ones (%d merges); store now holds %d",
             len(gone), len(created), merges, len(store))
    return stats
