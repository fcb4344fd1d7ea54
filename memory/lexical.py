"""Lexical matching of questions against clip words (description, labels, OCR text, speech):
BM25, and the store's lexical index that holds them.

A store saves its :class:`LexicalIndex` with each commit as ``lexidx-<gen>.npz`` (named,
sized and checksummed in the manifest like its other files, no pickles): brought up to date
at each commit (new clips added, removed and consolidated ones dropped), and rebuilt from the
clips when a store has none or one of another :data:`VERSION`, so that a new process asking
a text question reads one file instead of every clip's metadata.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from streamvid.errors import StoreError
from streamvid.io import atomic_write
from streamvid.types import ClipMemory, FrameObjects

from .segments import objects_from_json, objects_to_json

if TYPE_CHECKING:
    from .tokenindex import ClipSource

log = logging.getLogger(__name__)

VERSION = 1    # of the words an index keeps (WORD, STOPWORDS, what each index holds): a file
               # of another version is rebuilt
BATCH = 512    # clips read at a time while building

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
        self._terms: dict[int, tuple[str, ...]] | None = {}   # None: built on first removal
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
        if self._terms is not None:
            self._terms[doc] = tuple(tf)
        for t, c in tf.items():
            self.postings.setdefault(t, {})[doc] = c

    def remove(self, doc: int) -> None:
        n = self.lengths.pop(doc, None)
        if n is None:
            return
        self._total -= n
        if self._terms is None:
            terms: dict[int, list[str]] = {}
            for t, plist in self.postings.items():
                for d in plist:
                    terms.setdefault(d, []).append(t)
            self._terms = {d: tuple(ts) for d, ts in terms.items()}
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

    # ------------------------------------------------------------------ files
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The index as arrays: documents, lengths, and postings by term (vocabulary
        newline-joined; words never hold a newline)."""
        docs = np.fromiter(self.lengths, np.int64, len(self.lengths))
        row = {d: i for i, d in enumerate(docs.tolist())}
        vocab = list(self.postings)
        sizes = [len(self.postings[t]) for t in vocab]
        post = [(row[d], tf) for t in vocab for d, tf in self.postings[t].items()]
        pairs = np.array(post, np.int64).reshape(-1, 2)
        return {"docs": docs, "lengths": np.fromiter(self.lengths.values(), np.int64, len(docs)),
                "vocab": _join(vocab), "term_off": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                "post_doc": pairs[:, 0].astype(np.int32), "post_tf": pairs[:, 1].astype(np.int32)}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "BM25":
        """The index :meth:`to_arrays` wrote."""
        bm = cls()
        docs = a["docs"].tolist()
        bm.lengths = dict(zip(docs, a["lengths"].tolist()))
        bm._total = int(a["lengths"].sum())
        vocab = _split(a["vocab"])
        off = a["term_off"].tolist()
        pd = a["docs"][a["post_doc"]].tolist()
        tf = a["post_tf"].tolist()
        bm.postings = {t: dict(zip(pd[off[i]:off[i + 1]], tf[off[i]:off[i + 1]]))
                       for i, t in enumerate(vocab)}
        bm._terms = None   # built when a document is first removed
        return bm


def _join(strings: list[str]) -> np.ndarray:
    """Strings without newlines as one UTF-8 byte array (:func:`_split` reads it back)."""
    return np.frombuffer("\n".join(strings).encode("utf-8"), np.uint8)


def _split(blob: np.ndarray, n: int | None = None) -> list[str]:
    if not len(blob):
        return [""] * n if n else []
    return blob.tobytes().decode("utf-8").split("\n")


def file_name(generation: int) -> str:
    return f"lexidx-{generation:08d}.npz"


def _indexed(c: ClipMemory) -> tuple[list[str], list[str], list[str] | None]:
    """A clip's words for the three indexes: all (description, labels, OCR), OCR, and what
    was said during the clip itself (None: no speech; its segments may run over its ends)."""
    ocr = words(c.ocr_text)
    every = words(c.description) + words(" ".join(lbl for lbl, _ in c.labels)) + ocr
    said = words(" ".join(s.said_between(c.start, c.end) for s in c.speech)) if c.speech else None
    return every, ocr, said


class LexicalIndex:
    """The words of a store's clips: BM25 over all of a clip's words (``all``), its OCR
    words (``ocr``) and its words said (``speech``), its OCR text for phrase matching
    (``ocr_text``) and its detections (:meth:`objects`), by clip id."""

    def __init__(self) -> None:
        self.all, self.ocr, self.speech = BM25(), BM25(), BM25()
        self.ocr_text: dict[int, str] = {}
        self._objects_json: dict[int, str] = {}              # clip id -> detections as JSON
        self._objects: dict[int, tuple[FrameObjects, ...]] = {}  # ... parsed (on first use)
        self.dirty = False   # changed since it was read or written

    def __len__(self) -> int:
        return len(self.all)

    def ids(self) -> np.ndarray:
        """Ids of the clips it holds, ascending."""
        return np.sort(np.fromiter(self.all.lengths, np.int64, len(self.all)))

    def add(self, c: ClipMemory) -> None:
        every, ocr, said = _indexed(c)
        self.all.add(c.id, every)
        self.ocr.add(c.id, ocr)
        if said is not None:
            self.speech.add(c.id, said)
        self.ocr_text[c.id] = " ".join(plain_words(c.ocr_text))
        if c.objects:
            self._objects_json[c.id] = json.dumps(objects_to_json(c.objects))
            self._objects[c.id] = tuple(c.objects)
        self.dirty = True

    def remove(self, cid: int) -> None:
        for bm in (self.all, self.ocr, self.speech):
            bm.remove(cid)
        for d in (self.ocr_text, self._objects_json, self._objects):
            d.pop(cid, None)
        self.dirty = True

    def objects(self) -> dict[int, tuple[FrameObjects, ...]]:
        """Clip id -> the detections of its described frames (clips with any)."""
        if len(self._objects) < len(self._objects_json):
            self._objects = {cid: self._objects.get(cid) or objects_from_json(json.loads(raw))
                             for cid, raw in self._objects_json.items()}
        return self._objects

    def sync(self, store: "ClipSource") -> bool:
        """Bring the index to ``store``'s clips: drop the gone, add the new; True if it changed."""
        live = store.ids()
        have = self.ids()
        gone = np.setdiff1d(have, live, assume_unique=True)
        new = np.setdiff1d(live, have, assume_unique=True)
        for cid in gone.tolist():
            self.remove(cid)
        for c in _clips(store, new):
            self.add(c)
        return bool(len(gone) or len(new))

    # ------------------------------------------------------------------ files
    def write(self, path: Path) -> None:
        arrays = {"version": np.array([VERSION], np.int64)}
        for name in ("all", "ocr", "speech"):
            arrays.update({f"{name}.{k}": v for k, v in getattr(self, name).to_arrays().items()})
        arrays["ocr_ids"] = np.fromiter(self.ocr_text, np.int64, len(self.ocr_text))
        arrays["ocr_text"] = _join(list(self.ocr_text.values()))
        arrays["objects_ids"] = np.fromiter(self._objects_json, np.int64, len(self._objects_json))
        arrays["objects"] = _join(list(self._objects_json.values()))
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        self.dirty = False

    @classmethod
    def read(cls, path: Path) -> "LexicalIndex | None":
        """The index saved at ``path``; None when it is of another :data:`VERSION` (to be
        rebuilt)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
            if int(a["version"][0]) != VERSION:
                log.info("the lexical index %s is of version %d, this streamvid keeps version "
                         "%d: rebuilding it", path, int(a["version"][0]), VERSION)
                return None
            out = cls()
            for name in ("all", "ocr", "speech"):
                setattr(out, name, BM25.from_arrays({k.split(".", 1)[1]: v for k, v in a.items()
                                                     if k.startswith(name + ".")}))
            ocr_ids = a["ocr_ids"].tolist()
            out.ocr_text = dict(zip(ocr_ids, _split(a["ocr_text"], len(ocr_ids))))
            obj_ids = a["objects_ids"].tolist()
            out._objects_json = dict(zip(obj_ids, _split(a["objects"], len(obj_ids))))
        except (OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as err:
            raise StoreError(f"the store's lexical index {path} cannot be read ({err}); fix: the "
                             "store is damaged, re-index into a new --store") from err
        if not (len(out.ocr_text) == len(out.all) and set(out.ocr_text) == set(out.all.lengths)):
            raise StoreError(f"the store's lexical index {path} is inconsistent; fix: the store "
                             "is damaged, re-index into a new --store")
        return out


def _clips(store: "ClipSource", ids: np.ndarray) -> Iterator[ClipMemory]:
    for lo in range(0, len(ids), BATCH):
        yield from store.get(ids[lo:lo + BATCH])
