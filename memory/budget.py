"""Splitting a fixed token budget between retrieved clips, and choosing their tokens."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def allocate(scores: Sequence[float], capacities: Sequence[int], budget: int,
             floor: int) -> list[int]:
    """Tokens per hit: at least ``floor`` (capped by capacity), the rest in proportion to
    relevance, never more than a hit's capacity nor more than ``budget`` in total.

    ``scores`` are relevance scores (best hits highest); hits that do not fit the floor are
    given 0 tokens, lowest scores first.
    """
    n = len(scores)
    caps = [max(0, int(c)) for c in capacities]
    alloc = [0] * n
    if n == 0 or budget <= 0:
        return alloc
    order = sorted(range(n), key=lambda i: -scores[i])
    left = int(budget)
    for i in order:  # the floor, best first, while it fits
        f = min(floor, caps[i])
        if f > left:
            f = left if i == order[0] else 0
        alloc[i] = f
        left -= f
    s = np.asarray(scores, np.float64)
    w = np.maximum(s - min(0.0, float(s.min())), 0.0) + 1e-3
    for _ in range(n + 1):  # water-filling: uncapped hits share what is left by weight
        open_ = [i for i in range(n) if alloc[i] < caps[i] and (alloc[i] > 0 or floor == 0)]
        if left <= 0 or not open_:
            break
        tot = float(sum(w[i] for i in open_))
        share = {i: left * w[i] / tot for i in open_}
        given = 0
        for i in open_:
            g = min(int(share[i]), caps[i] - alloc[i])
            alloc[i] += g
            given += g
        left -= given
        if given == 0:  # hand out the remainder one by one, by weight
            for i in sorted(open_, key=lambda i: -w[i]):
                if left <= 0:
                    break
                if alloc[i] < caps[i]:
                    alloc[i] += 1
                    left -= 1
    return alloc


def pick_tokens(tokens: np.ndarray, n: int, relevance: np.ndarray | None = None,
                times: np.ndarray | None = None,
                positions: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``n`` tokens to keep, in time then grid order.

    With ``relevance`` (one score per token, e.g. cosine with the query) the most relevant
    are kept; otherwise the most distinctive (farthest from the clip's mean token).
    """
    k = tokens.shape[0]
    if n >= k:
        idx = np.arange(k)
    else:
        if relevance is None:
            x = tokens.astype(np.float32)
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
            mean = x.mean(0)
            relevance = -(x @ mean)
        idx = np.argpartition(-relevance, n - 1)[:n]
    if times is not None:
        pos = positions if positions is not None else np.zeros(k)
        idx = idx[np.lexsort((pos[idx], times[idx]))]
    else:
        idx = np.sort(idx)
    return idx
