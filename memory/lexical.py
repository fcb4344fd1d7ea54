"""Lexical matching of questions against clip words (description, labels, OCR text, speech):
BM25."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable

WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset("""
a an and are as at be but by can could did do does doing for from had has have how i if in
into is it its me my of on or our so than that the their them then there these they this
those to was we were what when where which while who whom why will with would you your
show shown showed seen see saw appear appears appeared video clip frame say says said
written write read reads""".split())
QUOTED = re.compile(r"[\"“”'‘’]([^\"“”'‘’]{2,})[\"“”'‘’]")


def words(text: str) -> list[str]:
    """Lower-case word tokens without stopwords."""
    return [w for w in WORD.findall(text.lower()) if w not in STOPWORDS]


def plain_words(text: str) -> list[str]:
    """Lower-case word tokens, stopwords kept (for phrase matching)."""
    return WORD.findall(text.lower())


def quoted_phrases(question: str) -> list[str]:
    return [" ".join(plain_words(m)) for m in QUOTED.findall(question)]


class BM25:
    """An incremental BM25 index over documents addressed by int ids.

    :meth:`score` returns scores normalised by the score of an ideal document holding every
    query word once, so 1.0 means every query word matched and partial matches score less.
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self.postings: dict[str, dict[int, int]] = {}
        self.lengths: dict[int, int] = {}
        self._terms: dict[int, tuple[str, ...]] = {}
        self._total = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __contains__(self, doc: int) -> bool:
        return doc in self.lengths

    def add(self, doc: int, tokens: Iterable[str]) -> None:
        if doc in self.lengths:
            self.remove(doc)
        tf = Counter(tokens)
        self.lengths[doc] = sum(tf.values())
        self._total += self.lengths[doc]
        self._terms[doc] = tuple(tf)
        for t, c in tf.items():
            self.postings.setdefault(t, {})[doc] = c

    def remove(self, doc: int) -> None:
        n = self.lengths.pop(doc, None)
        if n is None:
            return
        self._total -= n
        for t in self._terms.pop(doc, ()):
            plist = self.postings.get(t)
            if plist is not None:
                plist.pop(doc, None)
                if not plist:
                    del self.postings[t]

    def idf(self, term: str) -> float:
        n = len(self.lengths)
        df = len(self.postings.get(term, ()))
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def score(self, query_tokens: Iterable[str]) -> dict[int, float]:
        """Normalised scores (0..1) of every document that shares a word with the query."""
        n = len(self.lengths)
        if n == 0:
            return {}
        avg = self._total / n if self._total else 1.0
        terms = [t for t in dict.fromkeys(query_tokens) if t in self.postings]
        if not terms:
            return {}
        out: dict[int, float] = {}
        ideal = 0.0
        for t in terms:
            idf = self.idf(t)
            ideal += idf
            for doc, tf in self.postings[t].items():
                dl = self.lengths[doc]
                s = idf * tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * dl / avg))
                out[doc] = out.get(doc, 0.0) + s
        ideal = max(ideal, 1e-9)
        return {d: min(1.0, s / ideal) for d, s in out.items()}
