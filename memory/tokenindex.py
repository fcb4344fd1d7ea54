"""The token index: which clips are worth the exact layout matching of an image question.

Each clip's kept tokens are summarised by a few centroids (:data:`PER_CLIP`, by
farthest-point clustering, so a small distinctive object keeps a centroid of its own rather
than being averaged into the background) and the centroids go into an inner-product index
under the clip's id: exact while it holds up to :data:`IVF_FROM` of them, IVF-PQ (over a
PCA projection of wide tokens) beyond. An image question's view tokens each look up their nearest
centroids; a clip scores, per view, the weighted sum of its best match to each view token,
and the best-scoring clips are shortlisted.

A store saves the index with each commit as ``tokidx-<gen>.faiss`` (named, sized and
checksummed in the manifest like its other files); it is brought up to date at each commit
(new clips added, removed and consolidated ones dropped) and rebuilt from the clips when a
store has none or one that does not cover its live clips.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import faiss
import numpy as np

from streamvid.errors import StoreError
from streamvid.io import atomic_write
from streamvid.types import ClipMemory

from .consolidate import farthest_point_clusters
from .index import ivf_nlist

log = logging.getLogger(__name__)

PER_CLIP = 8          # centroids per clip
IVF_FROM = 16384      # centroids: above this many the index is IVF-PQ (exact below)
PCA_DIMS = 256        # IVF-PQ: wider centroids are first projected to this many dimensions
PQ_DIMS = 8           # IVF-PQ: dimensions per one-byte code (a projected centroid: 32 bytes)
TRAIN_CLIPS = 4096    # IVF-PQ: clips whose centroids train the lists and codebooks
NPROBE = 32           # IVF lists visited per query token
NEIGHBOURS = 256      # nearest centroids looked up per query token
BATCH = 512           # clips read at a time while building


class ClipSource(Protocol):
    """What the index reads its clips from (a :class:`memory.store.MemoryStore`)."""

    path: Path

    def ids(self) -> np.ndarray: ...

    def get(self, ids: Any) -> list[ClipMemory]: ...


def file_name(generation: int) -> str:
    return f"tokidx-{generation:08d}.faiss"


def clip_centroids(clip: ClipMemory) -> np.ndarray:
    """``[k, D]`` unit centroids of the clip's kept tokens (``k <= PER_CLIP``; none kept: 0).

    Farthest-point centres in cosine (the least typical token first, then each time the
    token least like any centre so far), every token joined to its nearest centre, centres
    the normalised means of their members."""
    if clip.tokens is None or not clip.n_tokens:
        return np.zeros((0, clip.vector.shape[0]), np.float32)
    x = np.asarray(clip.tokens, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
    k = min(PER_CLIP, len(x))
    # the least typical token first (least similar to all the others together)
    assign = farthest_point_clusters(x, k, int(np.argmin(x @ x.sum(axis=0))))
    onehot = np.zeros((k, len(x)), np.float32)
    onehot[assign, np.arange(len(x))] = 1.0
    c = onehot @ x
    return np.ascontiguousarray(c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-8),
                                dtype=np.float32)


def _centroids_of(store: ClipSource, ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(owner ids, centroids)`` of the clips ``ids``, a batch of clips at a time."""
    for lo in range(0, len(ids), BATCH):
        part = store.get(ids[lo:lo + BATCH])
        cents = [clip_centroids(c) for c in part]
        owner = np.repeat([c.id for c in part], [len(x) for x in cents]).astype(np.int64)
        if len(owner):
            yield owner, np.concatenate(cents)


def _pq_codes(dim: int) -> int:
    """Sub-quantizers of an IVF-PQ index over ``dim``-d vectors (a divisor of ``dim``)."""
    m = max(1, dim // PQ_DIMS)
    while dim % m:
        m -= 1
    return m


class TokenIndex:
    """Clip-token centroids under clip ids; :meth:`shortlist` answers image questions."""

    def __init__(self, dim: int, index: Any = None):
        self.dim = int(dim)
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self.ids = self._covered()   # clips it holds centroids of
        self.dirty = False           # changed since it was read or written

    def __len__(self) -> int:
        """Centroids held."""
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        return "flat" if isinstance(self.index, faiss.IndexIDMap2) else "ivfpq"

    @property
    def _ivf(self) -> Any:
        return faiss.extract_index_ivf(self.index)

    def _covered(self) -> np.ndarray:
        if self.kind == "flat":
            return np.unique(faiss.vector_to_array(self.index.id_map).astype(np.int64))
        inv = self._ivf.invlists
        ids = [np.array(faiss.rev_swig_ptr(inv.get_ids(lst), inv.list_size(lst)), np.int64)
               for lst in range(inv.nlist) if inv.list_size(lst)]
        return np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)

    # ------------------------------------------------------------------ building
    def sync(self, store: ClipSource) -> bool:
        """Bring the index to ``store``'s clips: drop the gone, add the new (rebuilt as IVF-PQ
        when it grows past :data:`IVF_FROM` centroids, or well past what its lists were
        trained on); True if it changed."""
        live = store.ids()
        gone = np.setdiff1d(self.ids, live, assume_unique=True)
        new = np.setdiff1d(live, self.ids, assume_unique=True)
        if not len(gone) and not len(new):
            return False
        per_clip = self.index.ntotal / len(self.ids) if len(self.ids) else PER_CLIP
        expect = self.index.ntotal + per_clip * len(new)
        grown = (self.kind == "flat" and expect > IVF_FROM) or \
            (self.kind == "ivfpq" and expect > 8 * self._ivf.nlist ** 2)
        if not (grown and self._rebuild(store, live)):
            if len(gone):
                self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(gone)))
            for owner, cents in _centroids_of(store, new):
                self.index.add_with_ids(cents, owner)
        self.ids = live.astype(np.int64)
        self.dirty = True
        return True

    def _rebuild(self, store: ClipSource, live: np.ndarray) -> bool:
        """The index of the clips ``live`` built as IVF-PQ (False: too few centroids to
        train it on; nothing changed)."""
        n = PER_CLIP * len(live)
        log.info("token index of %s: training IVF-PQ lists for %d clips", store.path, len(live))
        pick = live[np.unique(np.linspace(0, len(live) - 1, min(TRAIN_CLIPS, len(live))).astype(int))]
        train = [c for _, c in _centroids_of(store, pick)]
        if sum(len(c) for c in train) < 4 * 256:   # too few to train the codebooks: stay exact
            return False
        train = np.concatenate(train)
        nlist = int(min(ivf_nlist(n), max(1, len(train) // 39)))
        d = min(self.dim, PCA_DIMS)
        quantizer = faiss.IndexFlatIP(d)
        # (faiss's Python layer keeps the quantizer and the projection alive with the index)
        index = faiss.IndexIVFPQ(quantizer, d, nlist, _pq_codes(d), 8, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = min(NPROBE, nlist)
        if d < self.dim:
            index = faiss.IndexPreTransform(faiss.PCAMatrix(self.dim, d), index)
        index.train(train)
        for owner, cents in _centroids_of(store, live):
            index.add_with_ids(cents, owner)
        self.index = index
        return True

    # ------------------------------------------------------------------ files
    def write(self, path: Path) -> None:
        data = faiss.serialize_index(self.index)
        atomic_write(path, lambda fh: fh.write(data.tobytes()))
        self.dirty = False

    @classmethod
    def read(cls, path: Path, dim: int) -> "TokenIndex":
        try:
            raw = faiss.read_index(str(path))   # already of its own class
        except RuntimeError as err:
            raise StoreError(f"the store's token index {path} cannot be read "
                             f"({str(err).splitlines()[0]}); fix: the store is damaged, "
                             "re-index into a new --store") from err
        if not isinstance(raw, (faiss.IndexIDMap2, faiss.IndexIVFPQ, faiss.IndexPreTransform)) \
                or raw.d != dim:
            raise StoreError(f"the store's token index {path} is not one a store of {dim}-d "
                             "tokens writes; fix: the store is damaged, re-index into a new --store")
        out = cls(dim, raw)
        if out.kind == "ivfpq":
            out._ivf.nprobe = min(NPROBE, out._ivf.nlist)
        return out

    # ------------------------------------------------------------------ asking
    def shortlist(self, views: Sequence[tuple[np.ndarray, np.ndarray]], k: int,
                  allowed: np.ndarray | None = None) -> list[int]:
        """The ``k`` clips whose centroids best match one of ``views`` (each ``(tokens [m, D]
        unit, weights [m])``), among ``allowed`` ids (all when None), best first.

        A view token's similarity to a clip is that of the clip's nearest centroid when it is
        among the token's :data:`NEIGHBOURS` nearest, else the last of those (an upper bound),
        so no clip is ranked below one it could beat."""
        views = [(t, w) for t, w in views if len(t)]
        if not views or self.index.ntotal == 0 or k <= 0:
            return []
        q = np.ascontiguousarray(np.concatenate([t for t, _ in views]), np.float32)
        wq = np.concatenate([w for _, w in views]).astype(np.float32)
        owner = np.repeat(np.arange(len(views)), [len(t) for t, _ in views])
        kk = int(min(NEIGHBOURS, self.index.ntotal))
        if allowed is None:
            sims, ids = self.index.search(q, kk)
        else:
            allowed = np.ascontiguousarray(allowed, np.int64)
            if not len(allowed):
                return []
            sel = faiss.IDSelectorBatch(allowed)
            params = faiss.SearchParameters(sel=sel) if self.kind == "flat" else \
                faiss.SearchParametersIVF(sel=sel, nprobe=self._ivf.nprobe)
            sims, ids = self.index.search(q, kk, params=params)
        found = ids >= 0
        floor = np.where(found, sims, np.inf).min(axis=1)            # [M] bound for the unseen
        floor = np.where(np.isfinite(floor), floor, 0.0).astype(np.float32)
        rows = np.nonzero(found)[0]
        clips, col = np.unique(ids[found], return_inverse=True)
        if not len(clips):
            return []
        # each (view token, clip): the clip's best centroid above the token's floor, summed
        # per (view, clip) with the token's weight (sparse: a clip a token did not reach
        # keeps the floor, which every clip has alike)
        gain = sims[found] - floor[rows]
        pair = rows.astype(np.int64) * len(clips) + col
        order = np.lexsort((-gain, pair))
        first = np.ones(len(order), bool)
        first[1:] = pair[order][1:] != pair[order][:-1]
        best = order[first]
        per_view = np.zeros(len(views) * len(clips), np.float64)
        np.add.at(per_view, owner[rows[best]] * len(clips) + col[best], wq[rows[best]] * gain[best])
        base = np.bincount(owner, weights=wq * floor, minlength=len(views))   # [V]
        score = (per_view.reshape(len(views), len(clips)) + base[:, None]).max(axis=0)
        top = np.argsort(-score, kind="stable")[:k]
        return [int(c) for c in clips[top]]
