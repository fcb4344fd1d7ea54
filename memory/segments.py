"""A store directory's files: segments, the manifest that names them, and their checks.

Layout of a store directory::

    manifest.json            format, version, spec (model ids, dims, config), generation,
                             segments, deleted ids file, IVF centroids, counts
    seg-<gen>/               one immutable segment per commit that added clips:
        ids.npy vectors.npy text_vectors.npy has_text.npy start.npy end.npy source.npy
        tok_off.npy tokens.npy token_times.npy token_positions.npy meta.jsonl
        jpeg.npy jpeg_off.npy  keyframe JPEGs, concatenated, and each row's byte range
                             (absent in stores written before keyframes were kept)
        pic.npy pic_off.npy pic_time.npy pic_row.npy
                             frame pictures (memory.frame_pictures): JPEGs concatenated,
                             each one's byte range and time, each row's range of them
                             (absent in stores written without them)
        assign-<q>.npy       IVF list of each row for centroids generation q
    deleted-<gen>.npy        ids removed since their segment was written
    centroids-<q>.npy        IVF centroids (index "ivf")
    hnsw-<gen>.faiss         the HNSW graph (index "hnsw")
    tokidx-<gen>.npz         the token index of image questions (memory/tokenindex.py;
                             stores written before clip groups have tokidx-<gen>.faiss)
    lexidx-<gen>.npz         the lexical index of text questions (memory/lexical.py)

A commit writes new files under new names, then atomically replaces ``manifest.json``
which names them; files that neither the current nor the previous manifest names are
removed afterwards. A process killed at any point leaves the previous manifest and every
file it names intact. Nothing is pickled.

A store's files are not trusted: every name the manifest gives must be a plain file name
of the forms above (no paths, no links), and every data file's size and checksum are
recorded in the manifest and verified when it is opened — the whole file when small,
evenly spaced samples of it when large — so a damaged store is an error, never an answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from streamvid.config import MemoryConfig
from streamvid.errors import StoreError
from streamvid.io import atomic_write_json, fsync_dir, remove_path
from streamvid.types import ClipMemory, Detection, FrameObjects, SpeechSegment, TokenSpec

from .index import VecIndex

FORMAT = "streamvid-memory"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_SEG_FILES = ("ids", "vectors", "text_vectors", "has_text", "start", "end", "source", "level",
              "tok_off", "tokens", "token_times", "token_positions")
# the only names a manifest may give (plain names inside the store, never paths)
_NAMES = {"segment": re.compile(r"seg-\d{8,}(-\d+)?"), "deleted": re.compile(r"deleted-\d{8,}\.npy"),
          "centroids": re.compile(r"centroids-\d+\.npy"), "hnsw": re.compile(r"hnsw-\d{8,}\.faiss"),
          "tokindex": re.compile(r"tokidx-\d{8,}\.(faiss|npz)"),   # memory/tokenindex.py
          "lexindex": re.compile(r"lexidx-\d{8,}\.npz"),     # memory/lexical.py
          "assign": re.compile(r"assign-\d+\.npy")}
ATTACHABLE = frozenset({"config.yaml"})  # files a pipeline keeps beside the store (attach())
_JPEG_FILES = ("jpeg", "jpeg_off")  # optional: stores written before them have none
_PIC_FILES = ("pic", "pic_off", "pic_time", "pic_row")  # optional: frame pictures
SEG_NAMES = frozenset([f"{k}.npy" for k in _SEG_FILES + _JPEG_FILES + _PIC_FILES] + ["meta.jsonl"])
# read back memory-mapped, so that a writer or reader holds no clip's tokens or keyframe in
# memory (only small per-row arrays: ids, times, offsets)
_MAPPED = frozenset({"vectors", "text_vectors", "tokens", "token_times", "token_positions", "jpeg",
                     "pic"})
# checked and read when first used (a segment opens with its small per-row arrays only)
_LAZY = _MAPPED | {"jpeg_off"} | set(_PIC_FILES)
_HASH_WHOLE = 1 << 20      # files up to this size are hashed whole
_HASH_SAMPLES = 16         # larger ones: this many evenly spaced blocks ...
_HASH_BLOCK = 64 << 10     # ... of this size
DAMAGED = "fix: the store is damaged, re-index into a new --store"


@dataclass(frozen=True)
class StoreSpec:
    """What a store was built with; a store refuses to open with a different one."""

    encoder_id: str
    vector_dim: int
    text_id: str
    text_dim: int
    config: dict = field(default_factory=dict)
    tokens: TokenSpec | None = None  # what the stored visual tokens are (model, layer, space, grid)

    def to_json(self) -> dict[str, Any]:
        d = {"encoder_id": self.encoder_id, "vector_dim": int(self.vector_dim),
             "text_id": self.text_id, "text_dim": int(self.text_dim),
             "config": self.config}
        if self.tokens is not None:
            d["tokens"] = self.tokens.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "StoreSpec":
        tokens = TokenSpec.from_json(d["tokens"]) if d.get("tokens") else None
        return cls(str(d["encoder_id"]), int(d["vector_dim"]), str(d["text_id"]),
                   int(d["text_dim"]), dict(d.get("config") or {}), tokens)


# --------------------------------------------------------------------------- segments


class Segment:
    """One immutable commit's clips.

    Opening a segment checks that every file it names is a regular file of its recorded
    size, and reads (checksummed) its small per-row arrays: ids, times, sources, levels,
    token offsets. Its bulky files (vectors, tokens, keyframes, metadata) are checksummed
    and memory-mapped when first used, so that opening a store of many segments costs what
    its rows take, not what its clips carry; a damaged file is an error all the same.
    """

    def __init__(self, root: Path, entry: dict[str, Any], spec: StoreSpec):
        self.name = entry["name"]
        self.dir = root / self.name
        self.rows = int(entry["rows"])
        self.sources: list[str] = list(entry["sources"])
        self.assign_file: str | None = entry.get("assign")
        self._spec = spec
        self._sizes = entry.get("sizes") or {}
        self._hashes = entry.get("hashes") or {}
        try:
            st = os.lstat(self.dir)
        except FileNotFoundError:
            raise
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"store segment {self.dir} is not a directory (a link or a file); "
                             f"{DAMAGED}")
        self._has_jpeg = all(f"{k}.npy" in self._sizes for k in _JPEG_FILES)
        self._has_pic = all(f"{k}.npy" in self._sizes for k in _PIC_FILES)
        if not self._has_pic and any(f"{k}.npy" in self._sizes for k in _PIC_FILES):
            raise StoreError(f"store segment {self.dir} has some of its frame-picture files but "
                             f"not all; {DAMAGED}")
        for name in self._files():   # present, regular, of the recorded size
            verify_file(self.dir / name, self._sizes.get(name), None)
        self._arrays: dict[str, np.ndarray] = {}
        small = {key: self._load(key) for key in _SEG_FILES if key not in _LAZY}
        self.ids = np.asarray(small["ids"], dtype=np.int64)
        self.has_text = np.asarray(small["has_text"], dtype=bool)
        self.start = np.asarray(small["start"], dtype=np.float64)
        self.end = np.asarray(small["end"], dtype=np.float64)
        self.source = np.asarray(small["source"], dtype=np.int32)
        self.level = np.asarray(small["level"], dtype=np.int16)
        self.tok_off = np.asarray(small["tok_off"], dtype=np.int64)
        n = self.rows
        off = self.tok_off
        rows_ok = all(len(a) == n for a in (self.ids, self.has_text, self.start, self.end,
                                             self.source, self.level))
        if not (rows_ok and len(off) == n + 1 and off[0] == 0 and bool(np.all(np.diff(off) >= 0))
                and (n == 0 or (int(self.source.min()) >= 0
                                and int(self.source.max()) < len(self.sources)))):
            raise StoreError(f"store segment {self.dir} is inconsistent (expected {n} rows, "
                             f"token offsets within the tokens); {DAMAGED}")
        self.meta_path = self.dir / "meta.jsonl"
        self._meta: list[dict[str, Any]] | None = None
        self.assign: np.ndarray | None = None
        if self.assign_file:
            p = self.dir / self.assign_file
            verify_file(p, self._sizes.get(self.assign_file), self._hashes.get(self.assign_file))
            self.assign = np.asarray(load_npy(p), dtype=np.int64)

    def _files(self) -> list[str]:
        keys = (_SEG_FILES + (_JPEG_FILES if self._has_jpeg else ())
                + (_PIC_FILES if self._has_pic else ()))
        return [f"{k}.npy" for k in keys] + ["meta.jsonl"]

    def _load(self, key: str) -> np.ndarray:
        """The checked (size and checksum) array of ``key``.npy, memory-mapped if bulky."""
        p = self.dir / f"{key}.npy"
        try:
            verify_file(p, self._sizes.get(f"{key}.npy"), self._hashes.get(f"{key}.npy"))
        except FileNotFoundError as err:
            raise StoreError(f"store file {p} is gone (a newer commit may have removed it); "
                             "fix: reopen the store, or re-index into a new --store if it "
                             "persists") from err
        return load_npy(p, mmap=key in _MAPPED)

    def _bulky(self, key: str) -> np.ndarray:
        arr = self._arrays.get(key)
        if arr is None:
            arr = self._load(key)
            self._arrays[key] = arr
            self._check(key, arr)
        return arr

    def _check(self, key: str, arr: np.ndarray) -> None:
        n, off, dim = self.rows, self.tok_off, self._spec.vector_dim
        ok = {"vectors": lambda: arr.shape == (n, dim),
              "text_vectors": lambda: arr.shape == (n, self._spec.text_dim),
              "tokens": lambda: arr.ndim == 2 and off[-1] == arr.shape[0]
              and (arr.shape[0] == 0 or arr.shape[1] == dim),
              "token_times": lambda: arr.shape == (int(off[-1]),),
              "token_positions": lambda: arr.shape == (int(off[-1]),),
              "jpeg_off": lambda: len(arr) == n + 1 and arr[0] == 0
              and bool(np.all(np.diff(arr) >= 0)) and arr[-1] == len(self._bulky("jpeg")),
              "pic_row": lambda: len(arr) == n + 1 and arr[0] == 0
              and bool(np.all(np.diff(arr) >= 0)) and arr[-1] == len(self._bulky("pic_time"))
              and _offsets_ok(self._bulky("pic_off"), len(self._bulky("pic_time")),
                              len(self._bulky("pic"))),
              }.get(key, lambda: True)()
        if not ok:
            raise StoreError(f"store segment {self.dir} is inconsistent ({key}.npy does not fit "
                             f"its {n} rows); {DAMAGED}")

    vectors = property(lambda self: self._bulky("vectors"))
    text_vectors = property(lambda self: self._bulky("text_vectors"))
    tokens = property(lambda self: self._bulky("tokens"))
    token_times = property(lambda self: self._bulky("token_times"))
    token_positions = property(lambda self: self._bulky("token_positions"))
    jpeg = property(lambda self: self._bulky("jpeg") if self._has_jpeg else None)
    jpeg_off = property(lambda self: self._bulky("jpeg_off") if self._has_jpeg else None)

    def frame_pictures(self, row: int) -> tuple[tuple[float, bytes], ...]:
        """The row's ``(time, JPEG)`` frame pictures (none when the segment has none)."""
        if not self._has_pic:
            return ()
        rows = self._bulky("pic_row")      # checked against the other three when first read
        pic, off, times = self._arrays["pic"], self._arrays["pic_off"], self._arrays["pic_time"]
        a, b = int(rows[row]), int(rows[row + 1])
        return tuple((float(times[i]), bytes(pic[int(off[i]):int(off[i + 1])]))
                     for i in range(a, b))

    @property
    def meta(self) -> list[dict[str, Any]]:
        if self._meta is None:
            try:
                verify_file(self.meta_path, self._sizes.get("meta.jsonl"),
                            self._hashes.get("meta.jsonl"))
                lines = self.meta_path.read_text(encoding="utf-8").splitlines()
                meta = [json.loads(line) for line in lines if line]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise StoreError(f"store metadata {self.meta_path} cannot be read ({err}); "
                                 "fix: the store is damaged, re-index into a new --store") from err
            if len(meta) != self.rows or not all(isinstance(r, dict) for r in meta):
                raise StoreError(f"store metadata {self.meta_path} has {len(meta)} rows, "
                                 f"expected {self.rows}; fix: re-index into a new --store")
            self._meta = meta
        return self._meta

    def keyframe(self, row: int) -> bytes | None:
        """The row's keyframe JPEG, None when it has none (or the segment predates them)."""
        if self.jpeg_off is None or self.jpeg is None:
            return None
        a, b = int(self.jpeg_off[row]), int(self.jpeg_off[row + 1])
        return bytes(self.jpeg[a:b]) if b > a else None

    def clip(self, row: int, *, vector_dim: int) -> ClipMemory:
        m = self.meta[row]
        a, b = int(self.tok_off[row]), int(self.tok_off[row + 1])
        tokens = times = positions = None
        if m.get("has_tokens"):
            tokens = self.tokens[a:b]
            times = self.token_times[a:b]
            positions = self.token_positions[a:b]
        tv = np.array(self.text_vectors[row]) if self.has_text[row] else None
        return ClipMemory(
            source_id=self.sources[int(self.source[row])], start=float(self.start[row]),
            end=float(self.end[row]), vector=np.array(self.vectors[row]),
            keyframes=tuple(m.get("keyframes", ())), text_vector=tv, tokens=tokens,
            token_times=times, token_positions=positions,
            labels=tuple((str(l), float(p)) for l, p in m.get("labels", ())),
            ocr_text=m.get("ocr_text", ""), description=m.get("description", ""),
            novelty=float(m.get("novelty", 0.0)), level=int(m.get("level", 0)),
            merged=int(m.get("merged", 1)), id=int(self.ids[row]),
            keyframe_jpeg=self.keyframe(row), frame_pictures=self.frame_pictures(row),
            objects=objects_from_json(m.get("objects", ())),
            text_times=tuple(float(t) for t in m.get("text_times", ())),
            speech=_speech_from_json(m.get("speech", ())))


def _offsets_ok(off: np.ndarray, k: int, total: int) -> bool:
    """``off`` is the byte ranges of ``k`` non-empty items, ``total`` bytes in all."""
    return (len(off) == k + 1 and off[0] == 0 and bool(np.all(np.diff(off) > 0))
            and off[-1] == total)


def _speech_to_json(segments: Sequence[SpeechSegment]) -> list[list[Any]]:
    """Speech segments as ``[text, start, end, [[word, start, end], ...]]`` rows."""
    return [[s.text, float(s.start), float(s.end), [[w, float(a), float(b)] for w, a, b in s.words]]
            for s in segments]


def _speech_from_json(rows: Sequence[Sequence[Any]]) -> tuple[SpeechSegment, ...]:
    return tuple(SpeechSegment(float(a), float(b), str(text),
                               tuple((str(w), float(x), float(y)) for w, x, y in words))
                 for text, a, b, words in rows)


def objects_to_json(objects: Sequence[FrameObjects]) -> list[list[Any]]:
    """Detections per described frame as ``[[time, [[label, score, x0, y0, x1, y1], ...]], ...]``."""
    return [[round(fo.time, 3), [[d.label, d.score, *d.box] for d in fo.objects]] for fo in objects]


def objects_from_json(rows: Sequence[Sequence[Any]]) -> tuple[FrameObjects, ...]:
    return tuple(FrameObjects(float(t), tuple(Detection(str(d[0]), float(d[1]), tuple(map(float, d[2:6])))
                                              for d in dets)) for t, dets in rows)


def file_check(path: Path) -> list:
    """``[size, checksum]`` of a store file, as the manifest records it."""
    size = os.stat(path).st_size
    return [size, _digest(path, size)]


def _digest(path: Path, size: int) -> str:
    """A fast checksum: of the whole file when small, of evenly spaced blocks when large."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        if size <= _HASH_WHOLE:
            h.update(fh.read())
        else:
            for off in np.linspace(0, size - _HASH_BLOCK, _HASH_SAMPLES).astype(np.int64):
                fh.seek(int(off))
                h.update(fh.read(_HASH_BLOCK))
    return h.hexdigest()


def verify_file(path: Path, size: Any, digest: Any) -> None:
    """A store file must be a regular file (not a link) of the recorded size and checksum.

    A missing file raises FileNotFoundError (a reader may retry: a newer commit removed it).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise StoreError(f"store file {path} cannot be read ({err.strerror}); fix: check its "
                         "permissions, or re-index into a new --store") from err
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"store file {path} is not a regular file (a link or a directory); "
                         f"{DAMAGED}")
    if size is not None and st.st_size != size:
        raise StoreError(f"store file {path} has {st.st_size} bytes, the manifest says {size}; "
                         "fix: the store is damaged (truncated or overwritten), re-index into a "
                         "new --store")
    if digest is not None:
        try:
            got = _digest(path, st.st_size)
        except OSError as err:
            raise StoreError(f"store file {path} cannot be read ({err.strerror}); fix: check "
                             "its permissions, or re-index into a new --store") from err
        if got != digest:
            raise StoreError(f"store file {path} does not match its checksum in the manifest "
                             f"(its content changed); {DAMAGED}")


def load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise StoreError(f"store file {path} cannot be read ({why}); fix: check its "
                         "permissions, or re-index into a new --store") from err


def check_manifest(m: dict[str, Any], where: Path) -> None:
    """Every name a manifest gives is a plain store file name; types are what a store writes."""
    def bad(what: str) -> StoreError:
        return StoreError(f"the store manifest {where} {what}; fix: the store is damaged or "
                          "was not written by streamvid, re-index into a new --store")

    def name_ok(kind: str, name: Any) -> bool:
        return isinstance(name, str) and _NAMES[kind].fullmatch(name) is not None

    def check_ok(c: Any) -> bool:
        return (isinstance(c, list) and len(c) == 2 and type(c[0]) is int and c[0] >= 0
                and isinstance(c[1], str))

    for key in ("generation", "next_id"):
        if type(m[key]) is not int or m[key] < 0:
            raise bad(f"has a bad {key!r} ({m[key]!r})")
    if not isinstance(m["segments"], list) or not isinstance(m["counts"], dict):
        raise bad("has bad 'segments' or 'counts'")
    if not isinstance(m["spec"], dict) or not isinstance(m.get("files", {}), dict):
        raise bad("has a bad 'spec' or 'files'")
    for key in ("deleted", "centroids", "hnsw", "tokindex", "lexindex"):
        if m.get(key) is not None and not name_ok(key, m[key]):
            raise bad(f"names {m[key]!r} as its {key} file, which is not a file name of a store")
    for name, c in m.get("files", {}).items():
        if not (name in ATTACHABLE or any(name_ok(k, name) for k in (
                "deleted", "centroids", "hnsw", "tokindex", "lexindex"))):
            raise bad(f"records the file {name!r}, which is not a file name of a store")
        if not check_ok(c):
            raise bad(f"has a bad size/checksum for {name!r}")
    seen = set()
    for e in m["segments"]:
        if not isinstance(e, dict) or not name_ok("segment", e.get("name")) or e["name"] in seen:
            name = e.get("name") if isinstance(e, dict) else e
            raise bad(f"names the segment {name!r}, which is not a segment of a store "
                      "(seg-<number>, inside the store)")
        seen.add(e["name"])
        if type(e.get("rows")) is not int or e["rows"] < 0:
            raise bad(f"has a bad row count for {e['name']}")
        if not isinstance(e.get("sources"), list) or not all(isinstance(x, str)
                                                              for x in e["sources"]):
            raise bad(f"has bad sources for {e['name']}")
        assign = e.get("assign")
        if assign is not None and not name_ok("assign", assign):
            raise bad(f"names {assign!r} as an assignment file of {e['name']}")
        allowed = SEG_NAMES | ({assign} if assign else set())
        for key in ("sizes", "hashes"):
            d = e.get(key) or {}
            if not isinstance(d, dict) or not set(d) <= allowed:
                raise bad(f"has bad {key} for {e['name']}")
        if not all(type(v) is int and v >= 0 for v in (e.get("sizes") or {}).values()) or \
                not all(isinstance(v, str) for v in (e.get("hashes") or {}).values()):
            raise bad(f"has bad sizes or checksums for {e['name']}")


def write_segment(root: Path, name: str, clips: Sequence[ClipMemory], vector_dim: int,
                   text_dim: int, token_dtype: str, ivf: VecIndex | None,
                   qgen: int) -> dict[str, Any]:
    """Write ``clips`` as segment ``name`` (a temp directory renamed into place; removed
    again when writing fails, e.g. on a full disk)."""
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        return _write_segment_files(root, tmp, name, clips, vector_dim, text_dim, token_dtype,
                                    ivf, qgen)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_segment_files(root: Path, tmp: Path, name: str, clips: Sequence[ClipMemory],
                         vector_dim: int, text_dim: int, token_dtype: str, ivf: VecIndex | None,
                         qgen: int) -> dict[str, Any]:
    n = len(clips)
    sources = sorted({c.source_id for c in clips})
    src_code = {s: i for i, s in enumerate(sources)}
    ids = np.array([c.id for c in clips], dtype=np.int64)
    vectors = np.stack([c.vector for c in clips]).astype(np.float32) if n else \
        np.zeros((0, vector_dim), np.float32)
    text = np.zeros((n, text_dim), np.float32)
    has_text = np.zeros(n, dtype=bool)
    for i, c in enumerate(clips):
        if c.text_vector is not None:
            text[i] = c.text_vector
            has_text[i] = True
    counts = np.array([c.n_tokens for c in clips], dtype=np.int64)
    tok_off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(tok_off[-1])
    times = np.zeros(total, np.float32)
    positions = np.full(total, -1, np.int32)
    for i, c in enumerate(clips):
        if c.tokens is None or not c.n_tokens:
            continue
        a, b = tok_off[i], tok_off[i + 1]
        times[a:b] = c.token_times if c.token_times is not None else c.keyframe
        if c.token_positions is not None:
            positions[a:b] = c.token_positions
    jpegs = [c.keyframe_jpeg or b"" for c in clips]
    jpeg_off = np.concatenate([[0], np.cumsum([len(j) for j in jpegs])]).astype(np.int64)
    arrays = {
        "ids": ids, "vectors": vectors, "text_vectors": text, "has_text": has_text,
        "start": np.array([c.start for c in clips], np.float64),
        "end": np.array([c.end for c in clips], np.float64),
        "source": np.array([src_code[c.source_id] for c in clips], np.int32),
        "level": np.array([c.level for c in clips], np.int16),
        "tok_off": tok_off, "token_times": times, "token_positions": positions,
        "jpeg": np.frombuffer(b"".join(jpegs), np.uint8), "jpeg_off": jpeg_off,
    }
    if any(c.frame_pictures for c in clips):
        pics = [pic for c in clips for pic in c.frame_pictures]   # (time, bytes): no copy
        arrays.update({
            "pic_off": np.concatenate([[0], np.cumsum([len(j) for _, j in pics])]).astype(np.int64),
            "pic_time": np.array([t for t, _ in pics], np.float64),
            "pic_row": np.concatenate([[0], np.cumsum([len(c.frame_pictures) for c in clips])]
                                      ).astype(np.int64)})
    sizes: dict[str, int] = {}
    hashes: dict[str, str] = {}

    def record(p: Path) -> None:
        sizes[p.name], hashes[p.name] = file_check(p)

    for key, arr in arrays.items():
        p = tmp / f"{key}.npy"
        with open(p, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        record(p)
    if "pic_off" in arrays:   # frame pictures, streamed too (and a full disk is an ENOSPC)
        p = tmp / "pic.npy"
        with open(p, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (int(arrays["pic_off"][-1]),)})
            for c in clips:
                for _, jpeg in c.frame_pictures:
                    fh.write(jpeg)
            fh.flush()
            os.fsync(fh.fileno())
        record(p)
    # tokens, the bulk, are streamed clip by clip: a compaction never holds them all in memory
    p = tmp / "tokens.npy"
    dt = np.dtype(token_dtype)
    with open(p, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(dt),
                                                  "fortran_order": False,
                                                  "shape": (total, vector_dim)})
        for c in clips:
            if c.tokens is not None and c.n_tokens:
                fh.write(np.ascontiguousarray(c.tokens, dtype=dt).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    record(p)
    meta_lines = []
    for c in clips:
        meta_lines.append(json.dumps({
            "id": int(c.id), "keyframes": [float(t) for t in c.keyframes],
            "labels": [[str(l), float(p)] for l, p in c.labels], "ocr_text": c.ocr_text,
            "description": c.description, "novelty": float(c.novelty), "level": int(c.level),
            "merged": int(c.merged), "has_tokens": c.tokens is not None,
            "objects": objects_to_json(c.objects), "text_times": [round(t, 3) for t in c.text_times],
            **({"speech": _speech_to_json(c.speech)} if c.speech else {}),
        }, ensure_ascii=False))
    p = tmp / "meta.jsonl"
    with open(p, "w", encoding="utf-8") as fh:
        fh.write("\n".join(meta_lines) + ("\n" if meta_lines else ""))
        fh.flush()
        os.fsync(fh.fileno())
    record(p)
    entry: dict[str, Any] = {"name": name, "rows": n, "sources": sources, "sizes": sizes,
                             "hashes": hashes, "assign": None}
    if ivf is not None and n:
        aname = f"assign-{qgen}.npy"
        pa = tmp / aname
        with open(pa, "wb") as fh:
            np.save(fh, ivf.assign(vectors), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        record(pa)
        entry["assign"] = aname
    fsync_dir(tmp)
    os.replace(tmp, root / name)
    fsync_dir(root)
    return entry


_TEMP_NAME = re.compile(r"\.tmp-seg-\d{8,}-\d+|\.(manifest\.json|deleted-\d{8,}\.npy|"
                        r"centroids-\d+\.npy|(hnsw|tokidx)-\d{8,}\.faiss|(tokidx|lexidx)-\d{8,}\.npz)"
                        r"\.\w+\.tmp")


def is_store_file(name: str) -> bool:
    """A name the store writes (other files in its directory are never touched)."""
    return (name == MANIFEST or any(_NAMES[k].fullmatch(name) for k in
                                    ("segment", "deleted", "centroids", "hnsw", "tokindex",
                                     "lexindex"))
            or _TEMP_NAME.fullmatch(name) is not None)


def clip_bytes(c: ClipMemory, token_bytes: int = 2) -> int:
    """Approximate bytes one clip takes in a store."""
    b = 4 * c.vector.shape[0] + 64 + len(c.description) + len(c.ocr_text) + 24 * len(c.labels)
    b += sum(8 + 40 * len(fo.objects) for fo in c.objects)
    b += sum(len(s.text) + 24 + 24 * len(s.words) for s in c.speech)
    if c.text_vector is not None:
        b += 4 * c.text_vector.shape[0]
    if c.tokens is not None:
        b += c.n_tokens * (c.tokens.shape[1] * token_bytes + 8)
    if c.keyframe_jpeg is not None:
        b += len(c.keyframe_jpeg) + 8
    b += sum(len(j) + 16 for _, j in c.frame_pictures)
    return b


# --------------------------------------------------------------------------- the manifest


def new_manifest(root: Path, spec: StoreSpec, config: MemoryConfig) -> None:
    """Write the manifest of an empty store."""
    now = time.time()
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "spec": spec.to_json(),
        "memory_config": dataclasses.asdict(config), "generation": 0,
        "next_id": 0, "segments": [], "deleted": None, "centroids": None, "qgen": 0,
        "ivf_trained_on": 0, "hnsw": None, "created": now, "committed": now,
        "sources": {}, "counts": {"clips": 0, "bytes": 0, "consolidated": 0, "merges": 0,
                                  "levels": {}},
    }
    atomic_write_json(root / MANIFEST, manifest)


def read_manifest(root: Path) -> dict[str, Any]:
    """The store's manifest, checked (:func:`check_manifest`)."""
    p = root / MANIFEST
    try:
        text = p.read_text(encoding="utf-8")
        m = json.loads(text)
    except FileNotFoundError as err:
        raise StoreError(f"no memory store at {root} (no {MANIFEST}); fix: pass the "
                         "right --store") from err
    except OSError as err:
        raise StoreError(f"the store manifest {p} cannot be read ({err.strerror}); fix: "
                         "check its permissions, or re-index into a new --store") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"the store manifest {p} is damaged ({err}); fix: re-index into a "
                         "new --store") from err
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise StoreError(f"{p} is not a streamvid memory store manifest (format "
                         f"{m.get('format') if isinstance(m, dict) else None!r}); fix: pass "
                         "the right --store")
    if m.get("version") != FORMAT_VERSION:
        raise StoreError(f"the store {root} has format version {m.get('version')!r}, "
                         f"this streamvid reads version {FORMAT_VERSION}; fix: re-index into "
                         "a new --store, or use the streamvid version that wrote it")
    for key in ("spec", "generation", "next_id", "segments", "counts"):
        if key not in m:
            raise StoreError(f"the store manifest {p} lacks {key!r}; fix: re-index into a "
                             "new --store")
    check_manifest(m, p)
    return m


def wipe(root: Path) -> None:
    """Remove every file a store wrote in ``root`` (other files are never touched)."""
    for p in root.iterdir():
        if is_store_file(p.name):
            remove_path(p)


def remove_unnamed(root: Path, manifests: Iterable[dict[str, Any] | None]) -> None:
    """Remove store files that none of ``manifests`` names (and stale IVF assignments of
    the first one's segments)."""
    manifests = list(manifests)
    keep = set()
    for m in manifests:
        if not m:
            continue
        for e in m.get("segments", []):
            keep.add(e["name"])
        for key in ("deleted", "centroids", "hnsw", "tokindex", "lexindex"):
            if m.get(key):
                keep.add(m[key])
    for p in root.iterdir():
        if is_store_file(p.name) and p.name != MANIFEST and p.name not in keep:
            remove_path(p)
    # stale assign files inside kept segments
    for e in manifests[0].get("segments", []):
        seg_dir = root / e["name"]
        for p in seg_dir.glob("assign-*.npy"):
            if p.name != e.get("assign"):
                p.unlink(missing_ok=True)
