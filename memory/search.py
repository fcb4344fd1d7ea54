"""A store's search state: the FAISS indexes over its live clips and the candidate filter.

The visual index is exact (flat), IVF or HNSW as configured; the text index is exact. A
writer's uncommitted clips are added to both at once. An HNSW graph cannot remove vectors:
removed ids stay in it as ``dead`` and are excluded by the search's selection until the
graph is rebuilt.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import faiss
import numpy as np

from streamvid.config import MemoryConfig
from streamvid.types import ClipMemory

from .index import VecIndex
from .segments import Segment


def index_kind(config: MemoryConfig, centroids: np.ndarray | None, hnsw_index: Any) -> str:
    """The visual index kind a store's committed files give."""
    if hnsw_index is not None:
        return "hnsw"
    if centroids is not None:
        return "ivf"
    # flat/auto, or ivf/hnsw requested but not built yet: exact until the first commit builds it
    return "flat"


def candidates(table: dict[str, np.ndarray], source_code: int | None,
               time_range: tuple[float, float] | None) -> np.ndarray:
    """Ids of the rows of a store ``table`` of source ``source_code`` (all when None) whose
    span overlaps ``time_range`` (seconds; all when None), ascending."""
    mask = np.ones(len(table["id"]), bool)
    if source_code is not None:
        mask &= table["source"] == source_code
    if time_range is not None:
        lo, hi = float(time_range[0]), float(time_range[1])
        mask &= (table["end"] >= lo) & (table["start"] <= hi)
    return np.sort(table["id"][mask])


class ClipIndex:
    """The visual and text indexes of one store's live clips, each built from the store's
    segments when first used (a text question never reads the visual vectors, an image
    question never the text vectors)."""

    def __init__(self, config: MemoryConfig, vector_dim: int, text_dim: int):
        self.config = config
        self.vector_dim = int(vector_dim)
        self.text_dim = int(text_dim)
        self._visual: VecIndex | None = VecIndex("flat", self.vector_dim)
        self._text: VecIndex | None = VecIndex("flat", self.text_dim)
        self._kind = "flat"
        self._source: tuple[Any, ...] = ()   # what build() was given: read on first use
        self.dead: set[int] = set()   # removed ids still inside an HNSW graph

    @property
    def kind(self) -> str:
        """The visual index's kind: ``flat``, ``ivf`` or ``hnsw``."""
        return self._visual.kind if self._visual is not None else self._kind

    @property
    def built(self) -> bool:
        """Both indexes are in memory (none is left to read from the segments)."""
        return self._visual is not None and self._text is not None

    @property
    def visual(self) -> VecIndex:
        if self._visual is None:
            self._visual = self._build_visual(*self._source)
        return self._visual

    @visual.setter
    def visual(self, index: VecIndex) -> None:
        self._visual = index

    @property
    def text(self) -> VecIndex:
        if self._text is None:
            segments, segi, rows = self._source[:3]
            self._text = VecIndex("flat", self.text_dim)
            for si, seg in enumerate(segments):
                r = rows[segi == si]
                r = r[seg.has_text[r]]
                if len(r):
                    self._text.add(seg.ids[r], np.asarray(seg.text_vectors[r]))
        return self._text

    def build(self, segments: Sequence[Segment], segi: np.ndarray, rows: np.ndarray,
              live_ids: np.ndarray, qgen: int, centroids: np.ndarray | None, hnsw_index: Any,
              pending: Iterable[ClipMemory]) -> None:
        """Index the live rows (``rows[segi == i]`` of ``segments[i]``) and ``pending`` clips
        (the segments are read when an index is first used).

        ``hnsw_index`` is a graph read from the store (its ids not in ``live_ids`` are dead);
        IVF lists stored with a segment for centroids generation ``qgen`` are reused.
        """
        self._source = (list(segments), segi, rows, live_ids, qgen, centroids, hnsw_index)
        self._kind = index_kind(self.config, centroids, hnsw_index)
        self._visual = self._text = None
        self.dead = set()
        for c in pending:
            self.add(c)

    def _build_visual(self, segments: Sequence[Segment], segi: np.ndarray, rows: np.ndarray,
                      live_ids: np.ndarray, qgen: int, centroids: np.ndarray | None,
                      hnsw_index: Any) -> VecIndex:
        kind = self._kind
        cfg = self.config
        visual = VecIndex(kind, self.vector_dim, nprobe=cfg.nprobe,
                          ef_search=cfg.ef_search, hnsw_m=cfg.hnsw_m, centroids=centroids)
        if kind == "hnsw" and hnsw_index is not None:
            visual.index = hnsw_index
            faiss.downcast_index(hnsw_index.index).hnsw.efSearch = cfg.ef_search
            in_graph = faiss.vector_to_array(hnsw_index.id_map).astype(np.int64)
            self.dead = self.dead | set(in_graph[~np.isin(in_graph, live_ids)].tolist())
        else:
            for si, seg in enumerate(segments):
                r = rows[segi == si]
                if len(r) == 0:
                    continue
                assign = None
                if kind == "ivf" and seg.assign is not None and seg.assign_file == \
                        f"assign-{qgen}.npy":
                    assign = seg.assign if len(r) == seg.rows else seg.assign[r]
                if len(r) == seg.rows:  # every row live: read the mapped file once, no gather
                    visual.add(seg.ids, seg.vectors, assign)
                else:
                    visual.add(seg.ids[r], np.asarray(seg.vectors[r]), assign)
        return visual

    def add(self, c: ClipMemory) -> None:
        """Index one clip (its ``id`` set)."""
        ids = np.array([c.id], np.int64)
        self.visual.add(ids, c.vector[None], None if self.visual.kind != "ivf"
                        else self.visual.assign(c.vector[None]))
        if c.text_vector is not None:
            self.text.add(ids, c.text_vector[None])

    def remove(self, ids: np.ndarray) -> None:
        self.text.remove(ids)
        if self.visual.kind == "hnsw":
            self.dead = self.dead | set(int(i) for i in ids)
        else:
            self.visual.remove(ids)

    def search(self, q: np.ndarray, k: int, space: str, *, filtered: bool,
               selected: Callable[[], np.ndarray], next_id: int,
               vectors_of: Callable[[np.ndarray], np.ndarray]) -> list[tuple[int, float]]:
        """The ``k`` best ``(id, score)`` of ``space`` for the query vector ``q``.

        Unless the search is unfiltered and no dead ids remain, only the ids ``selected()``
        returns are candidates (``vectors_of`` gives their vectors for exact scoring).
        """
        index = self.visual if space == "visual" else self.text
        dead = self.dead if space == "visual" else set()
        if not filtered and not dead:
            scores, ids = index.index.search(q[None], int(min(k, max(index.ntotal, 1))))
        else:
            sel = selected()
            if len(sel) == 0:
                return []
            id_space = int(max(next_id, int(sel.max()) + 1))
            scores, ids = index.search(q[None], k, sel, id_space, vectors_of=vectors_of)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def hnsw_graph(self, ids: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray]) -> bytes:
        """The serialised HNSW graph of the live clips ``ids`` (rebuilt when the index is not
        HNSW yet or many of its ids were removed)."""
        if self.visual.kind != "hnsw" or len(self.dead) > 0.1 * max(1, self.visual.ntotal):
            idx = VecIndex("hnsw", self.vector_dim, ef_search=self.config.ef_search,
                           hnsw_m=self.config.hnsw_m)
            if len(ids):
                idx.add(ids, vectors_of(ids))
            self.visual = idx
            self.dead = set()
        return faiss.serialize_index(self.visual.index).tobytes()
