"""Vector indexes over stable int64 ids: exact (flat), IVF and HNSW, inner product.

Vectors are unit length, so inner product is cosine similarity. Every search honours a
selection of ids (live ids, optionally narrowed by source/time filters); a small selection
is scored exactly in numpy, a large one through a FAISS ``IDSelectorBitmap``.
"""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np

log = logging.getLogger(__name__)

EXACT_SELECTION = 8192  # selections at most this large are scored exactly in numpy


def ivf_nlist(n: int) -> int:
    """Number of IVF lists for ``n`` vectors (about sqrt(n), at least 16)."""
    return int(min(65536, max(16, round(math.sqrt(max(n, 1))))))


def id_bitmap(ids: np.ndarray, size: int) -> np.ndarray:
    """A little-endian packed bitmap with the bits of ``ids`` set (FAISS IDSelectorBitmap)."""
    bits = np.zeros(max(int(size), 1), dtype=bool)
    if len(ids):
        bits[ids] = True
    return np.packbits(bits, bitorder="little")


class VecIndex:
    """An id-addressed inner-product index of one kind: ``flat``, ``ivf`` or ``hnsw``.

    ``hnsw`` cannot remove vectors; removed ids stay in the graph and are excluded by the
    selection passed to :meth:`search` (the store rebuilds the graph when many are dead).
    """

    def __init__(self, kind: str, dim: int, *, nprobe: int = 32, ef_search: int = 128,
                 hnsw_m: int = 32, centroids: np.ndarray | None = None):
        self.kind = kind
        self.dim = int(dim)
        self.nprobe = int(nprobe)
        self.ef_search = int(ef_search)
        self.hnsw_m = int(hnsw_m)
        self.centroids: np.ndarray | None = None
        if kind == "flat":
            self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        elif kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = 80
            self.index = faiss.IndexIDMap2(hnsw)
        elif kind == "ivf":
            if centroids is None:
                raise ValueError("an ivf index needs trained centroids")
            self._make_ivf(np.ascontiguousarray(centroids, dtype=np.float32))
        else:  # pragma: no cover - config choices are checked upstream
            raise ValueError(f"unknown index kind {kind!r}")

    # ------------------------------------------------------------------ ivf
    def _make_ivf(self, centroids: np.ndarray) -> None:
        self.centroids = centroids
        self.quantizer = faiss.IndexFlatIP(self.dim)
        self.quantizer.add(centroids)
        self.index = faiss.IndexIVFFlat(self.quantizer, self.dim, centroids.shape[0],
                                        faiss.METRIC_INNER_PRODUCT)
        self.index.is_trained = True
        self.index.nprobe = min(self.nprobe, centroids.shape[0])

    @staticmethod
    def train_centroids(x: np.ndarray, nlist: int, *, seed: int = 1234) -> np.ndarray:
        """Spherical k-means centroids for an IVF index over ``x`` (a sample is enough)."""
        n = x.shape[0]
        nlist = max(1, min(nlist, n))
        rng = np.random.default_rng(seed)
        sample = x if n <= nlist * 64 else x[np.sort(rng.choice(n, nlist * 64, replace=False))]
        km = faiss.Kmeans(x.shape[1], nlist, niter=12, spherical=True, seed=seed,
                          verbose=False, min_points_per_centroid=1, max_points_per_centroid=256)
        km.train(np.ascontiguousarray(sample, dtype=np.float32))
        return np.ascontiguousarray(km.centroids, dtype=np.float32)

    def assign(self, x: np.ndarray) -> np.ndarray:
        """IVF list of each row of ``x`` (only for ``ivf``)."""
        _, a = self.quantizer.search(np.ascontiguousarray(x, dtype=np.float32), 1)
        return a.ravel().astype(np.int64)

    # ------------------------------------------------------------------ updates
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, x: np.ndarray, assign: np.ndarray | None = None) -> None:
        if len(ids) == 0:
            return
        x = np.ascontiguousarray(x, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.kind == "ivf" and assign is not None:
            assign = np.ascontiguousarray(assign, dtype=np.int64)
            self.index.add_core(len(ids), faiss.swig_ptr(x), faiss.swig_ptr(ids),
                                faiss.swig_ptr(assign))
        else:
            self.index.add_with_ids(x, ids)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0 or self.kind == "hnsw":
            return
        self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))

    # ------------------------------------------------------------------ search
    def search(self, q: np.ndarray, k: int, selected: np.ndarray, id_space: int,
               vectors_of=None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` among ``selected`` ids for each query row: ``(scores, ids)``, best first.

        ``vectors_of(ids)`` returns the vectors of ids for exact scoring of small selections.
        Missing results are padded with id -1.
        """
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(-1, self.dim)
        k = int(min(k, len(selected)))
        if k <= 0:
            return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
        if len(selected) <= EXACT_SELECTION and vectors_of is not None:
            vecs = vectors_of(selected)
            sims = q @ vecs.T
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            ps = np.take_along_axis(sims, part, 1)
            order = np.argsort(-ps, axis=1, kind="stable")
            top = np.take_along_axis(part, order, 1)
            return np.take_along_axis(sims, top, 1).astype(np.float32), selected[top]
        bitmap = id_bitmap(selected, id_space)
        sel = faiss.IDSelectorBitmap(id_space, faiss.swig_ptr(bitmap))
        if self.kind == "ivf":
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nprobe)
            scores, ids = self.index.search(q, k, params=params)
        elif self.kind == "hnsw":
            # the IDMap2 wrapper translates the selector into the inner graph's positions
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.ef_search, k))
            scores, ids = self.index.search(q, k, params=params)
        else:
            params = faiss.SearchParameters(sel=sel)
            scores, ids = self.index.search(q, k, params=params)
        del bitmap
        return scores, ids
