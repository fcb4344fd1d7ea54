"""The token index: which clips are worth the exact layout matching of an image question.

Each clip's kept tokens are summarised by a few centroids (:data:`PER_CLIP`, by
farthest-point clustering, so a small distinctive object keeps a centroid of its own rather
than being averaged into the background) and the centroids go into an inner-product index
under the clip's id: exact while it holds up to :data:`IVF_FROM` of them, IVF-PQ (over a
PCA projection of wide tokens) beyond. An image question's view tokens each look up their nearest
centroids; a clip scores, per view, the weighted sum of its best match to each view token,
and the best-scoring clips are shortlisted.

Near-identical clips (a camera's hours of one scene) form a group: a clip whose every
centroid is within :data:`GROUP_SIM` of one of a group's first clip's (and has as many)
joins it and adds no centroids, so the group takes one place among a view token's nearest
centroids and in the shortlist; :meth:`TokenIndex.group` gives its other clips.

A store saves the index with each commit as ``tokidx-<gen>.npz`` (the serialised FAISS index
and each clip's group; named, sized and checksummed in the manifest like its other files); it
is brought up to date at each commit (new clips added, removed and consolidated ones dropped)
and rebuilt from the clips when a store has none, one that does not cover its live clips, or
one written before groups (``tokidx-<gen>.faiss``).
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
GROUP_SIM = 0.98      # a clip joins a group when each of its centroids is this similar ...
GROUP_PROBE = 32      # ... to one of the representative's, as many (candidates: among this
                      # many nearest centroids of any of its own)


class ClipSource(Protocol):
    """What the index reads its clips from (a :class:`memory.store.MemoryStore`)."""

    path: Path

    def ids(self) -> np.ndarray: ...

    def get(self, ids: Any) -> list[ClipMemory]: ...


def file_name(generation: int) -> str:
    return f"tokidx-{generation:08d}.npz"


def _runs(owner: np.ndarray) -> Iterator[tuple[int, slice]]:
    """``(clip id, rows)`` of each run of equal ids in ``owner``."""
    cut = np.flatnonzero(np.diff(owner)) + 1
    for a, b in zip(np.r_[0, cut], np.r_[cut, len(owner)]):
        yield int(owner[a]), slice(int(a), int(b))


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
    """Clip-token centroids of group representatives under their clip ids (each clip of a
    group near-identical to its representative); :meth:`shortlist` answers image questions."""

    def __init__(self, dim: int, index: Any = None, clips: np.ndarray | None = None,
                 reps: np.ndarray | None = None):
        self.dim = int(dim)
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        clips = np.zeros(0, np.int64) if clips is None else np.asarray(clips, np.int64)
        reps = clips if reps is None else np.asarray(reps, np.int64)
        self.rep: dict[int, int] = dict(zip(clips.tolist(), reps.tolist()))   # clip -> its group's
        self.members: dict[int, list[int]] = {}                             # representative -> group
        for c, r in self.rep.items():
            self.members.setdefault(r, []).append(c)
        self.ids = np.sort(clips)    # clips it covers (those without kept tokens too)
        self.dirty = False           # changed since it was read or written
        self._sizes: dict[int, int] | None = None   # representative -> centroids held

    def __len__(self) -> int:
        """Centroids held."""
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        return "flat" if isinstance(self.index, faiss.IndexIDMap2) else "ivfpq"

    @property
    def _ivf(self) -> Any:
        return faiss.extract_index_ivf(self.index)

    def _held(self) -> np.ndarray:
        """The owner of every centroid the index holds."""
        if self.kind == "flat":
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        inv = self._ivf.invlists
        ids = [np.array(faiss.rev_swig_ptr(inv.get_ids(lst), inv.list_size(lst)), np.int64)
               for lst in range(inv.nlist) if inv.list_size(lst)]
        return np.concatenate(ids) if ids else np.zeros(0, np.int64)

    @property
    def sizes(self) -> dict[int, int]:
        if self._sizes is None:
            owner, n = np.unique(self._held(), return_counts=True)
            self._sizes = dict(zip(owner.tolist(), n.tolist()))
        return self._sizes

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
        self._drop(store, gone.tolist())
        for lo in range(0, len(new), BATCH):
            part = new[lo:lo + BATCH]
            per_rep = self.index.ntotal / len(self.sizes) if self.sizes else PER_CLIP
            expect = self.index.ntotal + per_rep * len(part)
            if (self.kind == "flat" and expect > IVF_FROM) or \
                    (self.kind == "ivfpq" and expect > 8 * self._ivf.nlist ** 2):
                self._rebuild(store)
            for owner, cents in _centroids_of(store, part):
                self._add(owner, cents)
            for cid in part.tolist():   # clips that kept no tokens: groups without centroids
                if cid not in self.rep:
                    self.rep[cid] = cid
                    self.members[cid] = [cid]
        self.ids = live.astype(np.int64)
        self.dirty = True
        return True

    def _add(self, owner: np.ndarray, cents: np.ndarray) -> None:
        """Each clip of ``owner`` (its centroids ``cents``) joins the group of a representative
        whose centroids match its own (:meth:`_group_of`) or starts a group of its own."""
        for cid, rows in _runs(owner):
            c = cents[rows]
            rep = self._group_of(c)
            if rep is None:
                self.index.add_with_ids(c, np.full(len(c), cid, np.int64))
                self.sizes[cid] = len(c)
                rep = cid
            self.rep[cid] = rep
            self.members.setdefault(rep, []).append(cid)

    def _group_of(self, c: np.ndarray) -> int | None:
        """The representative with as many centroids as ``c`` whose centroids each of ``c``
        matches (similarity at least :data:`GROUP_SIM`), or None.

        Candidates: the representatives close to any of ``c`` (among its :data:`GROUP_PROBE`
        nearest centroids); each is then checked against every centroid of ``c``."""
        if not self.index.ntotal:
            return None
        q = np.ascontiguousarray(c, np.float32)
        sims, ids = self.index.search(q, int(min(GROUP_PROBE, self.index.ntotal)))
        cands = sorted({int(r) for r in ids[(sims >= GROUP_SIM) & (ids >= 0)].tolist()
                        if self.sizes.get(int(r)) == len(c)})
        if not cands:
            return None
        sel = np.array(cands, np.int64)
        sims, ids = self.index.search(q, int(min(self.index.ntotal, len(c) * len(sel))),
                                      params=self._params(sel))
        for r in cands:
            if bool(np.all(((ids == r) & (sims >= GROUP_SIM)).any(axis=1))):
                return r
        return None

    def _params(self, allowed: np.ndarray) -> Any:
        """Search parameters that keep to the ids ``allowed``."""
        sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, np.int64))
        return faiss.SearchParameters(sel=sel) if self.kind == "flat" else \
            faiss.SearchParametersIVF(sel=sel, nprobe=self._ivf.nprobe)

    def _drop(self, store: ClipSource, gone: list[int]) -> None:
        """Forget the clips ``gone``; a group that lost its representative gets its lowest
        remaining member as the new one (its centroids read from ``store``)."""
        if not gone:
            return
        gone_set = set(gone)
        lost = sorted({self.rep[c] for c in gone if self.rep.get(c) == c})
        for c in gone:
            r = self.rep.pop(c, None)
            if r is not None and r not in lost:
                self.members[r].remove(c)
        if lost:
            self.index.remove_ids(faiss.IDSelectorBatch(np.array(lost, np.int64)))
        heirs = []
        for r in lost:
            rest = [m for m in self.members.pop(r) if m not in gone_set]
            self.sizes.pop(r, None)
            for m in rest:
                self.rep.pop(m, None)
            heirs.append(rest)
        # each heir group keeps its remaining members under the first of them, whose
        # centroids now stand for the group
        for rest in heirs:
            if not rest:
                continue
            first = np.array(rest[:1], np.int64)
            for owner, cents in _centroids_of(store, first):
                self.index.add_with_ids(cents, owner)
                self.sizes[int(first[0])] = len(cents)
            self.members[int(first[0])] = list(rest)
            for m in rest:
                self.rep[m] = int(first[0])

    def _rebuild(self, store: ClipSource) -> bool:
        """The index of the groups' representatives built as IVF-PQ (False: too few
        centroids to train it on; nothing changed)."""
        reps = np.array(sorted(self.members), np.int64)
        n = PER_CLIP * max(1, len(reps))
        log.info("token index of %s: training IVF-PQ lists for %d clip groups", store.path,
                 len(reps))
        pick = reps[np.unique(np.linspace(0, len(reps) - 1, min(TRAIN_CLIPS, len(reps))).astype(int))] \
            if len(reps) else reps
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
        for owner, cents in _centroids_of(store, reps):
            index.add_with_ids(cents, owner)
        self.index = index
        self._sizes = None
        return True

    # ------------------------------------------------------------------ files
    def write(self, path: Path) -> None:
        clips = np.fromiter(self.rep, np.int64, len(self.rep))
        reps = np.fromiter(self.rep.values(), np.int64, len(self.rep))
        data = faiss.serialize_index(self.index)
        atomic_write(path, lambda fh: np.savez(fh, index=data, clips=clips, reps=reps))
        self.dirty = False

    @classmethod
    def read(cls, path: Path, dim: int) -> "TokenIndex | None":
        """The index saved at ``path``; None for one of the form written before clips were
        grouped (``.faiss``: to be rebuilt)."""
        if path.suffix == ".faiss":
            log.info("the token index %s predates clip groups: rebuilding it", path)
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                data, clips, reps = z["index"], z["clips"], z["reps"]
            raw = faiss.deserialize_index(np.ascontiguousarray(data, np.uint8))
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise StoreError(f"the store's token index {path} cannot be read "
                             f"({str(err).splitlines()[0]}); fix: the store is damaged, "
                             "re-index into a new --store") from err
        if not isinstance(raw, (faiss.IndexIDMap2, faiss.IndexIVFPQ, faiss.IndexPreTransform)) \
                or raw.d != dim or clips.shape != reps.shape or clips.dtype != np.int64:
            raise StoreError(f"the store's token index {path} is not one a store of {dim}-d "
                             "tokens writes; fix: the store is damaged, re-index into a new --store")
        out = cls(dim, raw, clips, reps)
        if out.kind == "ivfpq":
            out._ivf.nprobe = min(NPROBE, out._ivf.nlist)
        return out

    def group(self, cid: int) -> list[int]:
        """The clips of ``cid``'s group (itself first when it is the representative)."""
        return self.members.get(self.rep.get(cid, cid), [cid])

    # ------------------------------------------------------------------ asking
    def shortlist(self, views: Sequence[tuple[np.ndarray, np.ndarray]], k: int,
                  allowed: np.ndarray | None = None) -> list[int]:
        """The ``k`` clip groups whose centroids best match one of ``views`` (each ``(tokens
        [m, D] unit, weights [m])``), among ``allowed`` ids (all when None), best first: of
        each its representative, or its first allowed member (:meth:`group` gives the rest).

        Near-identical clips (hours of the same scene) hold one group's centroids, so they
        take one place in a shortlist and in each token's nearest centroids, not all of them.

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
            reps = np.unique([self.rep.get(a, a) for a in allowed.tolist()]).astype(np.int64)
            sims, ids = self.index.search(q, kk, params=self._params(reps))
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
        top = [int(c) for c in clips[np.argsort(-score, kind="stable")[:k]]]
        if allowed is not None:
            ok = set(allowed.tolist())
            top = [c if c in ok else min(m for m in self.group(c) if m in ok) for c in top]
        return top
