"""Question-aware recall from a memory store into a fixed visual token budget."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamvid.config import RetrievalConfig
from streamvid.encoders.query import QueryEncoder, QueryView as _View, unit as _unit
from streamvid.errors import QueryError, StoreError
from streamvid.question import SPEECH_WORDS, frame_match
from streamvid.types import ClipMemory, Context, ContextItem, Question, TextEncoder, VisionEncoder

from .budget import allocate, pick_tokens
from .lexical import quoted_phrases, words
from .store import MemoryStore

log = logging.getLogger(__name__)

SLICES = 4             # recency correction: candidates are also drawn from each time slice
MAX_BUCKETS = 32       # recency correction: time windows per source for the baseline
BUCKET_SAMPLE = 64     # recency correction: clips sampled per window
OCR_LEXICAL = 0.75     # lexical weight for questions about written text
OBJECT_WEIGHT = 0.5    # questions naming objects: weight of the detections (the rest: text scores)
SUMMARY_CLIPS = 16     # summary questions: clips spread over the span asked about
SUMMARY_AROUND = 5.0   # summary questions at a time: seconds around it
SPEECH_LEXICAL = 0.75  # lexical weight for questions about what was said
VIEW_REACH = 1                        # image queries: cells a view token may move to find its match
VIEW_INSIDE = 0.5                     # image queries: least weight of a view inside the frame
VIEW_CHUNK = 1 << 23                  # image queries: similarity cells scored at a time
IMAGE_BATCH = 256                     # image queries: clips read from the store at a time


def _standard(v: np.ndarray) -> np.ndarray:
    """``v`` standardised robustly: minus its median, over its scaled median absolute deviation."""
    med = float(np.median(v))
    spread = 1.4826 * float(np.median(np.abs(v - med)))
    return (v - med) / max(spread, 1e-6)


def _shift_max(g: np.ndarray, reach: int) -> np.ndarray:
    """Each cell of ``g [..., H, W]`` replaced by the largest value within ``reach`` cells
    (a square window: the max along rows, then along columns)."""
    if reach <= 0:
        return g
    for axis in (g.ndim - 2, g.ndim - 1):
        n = g.shape[axis]
        out = g.copy()
        for d in range(1, reach + 1):
            lo = [slice(None)] * g.ndim
            hi = [slice(None)] * g.ndim
            lo[axis], hi[axis] = slice(0, n - d), slice(d, n)
            np.maximum(out[tuple(lo)], g[tuple(hi)], out=out[tuple(lo)])
            np.maximum(out[tuple(hi)], g[tuple(lo)], out=out[tuple(hi)])
        g = out
    return g


def _view_scores(clips: list[ClipMemory], views: list[_View], grid: tuple[int, int]) -> np.ndarray:
    """How well each clip's kept tokens show one of the views, laid out as in the view.

    For every frame of a clip (its tokens sharing a time), each view token is compared with
    the frame's tokens around where it would fall if the view's centre sat at a given cell
    (within ``VIEW_REACH`` cells: a needle is never aligned with the token grid as in the
    view, nor exactly at its size); the weighted matches are averaged over the view tokens
    that fall inside the frame (a thing in a corner, or partly out of the picture, shows only
    that part; at least ``VIEW_INSIDE`` of the view's weight must be inside), and a frame
    scores its best cell under its best view, a clip its best frame. Tokens the pruner
    dropped match nothing (0, as does a token pointing away). NaN for a clip that kept no
    tokens (or whose positions are not on ``grid``).
    """
    gh, gw = grid
    out = np.full(len(clips), np.nan)
    toks, pos, frame, frame_clip = [], [], [], []
    for i, c in enumerate(clips):
        if c.tokens is None or not c.n_tokens or c.token_positions is None:
            continue
        p = np.asarray(c.token_positions, np.int64)
        if p.min() < 0 or p.max() >= gh * gw:
            continue
        times = np.asarray(c.token_times) if c.token_times is not None else np.zeros(len(p))
        _, f = np.unique(times, return_inverse=True)
        f = f.ravel()
        order = np.argsort(f, kind="stable")   # each frame's tokens together
        toks.append(np.asarray(c.tokens, np.float32)[order])
        pos.append(p[order])
        frame.append(f[order] + len(frame_clip))
        frame_clip.extend([i] * (int(f.max()) + 1))
    if not toks:
        return out
    t_all, p_all, f_all = np.concatenate(toks), np.concatenate(pos), np.concatenate(frame)
    inv_norm = 1.0 / np.maximum(np.sqrt(np.einsum("ij,ij->i", t_all, t_all)), 1e-8)
    q = np.concatenate([v.tokens for v in views])                      # [M, D]
    wq = np.concatenate([v.weights for v in views]).astype(np.float32)
    dr = np.concatenate([v.rows for v in views])
    dc = np.concatenate([v.cols for v in views])
    owner = np.repeat(np.arange(len(views)), [len(v.tokens) for v in views])
    # the weight of each view inside the frame with its centre at each cell
    inside = np.zeros((len(views), gh, gw), np.float32)
    for j in range(len(q)):
        r0, r1 = max(0, -dr[j]), min(gh, gh - dr[j])
        c0, c1 = max(0, -dc[j]), min(gw, gw - dc[j])
        if r0 < r1 and c0 < c1:
            inside[owner[j], r0:r1, c0:c1] += wq[j]
    scale = np.where(inside >= VIEW_INSIDE, 1.0 / np.maximum(inside, 1e-6), 0.0).astype(np.float32)
    n_frames = len(frame_clip)
    frame_best = np.empty(n_frames, np.float32)
    step = max(1, VIEW_CHUNK // (gh * gw * len(q)))
    bounds = np.searchsorted(f_all, np.arange(0, n_frames + step, step))
    for k, f0 in enumerate(range(0, n_frames, step)):
        lo, hi = bounds[k], bounds[k + 1]
        nf = min(step, n_frames - f0)
        g = np.zeros((len(q), nf, gh, gw), np.float32)   # [view token, frame, row, col]
        sims = np.maximum((q @ t_all[lo:hi].T) * inv_norm[lo:hi], 0.0)
        g[:, f_all[lo:hi] - f0, p_all[lo:hi] // gw, p_all[lo:hi] % gw] = sims
        g = _shift_max(g, VIEW_REACH)
        acc = np.zeros((nf, len(views), gh, gw), np.float32)
        for j in range(len(q)):   # view token j lands at (centre + offset j)
            r0, r1 = max(0, -dr[j]), min(gh, gh - dr[j])
            c0, c1 = max(0, -dc[j]), min(gw, gw - dc[j])
            if r0 < r1 and c0 < c1:
                acc[:, owner[j], r0:r1, c0:c1] += wq[j] * g[j, :, r0 + dr[j]:r1 + dr[j], c0 + dc[j]:c1 + dc[j]]
        acc *= scale
        frame_best[f0:f0 + nf] = acc.reshape(nf, -1).max(axis=1)
    res = np.full(len(clips), -np.inf)
    np.maximum.at(res, np.asarray(frame_clip), frame_best)
    has = np.isfinite(res)
    out[has] = res[has]
    return out


@dataclass
class _Baseline:
    """Per source: time-window edges and a sample of each window's vectors (one space)."""

    edges: dict[int, np.ndarray] = field(default_factory=dict)
    samples: dict[int, np.ndarray] = field(default_factory=dict)   # [S, D]
    bucket: dict[int, np.ndarray] = field(default_factory=dict)    # [S] window of each sample
    n_buckets: dict[int, int] = field(default_factory=dict)


class Retriever:
    """Finds the clips that answer a question and packs them into a token budget.

    Text questions are matched against clip text vectors (``text_encoder``), fused with
    BM25 over descriptions (with what was said), labels and OCR text; questions about
    written text lean on the OCR words, questions about what was said on the words spoken
    in each clip. Image questions are pasted into plain frames at a few sizes and shades
    (in-context views) and each view is matched, in its layout, against every frame of
    kept visual tokens (``vision_encoder``); with ``late_interaction`` 1.0 (the default)
    only the kept tokens count (a clip that kept none scores -1), so that what the pruner
    drops changes what is found; below 1.0 the pooled clip vector (pooled from all tokens
    before pruning) is mixed in. With ``recency_correction`` each dense vector score is
    measured against the query's similarity to the clip's time window, so a stream whose
    features drift over time does not bury early moments.
    """

    def __init__(self, store: MemoryStore, config: RetrievalConfig | None = None, *,
                 text_encoder: TextEncoder | None = None,
                 vision_encoder: VisionEncoder | None = None):
        self.store = store
        self.config = config or RetrievalConfig()
        self.text_encoder = text_encoder
        self.vision_encoder = vision_encoder
        self._base_key: tuple[Any, ...] | None = None
        self._base: dict[str, _Baseline] = {}
        self.query_encoder = QueryEncoder(vision_encoder) if vision_encoder is not None else None

    # ------------------------------------------------------------------ indexes kept here
    def _baselines(self, space: str) -> _Baseline:
        key = (self.store.generation, len(self.store), int(self.store.ids()[-1])
               if len(self.store) else -1)
        if self._base_key != key:
            self._base, self._base_key = {}, key
        if space in self._base:
            return self._base[space]
        t = self.store.table()
        rng = np.random.default_rng(0)
        b = _Baseline()
        for code in np.unique(t["source"]):
            m = np.nonzero(t["source"] == code)[0]
            mids = (t["start"][m] + t["end"][m]) / 2
            nb = int(np.clip(len(m) // 64, 1, MAX_BUCKETS))
            edges = np.quantile(mids, np.linspace(0, 1, nb + 1)[1:-1]) if nb > 1 else np.zeros(0)
            bucket = np.searchsorted(edges, mids, side="right")
            pick = []
            for j in range(nb):
                members = np.nonzero(bucket == j)[0]
                if len(members) > BUCKET_SAMPLE:
                    members = rng.choice(members, BUCKET_SAMPLE, replace=False)
                pick.append(members)
            sel = np.concatenate(pick) if pick else np.zeros(0, np.int64)
            vecs = self.store.vectors(t["id"][m][sel], space=space)
            has = np.linalg.norm(vecs, axis=1) > 0
            b.edges[int(code)] = edges
            b.samples[int(code)] = vecs[has]
            b.bucket[int(code)] = bucket[sel][has]
            b.n_buckets[int(code)] = nb
        self._base[space] = b
        return b

    def _correct(self, q: np.ndarray, ids: list[int], scores: np.ndarray, space: str,
                 table: dict[str, np.ndarray], rowpos: dict[int, int]) -> np.ndarray:
        """Scores standardised within their time window (z-score against the query's
        similarity to a sample of the window's clips), mapped back to the overall scale."""
        b = self._baselines(space)
        stats: dict[int, tuple[np.ndarray, np.ndarray, float, float]] = {}
        for code, sv in b.samples.items():
            if len(sv) < 2:
                continue
            sims = sv @ q
            nb = b.n_buckets[code]
            # robust per-window location and scale (median, MAD): one strong match in a
            # window must not raise its own baseline
            mu = np.zeros(nb)
            sd = np.zeros(nb)
            for j in range(nb):
                w = sims[b.bucket[code] == j]
                if len(w) == 0:
                    w = sims
                mu[j] = float(np.median(w))
                sd[j] = 1.4826 * float(np.median(np.abs(w - mu[j])))
            ref_sd = 1.4826 * float(np.median(np.abs(sims - np.median(sims))))
            sd = np.maximum(sd, 0.25 * ref_sd + 1e-6)
            stats[code] = (mu, sd, float(np.median(sims)), ref_sd)
        out = scores.copy()
        for i, cid in enumerate(ids):
            r = rowpos[cid]
            code = int(table["source"][r])
            if code not in stats:
                continue
            mu, sd, ref_mu, ref_sd = stats[code]
            mid = (table["start"][r] + table["end"][r]) / 2
            j = int(np.searchsorted(b.edges[code], mid, side="right"))
            out[i] = (scores[i] - mu[j]) / sd[j] * ref_sd + ref_mu
        return out

    # ------------------------------------------------------------------ candidates
    def _dense_candidates(self, q: np.ndarray, space: str, source: str | None) -> set[int]:
        c = self.config.candidates
        found = {i for i, _ in self.store.search(q, c, space=space, source=source)}
        if self.config.recency_correction and len(self.store) > c:
            try:
                lo, hi = self.store.span(source)
            except StoreError:  # no clips of that source: nothing to add
                return found
            edges = np.linspace(lo, hi, SLICES + 1)
            per = max(1, c // SLICES)
            for a, b in zip(edges[:-1], edges[1:]):
                found |= {i for i, _ in self.store.search(q, per, space=space, source=source,
                                                          time_range=(float(a), float(b)))}
        return found

    # ------------------------------------------------------------------ scoring
    def _score_text(self, question: Question, source: str | None, table, rowpos) -> dict[int, float]:
        cfg = self.config
        text = question.text
        dense: dict[int, float] = {}
        spaces: list[tuple[str, np.ndarray]] = []
        if self.text_encoder is not None:
            spaces.append(("text", _unit(self.text_encoder.encode([text])[0])))
        if self.vision_encoder is not None and self.vision_encoder.supports_text:
            spaces.append(("visual", _unit(self.vision_encoder.encode_text([text])[0])))
        for space, q in spaces:
            cand = sorted(self._dense_candidates(q, space, source))
            if not cand:
                continue
            s = self.store.vectors(np.array(cand), space=space) @ q
            if cfg.recency_correction:
                s = self._correct(q, cand, s, space, table, rowpos)
            for cid, v in zip(cand, s.tolist()):
                dense[cid] = max(dense.get(cid, -1.0), v)
        index = self.store.lexical_index()
        qw = words(text)
        lex = index.all.score(qw)
        lam = cfg.lexical_weight
        speech = index.speech.score([w for w in qw if w not in SPEECH_WORDS]) \
            if question.parsed.speech else {}
        if speech:  # what was said: the transcripts' words lead
            lex = {d: 0.3 * lex.get(d, 0.0) + 0.7 * speech.get(d, 0.0) for d in set(lex) | set(speech)}
            lam = max(lam, SPEECH_LEXICAL)
        elif question.parsed.kind == "text" or question.parsed.quoted:
            ocr = index.ocr.score(qw)
            phrases = [p for p in quoted_phrases(text) if p]
            lex = {d: 0.3 * lex.get(d, 0.0) + 0.7 * ocr.get(d, 0.0) for d in set(lex) | set(ocr)}
            for d, said in index.ocr_text.items():
                if any(p in said for p in phrases):
                    lex[d] = min(1.0, lex.get(d, 0.0) + 0.5)
            lam = max(lam, OCR_LEXICAL)
        if source is not None:
            lex = {d: s for d, s in lex.items()
                   if table["source_names"][table["source"][rowpos[d]]] == source}
        if lex:  # keep the best lexical candidates only
            top = sorted(lex.items(), key=lambda kv: -kv[1])[: cfg.candidates]
            lex = dict(top)
        if not spaces:
            return lex
        out: dict[int, float] = {}
        for d in set(dense) | set(lex):
            if d not in dense:  # dense score of a lexical-only candidate
                dense[d] = self._dense_of(d, spaces, table, rowpos)
            out[d] = (1 - lam) * dense[d] + lam * lex.get(d, 0.0)
        return out

    def _dense_of(self, cid: int, spaces, table, rowpos) -> float:
        best = -1.0
        for space, q in spaces:
            v = self.store.vectors(np.array([cid]), space=space)[0]
            if not v.any():
                continue
            s = np.array([float(v @ q)])
            if self.config.recency_correction:
                s = self._correct(q, [cid], s, space, table, rowpos)
            best = max(best, float(s[0]))
        return best

    def _image_candidates(self, qp: np.ndarray, views: list[_View], source: str | None,
                          table) -> list[int]:
        """Every clip (of ``source``) while the store is small enough to score them all (or
        ``image_shortlist`` is 0), else the ``image_shortlist`` clip groups the store's token
        index finds closest to the views (memory/tokenindex.py: one clip of each group of
        near-identical clips; the best groups' other clips join after exact scoring, in
        :meth:`_expand_groups`), with the clips nearest to the
        pooled query and the views' means when pooled vectors count (``late_interaction``
        below 1, or no kept tokens)."""
        ids = np.asarray(table["id"])
        if source is not None:
            code = list(table["source_names"]).index(source)
            ids = ids[np.asarray(table["source"]) == code]
        if not self._shortlisted(len(ids)):
            return sorted(int(i) for i in ids)
        tokens = self.store.token_index()
        found = set(tokens.shortlist([(v.tokens, v.weights) for v in views],
                                     self.config.image_shortlist,
                                     ids if source is not None else None))
        if self.config.late_interaction < 1.0 or not len(tokens):
            # pooled vectors count too (or are all a store without kept tokens has)
            found |= self._dense_candidates(qp, "visual", source)
            for v in views:
                found |= self._dense_candidates(v.mean, "visual", source)
        return sorted(found)

    def _score_image(self, image: np.ndarray, source: str | None, table, rowpos, top_k: int
                     ) -> tuple[dict[int, float], np.ndarray]:
        if self.vision_encoder is None:
            raise QueryError("an image question needs the vision encoder the store was built "
                             "with; fix: create the Retriever with vision_encoder=")
        qv = self.query_encoder.views(image)
        qp, views, grid = qv.pooled, list(qv.views), qv.grid
        cand = self._image_candidates(qp, views, source, table)
        if not cand:
            return {}, qp
        pooled = self.store.vectors(np.array(cand)) @ qp
        if self.config.recency_correction:
            pooled = self._correct(qp, cand, pooled, "visual", table, rowpos)
        w = self.config.late_interaction
        tok = np.full(len(cand), np.nan)
        if w > 0 and views:
            for lo in range(0, len(cand), IMAGE_BATCH):   # a bounded number of clips in memory
                clips = self.store.get(cand[lo:lo + IMAGE_BATCH])
                tok[lo:lo + len(clips)] = _view_scores(clips, views, grid)
        has = ~np.isnan(tok)
        if not has.any():   # a store without kept tokens: the pooled vectors are all there is
            return dict(zip(cand, pooled.tolist())), qp
        # with all the weight on kept tokens a clip that kept none has no visual evidence (its
        # pooled vector was computed from tokens the pruner dropped). The token score is not
        # drift-corrected: matching a view in its layout within one frame does not drift
        # with the stream's overall look as pooled vectors do (measured on the NIAH grids).
        mixed = np.where(has, (1 - w) * pooled + w * np.nan_to_num(tok),
                         -1.0 if w >= 1.0 else pooled)
        scores = dict(zip(cand, mixed.tolist()))
        n = len(table["id"]) if source is None else \
            int(np.count_nonzero(table["source_names"][table["source"]] == source))
        if self.config.pictures:
            scores = self._picture_search(image, scores)
        if self._shortlisted(n):   # after the picture search, which reorders representatives
            self._expand_groups(scores, top_k, source, table)
        return scores, qp

    def _shortlisted(self, n: int) -> bool:
        """Image candidates among ``n`` clips come from the token index's shortlist."""
        k = self.config.image_shortlist
        return not (k == 0 or n <= max(self.config.image_exhaustive, k))

    def _expand_groups(self, scores: dict[int, float], top_k: int, source: str | None,
                       table) -> None:
        """The best ``top_k`` scored clips bring in the rest of their token-index groups
        (clips near-identical to them, scored alike), as scoring every clip would rank them."""
        tokens = self.store.token_index()
        ok = None
        if source is not None:
            code = list(table["source_names"]).index(source)
            ok = set(table["id"][table["source"] == code].tolist())
        for cid, s in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]:
            for m in tokens.group(cid):
                if m not in scores and (ok is None or m in ok):
                    scores[m] = s

    def _picture_search(self, image: np.ndarray, scores: dict[int, float]) -> dict[int, float]:
        """The ``pictures`` best-scored clips re-ranked with their frame pictures
        (streamvid/pictures.py): the query picture is looked for in them at any size and
        place, since a thing smaller than a token leaves little trace in the tokens. Each
        clip's token score and picture score are standardised over these clips (median and
        spread) and the clip is ranked by the larger: by whichever evidence makes it stand
        out. The clips keep the same set of scores, in the new order."""
        from streamvid.encoders.query import split_alpha
        from streamvid.pictures import PictureMatcher

        best = sorted(scores, key=lambda c: (-scores[c], c))[: self.config.pictures]
        clips = self.store.get(best)
        if len(best) < 2 or not any(c.frame_pictures for c in clips):
            return scores
        matcher = PictureMatcher(*split_alpha(image))
        tok = np.array([scores[c] for c in best])
        pic = np.array([max(matcher.scores(j for _, j in c.frame_pictures))
                        if c.frame_pictures else np.nan for c in clips])
        evidence = _standard(tok)
        has = ~np.isnan(pic)
        if has.sum() >= 2:
            evidence[has] = np.maximum(evidence[has], _standard(pic[has]))
        order = np.argsort(-evidence, kind="stable")
        out = dict(scores)
        for cid, s in zip(np.asarray(best)[order], np.sort(tok)[::-1]):
            out[int(cid)] = float(s)
        return out

    # ------------------------------------------------------------------ public
    def retrieve(self, question: Question, *, top_k: int | None = None,
                 source: str | None = None, budget: int | None = None) -> Context:
        """The clips that best answer ``question``, packed into ``budget`` visual tokens.

        Hits get tokens in proportion to their score (at least ``min_tokens`` each);
        ``anchors`` clips spread over the timeline get ``anchor_tokens`` each. Items are in
        chronological order; ``Context.tokens_used <= budget``.
        """
        cfg = self.config
        top_k = int(top_k if top_k is not None else cfg.top_k)
        budget = int(budget if budget is not None else cfg.token_budget)
        if top_k < 1 or budget < 1:
            raise QueryError(f"top_k and budget must be >= 1, got top_k={top_k}, budget={budget}")
        if source is not None and source not in self.store.sources():
            raise QueryError(f"source {source!r} is not in the store {self.store.path}; "
                             f"sources: {', '.join(self.store.sources()) or 'none'}")
        if len(self.store) == 0:
            return Context(items=(), budget=budget, question=question, tokens=self.store.spec.tokens)
        table = self.store.table()
        rowpos = {int(c): i for i, c in enumerate(table["id"])}
        parts: list[dict[int, float]] = []
        q_visual: np.ndarray | None = None
        if question.image is not None:
            s, q_visual = self._score_image(question.image, source, table, rowpos, top_k)
            parts.append(s)
        if question.text.strip():
            parts.append(self._score_text(question, source, table, rowpos))
            if q_visual is None and self.vision_encoder is not None and \
                    self.vision_encoder.supports_text:
                q_visual = _unit(self.vision_encoder.encode_text([question.text])[0])
        scores: dict[int, float] = {}
        for p in parts:
            for d, s in p.items():
                scores[d] = scores.get(d, 0.0) + s / len(parts)
        if question.text.strip():
            if question.parsed.kind == "summary":
                top_k = max(top_k, SUMMARY_CLIPS)
            scores = self._by_question(question, scores, source, table, top_k)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        hits = self.store.get([d for d, _ in ranked])
        hit_scores = [s for _, s in ranked]
        anchors = self._anchors(hits, source, table, budget)
        anchor_cost = sum(min(cfg.anchor_tokens, max(a.n_tokens, 1)) for a in anchors)
        caps = [max(c.n_tokens, 1) for c in hits]
        alloc = allocate(hit_scores, caps, budget - anchor_cost, cfg.min_tokens)
        items: list[ContextItem] = []
        for rank, (clip, score, n) in enumerate(zip(hits, hit_scores, alloc)):
            if n <= 0:
                continue
            items.append(self._item(clip, score, n, q_visual, rank=rank, anchor=False))
        for a in anchors:
            n = min(cfg.anchor_tokens, max(a.n_tokens, 1))
            items.append(self._item(a, float(scores.get(a.id, 0.0)), n, q_visual, rank=-1,
                                    anchor=True))
        items.sort(key=lambda it: (it.clip.start, it.clip.end, it.is_anchor))
        return Context(items=tuple(items), budget=budget, question=question,
                       tokens=self.store.spec.tokens)

    def _by_question(self, question: Question, scores: dict[int, float], source: str | None,
                     table, top_k: int) -> dict[int, float]:
        """Scores adjusted to what the question asks (``question.parsed``).

        Objects named: a clip's detections of them count ``OBJECT_WEIGHT`` (a match of every
        named group in one frame, at the detector's score; for *how many*, the count); asked
        for the *first* time, the earliest matching clip goes first. A time named (``at
        00:00:30``): the clips covering it go first. A summary: clips spread over the video
        (or around the time named) replace the matches.
        """
        pq = question.parsed
        mask = np.ones(len(table["id"]), bool)
        if source is not None:
            mask &= table["source"] == list(table["source_names"]).index(source)
        if pq.kind == "summary" and pq.at is None:
            ids = table["id"][mask]
            order = np.argsort(table["start"][mask], kind="stable")
            pick = ids[order][np.unique(np.linspace(0, len(ids) - 1, min(top_k, len(ids))).round().astype(int))]
            return {int(c): 1.0 - i / (10 * len(pick)) for i, c in enumerate(pick)}
        out = dict(scores)
        if pq.groups and pq.kind != "summary":
            obj: dict[int, float] = {}
            first: tuple[float, int] | None = None
            allowed = set(table["id"][mask].tolist())
            for cid, frames in self.store.lexical_index().objects().items():
                if cid not in allowed:
                    continue
                best = 0.0
                for fo in frames:
                    m = frame_match(fo, pq.groups)
                    if not m:
                        continue
                    val = min(1.0, len(m) / 10) if pq.kind == "count" else max(d.score for d in m)
                    best = max(best, val)
                    if first is None or fo.time < first[0]:
                        first = (fo.time, cid)
                if best > 0:
                    obj[cid] = best
            for cid in set(out) | set(obj):
                out[cid] = (1 - OBJECT_WEIGHT) * out.get(cid, 0.0) + OBJECT_WEIGHT * obj.get(cid, 0.0)
            if pq.first and first is not None:
                out[first[1]] = max(out.values()) + 1.0
        if pq.at is not None:
            lo, hi = (pq.at - SUMMARY_AROUND, pq.at + SUMMARY_AROUND) if pq.kind == "summary" \
                else (pq.at, pq.at)
            covering = mask & (table["start"] <= hi + 1e-6) & (table["end"] > lo)
            top = max(out.values(), default=0.0)
            for r in np.nonzero(covering)[0]:
                cid = int(table["id"][r])
                mid = (table["start"][r] + table["end"][r]) / 2
                out[cid] = top + 1.0 + out.get(cid, 0.0) / 100 - abs(mid - pq.at) / 1e4
        return out

    def _anchors(self, hits: list[ClipMemory], source: str | None, table, budget: int
                 ) -> list[ClipMemory]:
        cfg = self.config
        n = cfg.anchors if cfg.anchor_tokens > 0 else 0
        n = min(n, budget // 4 // max(cfg.anchor_tokens, 1))  # anchors take at most a quarter
        if n <= 0:
            return []
        sid = source or (hits[0].source_id if hits else None)
        mask = np.ones(len(table["id"]), bool)
        if sid is not None:
            code = list(table["source_names"]).index(sid)
            mask &= table["source"] == code
        ids = table["id"][mask]
        mids = ((table["start"] + table["end"]) / 2)[mask]
        taken = {c.id for c in hits}
        if len(ids) == 0:
            return []
        lo, hi = float(table["start"][mask].min()), float(table["end"][mask].max())
        chosen: list[int] = []
        for j in range(n):
            t = lo + (j + 0.5) * (hi - lo) / n
            order = np.argsort(np.abs(mids - t), kind="stable")
            for o in order:
                cid = int(ids[o])
                if cid not in taken:
                    taken.add(cid)
                    chosen.append(cid)
                    break
        return self.store.get(chosen)

    def _item(self, clip: ClipMemory, score: float, n: int, q_visual: np.ndarray | None, *,
              rank: int, anchor: bool) -> ContextItem:
        if clip.tokens is None or clip.n_tokens == 0:
            return ContextItem(clip=clip, score=float(score), tokens=clip.vector[None].copy(),
                               token_times=np.array([clip.keyframe], np.float32),
                               is_anchor=anchor, rank=rank)
        toks = np.asarray(clip.tokens, np.float32)
        rel = _unit(toks) @ q_visual if q_visual is not None else None
        times = np.asarray(clip.token_times, np.float32) if clip.token_times is not None \
            else np.full(clip.n_tokens, clip.keyframe, np.float32)
        pos = np.asarray(clip.token_positions) if clip.token_positions is not None else None
        idx = pick_tokens(toks, n, rel, times, pos)
        return ContextItem(clip=clip, score=float(score), tokens=toks[idx],
                           token_times=times[idx], is_anchor=anchor, rank=rank,
                           token_positions=None if pos is None else pos[idx].astype(np.int32))

