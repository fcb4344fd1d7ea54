"""Hierarchical consolidation: a bounded store merges its older clips into coarser ones.

When a store holds more clips (or bytes) than its capacity, adjacent clips of the same
source are merged pairwise, preferring pairs that are similar, old and still fine-grained,
until the store is back at ``consolidate_to`` of its capacity. The newest ``keep_recent``
of each source stays at full detail. A merged clip covers the union of its parts' spans,
has ``level = max + 1`` and ``merged = sum``; nothing is dropped: every moment that was
covered stays covered by exactly one clip.

This module is the policy only: functions over clips and a store's clip table; the store
applies it before a commit (:func:`memory.store.consolidate_store`).
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np

from streamvid.config import MemoryConfig
from streamvid.types import ClipMemory

from .segments import clip_bytes

log = logging.getLogger(__name__)

MAX_OBJECT_FRAMES = 64  # described frames whose detections a merged clip keeps
MAX_TEXT = 600          # characters kept of merged descriptions / OCR text
MAX_KEYFRAMES = 4
AGE_WEIGHT = 0.5        # preference for merging older pairs
SIZE_WEIGHT = 0.15      # preference against growing already coarse clips


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)


def _join_unique(parts: Sequence[str], sep: str) -> str:
    seen: list[str] = []
    for p in parts:
        for piece in p.split(sep):
            piece = piece.strip()
            if piece and piece not in seen:
                seen.append(piece)
    out = sep.join(seen)
    return out if len(out) <= MAX_TEXT else out[:MAX_TEXT].rsplit(" ", 1)[0]


def farthest_point_clusters(xn: np.ndarray, k: int, first: int) -> np.ndarray:
    """The cluster (0..k-1) of each unit row of ``xn``: centres picked farthest-point in
    cosine from row ``first`` (each next centre the row least like any centre so far), every
    row joined to its most similar centre, a centre always to its own cluster."""
    centres = [first]
    best = xn @ xn[first]
    for _ in range(1, k):
        nxt = int(np.argmin(best))
        centres.append(nxt)
        best = np.maximum(best, xn @ xn[nxt])
    assign = np.argmax(xn @ xn[centres].T, axis=1)
    assign[centres] = np.arange(k)
    return assign


def compress_tokens(tokens: np.ndarray, times: np.ndarray, positions: np.ndarray,
                    k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduce ``tokens`` to ``k`` by clustering: farthest-point centres, members averaged.

    Each output token is the mean of its cluster (then rescaled to the cluster's mean
    norm); its time and grid position are those of the member closest to the mean.
    """
    n = tokens.shape[0]
    if n <= k:
        return tokens, times, positions
    x = tokens.astype(np.float32)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
    assign = farthest_point_clusters(xn, k, int(np.argmax(np.linalg.norm(x - x.mean(0), axis=1))))
    counts = np.bincount(assign, minlength=k).astype(np.float32)
    onehot = np.zeros((k, n), np.float32)
    onehot[assign, np.arange(n)] = 1.0
    sums = onehot @ x
    mean = sums / counts[:, None]
    norm = np.bincount(assign, weights=np.linalg.norm(x, axis=1), minlength=k) / counts
    out = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-8) * norm[:, None]
    # the member closest to its cluster mean lends its time and grid position
    sim = np.einsum("nd,nd->n", xn, out[assign] / np.maximum(
        np.linalg.norm(out[assign], axis=1, keepdims=True), 1e-8))
    by = np.lexsort((-sim, assign))
    first = by[np.searchsorted(assign[by], np.arange(k))]
    out_t = np.asarray(times, np.float32)[first]
    out_p = np.asarray(positions, np.int32)[first]
    order = np.lexsort((out_p, out_t))
    return out[order].astype(tokens.dtype), out_t[order], out_p[order]


def merge_clips(a: ClipMemory, b: ClipMemory, *, max_tokens: int | None = None) -> ClipMemory:
    """One coarser clip standing for ``a`` and ``b`` (same source, ``a`` before ``b``)."""
    wa, wb = float(a.merged), float(b.merged)
    vector = _unit(wa * a.vector + wb * b.vector)
    if a.text_vector is not None and b.text_vector is not None:
        text_vector = _unit(wa * a.text_vector + wb * b.text_vector)
    else:
        text_vector = a.text_vector if a.text_vector is not None else b.text_vector
    tokens = times = positions = None
    if a.tokens is not None or b.tokens is not None:
        parts = [c for c in (a, b) if c.tokens is not None and c.n_tokens]
        if parts:
            dt = parts[0].tokens.dtype
            tokens = np.concatenate([np.asarray(c.tokens, dtype=dt) for c in parts])
            times = np.concatenate([np.asarray(c.token_times, np.float32)
                                    if c.token_times is not None
                                    else np.full(c.n_tokens, c.keyframe, np.float32)
                                    for c in parts])
            positions = np.concatenate([np.asarray(c.token_positions, np.int32)
                                        if c.token_positions is not None
                                        else np.full(c.n_tokens, -1, np.int32) for c in parts])
            k = max_tokens if max_tokens is not None else max(a.n_tokens, b.n_tokens)
            tokens, times, positions = compress_tokens(tokens, times, positions, max(1, k))
    labels: dict[str, float] = {}
    for c, w in ((a, wa), (b, wb)):
        for lbl, p in c.labels:
            labels[lbl] = labels.get(lbl, 0.0) + w * p
    top = sorted(labels.items(), key=lambda kv: -kv[1])[:5]
    labels_t = tuple((lbl, round(p / (wa + wb), 4)) for lbl, p in top)
    kfs = sorted(set(a.keyframes) | set(b.keyframes))
    if len(kfs) > MAX_KEYFRAMES:
        pick = np.linspace(0, len(kfs) - 1, MAX_KEYFRAMES).round().astype(int)
        kfs = [kfs[i] for i in pick]
    start, end = min(a.start, b.start), max(a.end, b.end)
    # the keyframe picture of the part whose keyframe became the merged clip's keyframe
    kf_time = kfs[0] if kfs else (start + end) / 2
    with_jpeg = [c for c in (a, b) if c.keyframe_jpeg is not None]
    jpeg = min(with_jpeg, key=lambda c: abs(c.keyframe - kf_time)).keyframe_jpeg \
        if with_jpeg else None
    return ClipMemory(
        source_id=a.source_id, start=start, end=end,
        vector=vector, keyframes=tuple(kfs), text_vector=text_vector, tokens=tokens,
        token_times=times, token_positions=positions, labels=labels_t,
        ocr_text=_join_unique([a.ocr_text, b.ocr_text], " | "),
        description=_join_unique([a.description, b.description], "; "),
        novelty=max(a.novelty, b.novelty), level=max(a.level, b.level) + 1,
        merged=a.merged + b.merged, keyframe_jpeg=jpeg,
        frame_pictures=tuple(sorted(a.frame_pictures + b.frame_pictures, key=lambda p: p[0])),
        objects=_merge_objects(a.objects + b.objects),
        speech=tuple(sorted(set(a.speech) | set(b.speech), key=lambda sg: (sg.start, sg.end))))


def _merge_objects(objects):
    """Detections of a merged clip: every described frame's while few, else an even sample
    that keeps the frame with the most objects of each class (counts stay answerable)."""
    if len(objects) <= MAX_OBJECT_FRAMES:
        return objects
    keep = set(np.linspace(0, len(objects) - 1, MAX_OBJECT_FRAMES // 2).round().astype(int).tolist())
    best: dict[str, tuple[int, int]] = {}
    for i, fo in enumerate(objects):
        for name, n in fo.counts().items():
            if n > best.get(name, (0, -1))[0]:
                best[name] = (n, i)
    keep |= {i for _, i in best.values()}
    return tuple(objects[i] for i in sorted(keep))


def plan_consolidation(clips: Sequence[ClipMemory], protected: set[int], need_clips: int,
                       need_bytes: int, token_bytes: int) -> tuple[list[ClipMemory], int]:
    """Merge adjacent unprotected clips until ``need_clips`` fewer clips and ``need_bytes``
    fewer bytes remain (or no pair is left). Returns the new list (sorted by source, start)
    and the number of merges. ``protected`` holds indices into ``clips``.
    """
    by_source: dict[str, list[tuple[ClipMemory, bool]]] = {}
    for i, c in enumerate(clips):
        by_source.setdefault(c.source_id, []).append((c, i in protected))
    for lst in by_source.values():
        lst.sort(key=lambda t: (t[0].start, t[0].end))
    merges = 0
    while need_clips > 0 or need_bytes > 0:
        pairs: list[tuple[float, str, int]] = []
        for sid, lst in by_source.items():
            n = len(lst)
            for j in range(n - 1):
                (ca, pa), (cb, pb) = lst[j], lst[j + 1]
                if pa or pb:
                    continue
                age = 1.0 - j / max(n - 1, 1)
                sim = float(np.dot(ca.vector, cb.vector))
                size = math.log2(ca.merged + cb.merged)
                pairs.append((sim + AGE_WEIGHT * age - SIZE_WEIGHT * size, sid, j))
        if not pairs:
            log.warning("store over capacity but no more clips can be consolidated (all "
                        "remaining clips are among the most recent); raise the capacity or "
                        "lower memory.keep_recent")
            break
        pairs.sort(key=lambda p: -p[0])
        used: dict[str, set[int]] = {}
        chosen: list[tuple[str, int]] = []
        round_clips, round_bytes = need_clips, need_bytes
        for _, sid, j in pairs:
            u = used.setdefault(sid, set())
            if j in u or j + 1 in u:
                continue
            u.update((j, j + 1))
            chosen.append((sid, j))
            a, b = by_source[sid][j][0], by_source[sid][j + 1][0]
            round_clips -= 1
            round_bytes -= (clip_bytes(a, token_bytes) + clip_bytes(b, token_bytes)
                            - clip_bytes(a, token_bytes) // 2 - clip_bytes(b, token_bytes) // 2)
            if round_clips <= 0 and round_bytes <= 0:
                break
        for sid in {s for s, _ in chosen}:
            js = sorted(j for s, j in chosen if s == sid)
            lst = by_source[sid]
            out: list[tuple[ClipMemory, bool]] = []
            i = 0
            jset = set(js)
            while i < len(lst):
                if i in jset:
                    a, b = lst[i][0], lst[i + 1][0]
                    merged = merge_clips(a, b)
                    need_bytes -= clip_bytes(a, token_bytes) + clip_bytes(b, token_bytes) - \
                        clip_bytes(merged, token_bytes)
                    need_clips -= 1
                    merges += 1
                    out.append((merged, False))
                    i += 2
                else:
                    out.append(lst[i])
                    i += 1
            by_source[sid] = out
    result = [c for sid in sorted(by_source) for c, _ in by_source[sid]]
    return result, merges


def excess(cfg: MemoryConfig, n_clips: int, n_bytes: int) -> tuple[int, int] | None:
    """Clips and bytes a store of ``n_clips`` clips and about ``n_bytes`` bytes must shed to
    be back at ``consolidate_to`` of its capacity; None when it is within its capacity."""
    over_clips = cfg.capacity_clips > 0 and n_clips > cfg.capacity_clips
    over_bytes = cfg.capacity_bytes > 0 and n_bytes > cfg.capacity_bytes
    if not (over_clips or over_bytes):
        return None
    need_clips = n_clips - int(cfg.consolidate_to * cfg.capacity_clips) if over_clips else 0
    need_bytes = n_bytes - int(cfg.consolidate_to * cfg.capacity_bytes) if over_bytes else 0
    return need_clips, need_bytes


def recent_ids(cfg: MemoryConfig, ids: np.ndarray, source: np.ndarray,
               end: np.ndarray) -> set[int]:
    """The ids among ``ids`` (with their ``source`` codes and ``end`` times) of the newest
    ``keep_recent`` share of each source's clips: they stay at full detail."""
    n = len(ids)
    protected: set[int] = set()
    cap = cfg.capacity_clips if cfg.capacity_clips > 0 else n
    for code in np.unique(source):
        mask = source == code
        share = int(round(cfg.keep_recent * cap * mask.sum() / max(n, 1)))
        if share > 0:
            order = np.argsort(-end[mask], kind="stable")[:share]
            protected.update(ids[mask][order].tolist())
    return protected
