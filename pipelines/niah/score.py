"""Scoring NIAH answers: retrieval hits, answer accuracy, and the per-cell / per-run summary.

- **hit@k**: the needle's interval overlaps the interval of one of the first ``k`` evidence
  moments (best first).
- **recall@k** (multi-hop): the fraction of the needles each overlapped by one of the first
  ``k`` evidence moments.
- **accuracy**: "when" / image questions: the first time in the answer (``HH:MM:SS`` or
  ``MM:SS``) lies within the needle's interval widened by a tolerance; text questions: the
  expected value appears in the answer (case, spaces and punctuation ignored); multiple
  choice: the answer starts with the right option letter.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

_TIME = re.compile(r"\b(?:(\d{1,2}):)?(\d{1,2}):(\d{2})(?:\.\d+)?\b")
_LETTER = re.compile(r"^\s*\(?([A-Da-d])\s*[).:\]]|^\s*([A-Da-d])\s*$")

Interval = tuple[float, float]


def overlaps(a: Interval, b: Interval) -> bool:
    """True when two ``(start, end)`` intervals share time (touching ends do not count)."""
    return a[0] < b[1] and b[0] < a[1]


def hit_at(evidence: Sequence[Interval], needle: Interval, k: int) -> bool:
    """Whether one of the first ``k`` evidence intervals overlaps the needle's interval."""
    return any(overlaps(e, needle) for e in evidence[:k])


def recall_at(evidence: Sequence[Interval], needles: Sequence[Interval], k: int) -> float:
    """The fraction of needles overlapped by one of the first ``k`` evidence intervals."""
    if not needles:
        return 0.0
    return sum(hit_at(evidence, n, k) for n in needles) / len(needles)


def parse_time(text: str) -> float | None:
    """The first ``HH:MM:SS`` / ``MM:SS`` time in a text, in seconds, or None."""
    m = _TIME.search(text)
    if not m:
        return None
    h, mi, s = m.group(1), m.group(2), m.group(3)
    return int(h or 0) * 3600 + int(mi) * 60 + int(s)


def time_correct(answer: str, needle: Interval, tolerance: float) -> bool:
    """Whether the answer's first time is within ``tolerance`` seconds of the needle's interval."""
    t = parse_time(answer)
    return t is not None and needle[0] - tolerance <= t <= needle[1] + tolerance


def normalise_text(text: str) -> str:
    """Lower case, letters and digits only (so "Tulip-42." matches "tulip 42")."""
    return re.sub(r"[^0-9a-z]+", "", text.lower())


def text_correct(answer: str, expected: str) -> bool:
    want = normalise_text(expected)
    return bool(want) and want in normalise_text(answer)


def choice_of(answer: str) -> str | None:
    """The option letter an answer starts with (``B) ...``, ``(b)``, ``B.``, ``B``), or None."""
    m = _LETTER.match(answer)
    if not m:
        return None
    return (m.group(1) or m.group(2)).upper()


def choice_correct(answer: str, expected: str) -> bool:
    return choice_of(answer) == expected.upper()


# --------------------------------------------------------------------------- summary

METRICS = ("hit1", "hit3", "correct", "recall3")


def _mean(xs: Iterable[float]) -> float | None:
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


def summarise(records: Sequence[Mapping[str, Any]], *, lengths: Sequence[float],
              depths: Sequence[float], name: str = "") -> dict[str, Any]:
    """Aggregate per-question records into overall, per-type, per-cell and per-category scores.

    ``cells[qtype][metric]`` is a ``[len(depths)][len(lengths)]`` matrix (None where empty).
    """
    by_type: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        by_type[r["qtype"]].append(r)
    overall: dict[str, Any] = {}
    cells: dict[str, Any] = {}
    for qt, rs in sorted(by_type.items()):
        overall[qt] = {"n": len(rs), **{m: _r(_mean(r.get(m) for r in rs)) for m in METRICS},
                       "tokens": _r(_mean(r.get("tokens") for r in rs), 1),
                       "query_s": _r(_mean(r.get("query_s") for r in rs))}
        overall[qt] = {k: v for k, v in overall[qt].items() if v is not None}
        mats: dict[str, list[list[float | None]]] = {}
        for m in ("hit1", "hit3", "correct"):
            mat = []
            for d in depths:
                row = []
                for L in lengths:
                    vals = [r.get(m) for r in rs if r.get("depth") is not None
                            and abs(r["depth"] - d) < 1e-9 and abs(r["length"] - L) < 1e-6]
                    row.append(_r(_mean(vals)))
                mat.append(row)
            if any(v is not None for row in mat for v in row):
                mats[m] = mat
        if mats:
            cells[qt] = mats
    per_length: dict[str, Any] = {}
    for L in lengths:
        rs = [r for r in records if abs(r["length"] - L) < 1e-6]
        idx = {}
        for r in rs:
            idx[r["haystack"]] = r.get("index_s")
        per_length[f"{L:g}"] = {
            "questions": len(rs),
            "index_s": _r(sum(v for v in idx.values() if v is not None), 2),
            "hit1": _r(_mean(r.get("hit1") for r in rs if r["qtype"] in ("image", "when"))),
            "image_hit1": _r(_mean(r.get("hit1") for r in rs if r["qtype"] == "image")),
            "correct": _r(_mean(r.get("correct") for r in rs)),
        }
    categories: dict[str, Any] = {}
    for r in by_type.get("when", []):
        c = r.get("category") or "?"
        categories.setdefault(c, []).append(r.get("hit3"))
    per_category = {c: {"n": len(v), "hit3": _r(_mean(v))} for c, v in sorted(categories.items())}
    answered = [r for r in records if r.get("correct") is not None]
    tokens = _mean(r.get("tokens") for r in records)
    return {
        "name": name,
        "questions": len(records),
        "accuracy": _r(_mean(r["correct"] for r in answered)),
        "tokens": _r(tokens, 1),
        "lengths": [float(x) for x in lengths],
        "depths": [float(x) for x in depths],
        "overall": overall,
        "cells": cells,
        "per_length": per_length,
        "when_hit3_by_category": per_category,
    }


def by_variant(records: Sequence[Mapping[str, Any]], general: Any) -> dict[str, Any]:
    """Generalisation grid: image hit@1 and hit@3 per level of each factor (footage, height,
    position, picture), in the config's order, with the ids of the misses (hit@1 0)."""
    levels = {"height": [f"{h:g}" for h in general.heights], "position": list(general.positions),
              "picture": list(general.pictures), "footage": [name for name, _ in general.footage]}
    out: dict[str, Any] = {}
    images = [r for r in records if r["qtype"] == "image" and r.get("footage")]
    for factor, names in levels.items():
        rows = {}
        for level in names:
            rs = [r for r in images if r.get(factor) == level]
            if rs:
                rows[level] = {"n": len(rs), "hit1": _r(_mean(r.get("hit1") for r in rs)),
                               "hit3": _r(_mean(r.get("hit3") for r in rs)),
                               "misses": sorted(r["id"] for r in rs if not r.get("hit1"))}
        out[factor] = rows
    return out
