"""The clip memory store: FAISS indexes plus metadata and arrays, persisted to a directory.

Layout of a store directory::

    manifest.json            format, version, spec (model ids, dims, config), generation,
                             segments, deleted ids file, IVF centroids, counts
    seg-<gen>/               one immutable segment per commit that added clips:
        ids.npy vectors.npy text_vectors.npy has_text.npy start.npy end.npy source.npy
        tok_off.npy tokens.npy token_times.npy token_positions.npy meta.jsonl
        jpeg.npy jpeg_off.npy  keyframe JPEGs, concatenated, and each row's byte range
                             (absent in stores written before keyframes were kept)
        assign-<q>.npy       IVF list of each row for centroids generation q
    deleted-<gen>.npy        ids removed since their segment was written
    centroids-<q>.npy        IVF centroids (index "ivf")
    hnsw-<gen>.faiss         the HNSW graph (index "hnsw")

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
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import faiss
import numpy as np

from streamvid.config import MemoryConfig
from streamvid.errors import StoreError
from streamvid.io import atomic_save_npy, atomic_write, atomic_write_json, fsync_dir, remove_path
from streamvid.types import ClipMemory, Detection, FrameObjects, SpeechSegment, TokenSpec

from .index import VecIndex, ivf_nlist

log = logging.getLogger(__name__)

FORMAT = "streamvid-memory"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_LOCK = ".writer.lock"
_SEG_FILES = ("ids", "vectors", "text_vectors", "has_text", "start", "end", "source", "level",
              "tok_off", "tokens", "token_times", "token_positions")
# the only names a manifest may give (plain names inside the store, never paths)
_NAMES = {"segment": re.compile(r"seg-\d{8,}(-\d+)?"), "deleted": re.compile(r"deleted-\d{8,}\.npy"),
          "centroids": re.compile(r"centroids-\d+\.npy"), "hnsw": re.compile(r"hnsw-\d{8,}\.faiss"),
          "assign": re.compile(r"assign-\d+\.npy")}
_ATTACHABLE = frozenset({"config.yaml"})  # files a pipeline keeps beside the store (attach())
_JPEG_FILES = ("jpeg", "jpeg_off")  # optional: stores written before them have none
_SEG_NAMES = frozenset([f"{k}.npy" for k in _SEG_FILES + _JPEG_FILES] + ["meta.jsonl"])
# read back memory-mapped, so that a writer or reader holds no clip's tokens or keyframe in
# memory (only small per-row arrays: ids, times, offsets)
_MAPPED = frozenset({"vectors", "text_vectors", "tokens", "token_times", "token_positions", "jpeg"})
_HASH_WHOLE = 1 << 20      # files up to this size are hashed whole
_HASH_SAMPLES = 16         # larger ones: this many evenly spaced blocks ...
_HASH_BLOCK = 64 << 10     # ... of this size
_DAMAGED = "fix: the store is damaged, re-index into a new --store"


class StoreBusyError(StoreError):
    """Another process holds the store's writer lock."""


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


class _Segment:
    """One immutable commit's clips, arrays memory-mapped."""

    def __init__(self, root: Path, entry: dict[str, Any], spec: StoreSpec):
        self.name = entry["name"]
        self.dir = root / self.name
        self.rows = int(entry["rows"])
        self.sources: list[str] = list(entry["sources"])
        self.assign_file: str | None = entry.get("assign")
        sizes = entry.get("sizes") or {}
        hashes = entry.get("hashes") or {}
        try:
            st = os.lstat(self.dir)
        except FileNotFoundError:
            raise
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"store segment {self.dir} is not a directory (a link or a file); "
                             f"{_DAMAGED}")
        arrays: dict[str, np.ndarray] = {}
        for key in _SEG_FILES + _JPEG_FILES:
            p = self.dir / f"{key}.npy"
            if key in _JPEG_FILES and f"{key}.npy" not in sizes:
                continue
            _verify_file(p, sizes.get(f"{key}.npy"), hashes.get(f"{key}.npy"))
            arrays[key] = _load_npy(p, mmap=key in _MAPPED)
        self.ids = np.asarray(arrays["ids"], dtype=np.int64)
        self.vectors = arrays["vectors"]
        self.text_vectors = arrays["text_vectors"]
        self.has_text = np.asarray(arrays["has_text"], dtype=bool)
        self.start = np.asarray(arrays["start"], dtype=np.float64)
        self.end = np.asarray(arrays["end"], dtype=np.float64)
        self.source = np.asarray(arrays["source"], dtype=np.int32)
        self.level = np.asarray(arrays["level"], dtype=np.int16)
        self.tok_off = np.asarray(arrays["tok_off"], dtype=np.int64)
        self.tokens = arrays["tokens"]
        self.token_times = arrays["token_times"]
        self.token_positions = arrays["token_positions"]
        self.jpeg = arrays.get("jpeg")
        self.jpeg_off = arrays.get("jpeg_off")
        n = self.rows
        off = self.tok_off
        rows_ok = all(len(a) == n for a in (self.ids, self.has_text, self.start, self.end,
                                             self.source, self.level))
        if not (rows_ok and self.vectors.shape == (n, spec.vector_dim)
                and self.text_vectors.shape == (n, spec.text_dim)
                and len(off) == n + 1 and off[0] == 0 and bool(np.all(np.diff(off) >= 0))
                and self.tokens.ndim == 2 and off[-1] == self.tokens.shape[0]
                and (self.tokens.shape[0] == 0 or self.tokens.shape[1] == spec.vector_dim)
                and len(self.token_times) == len(self.token_positions) == self.tokens.shape[0]
                and (n == 0 or (int(self.source.min()) >= 0
                                and int(self.source.max()) < len(self.sources)))
                and (self.jpeg_off is None
                     or (len(self.jpeg_off) == n + 1 and self.jpeg_off[0] == 0
                         and bool(np.all(np.diff(self.jpeg_off) >= 0))
                         and self.jpeg_off[-1] == len(self.jpeg)))):
            raise StoreError(f"store segment {self.dir} is inconsistent (expected {n} rows, "
                             f"token offsets within the tokens); {_DAMAGED}")
        self.meta_path = self.dir / "meta.jsonl"
        _verify_file(self.meta_path, sizes.get("meta.jsonl"), hashes.get("meta.jsonl"))
        self._meta: list[dict[str, Any]] | None = None
        self.assign: np.ndarray | None = None
        if self.assign_file:
            p = self.dir / self.assign_file
            _verify_file(p, sizes.get(self.assign_file), hashes.get(self.assign_file))
            self.assign = np.asarray(_load_npy(p), dtype=np.int64)

    @property
    def meta(self) -> list[dict[str, Any]]:
        if self._meta is None:
            try:
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
            keyframe_jpeg=self.keyframe(row),
            objects=objects_from_json(m.get("objects", ())),
            text_times=tuple(float(t) for t in m.get("text_times", ())),
            speech=_speech_from_json(m.get("speech", ())))


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


def _verify_file(path: Path, size: Any, digest: Any) -> None:
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
                         f"{_DAMAGED}")
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
                             f"(its content changed); {_DAMAGED}")


def _load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise StoreError(f"store file {path} cannot be read ({why}); fix: check its "
                         "permissions, or re-index into a new --store") from err


def _check_manifest(m: dict[str, Any], where: Path) -> None:
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
    for key in ("deleted", "centroids", "hnsw"):
        if m.get(key) is not None and not name_ok(key, m[key]):
            raise bad(f"names {m[key]!r} as its {key} file, which is not a file name of a store")
    for name, c in m.get("files", {}).items():
        if not (name in _ATTACHABLE or any(name_ok(k, name) for k in ("deleted", "centroids",
                                                                           "hnsw"))):
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
        allowed = _SEG_NAMES | ({assign} if assign else set())
        for key in ("sizes", "hashes"):
            d = e.get(key) or {}
            if not isinstance(d, dict) or not set(d) <= allowed:
                raise bad(f"has bad {key} for {e['name']}")
        if not all(type(v) is int and v >= 0 for v in (e.get("sizes") or {}).values()) or \
                not all(isinstance(v, str) for v in (e.get("hashes") or {}).values()):
            raise bad(f"has bad sizes or checksums for {e['name']}")


def _write_segment(root: Path, name: str, clips: Sequence[ClipMemory], vector_dim: int,
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


# --------------------------------------------------------------------------- the store


class MemoryStore:
    """Clip memories of one or many sources, searchable by visual or text vector.

    Open with :meth:`open`. A writer (mode ``"a"`` or ``"w"``) sees its own uncommitted
    changes; :meth:`commit` makes them durable and visible to readers, which pick them up
    with :meth:`refresh`. Ids are stable int64s, never reused.
    """

    def __init__(self, path: Path, mode: str, config: MemoryConfig):
        self.path = Path(path)
        self.mode = mode
        self.config = config
        self._lock_fd: int | None = None
        self._segments: dict[str, _Segment] = {}
        self._manifest: dict[str, Any] = {}
        self._pending: dict[int, ClipMemory] = {}
        self._dead: set[int] = set()       # removed ids still inside an HNSW graph
        self._deleted: set[int] = set()
        self._dirty = False
        self._previous_manifest: dict[str, Any] | None = None
        self._closed = False
        self.created = False   # this open() wrote the store's first manifest
        self._attached: set[str] = set()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike[str], spec: StoreSpec | None = None, *, mode: str = "r",
             config: MemoryConfig | None = None) -> "MemoryStore":
        """Open (``"r"``, ``"a"``) or create (``"a"`` when missing, ``"w"`` always) a store.

        ``spec`` is checked against the store's; a different encoder, text model or
        dimension, or another format version, raises :class:`StoreError`.
        """
        if mode not in ("r", "a", "w"):
            raise StoreError(f"store mode {mode!r} is not one of 'r', 'a', 'w'")
        path = Path(path)
        exists = (path / MANIFEST).exists()
        if mode == "r" and not exists:
            raise StoreError(f"no memory store at {path} (no {MANIFEST}); fix: index a video "
                             "into it first, or pass the right --store")
        if path.exists() and not path.is_dir():
            raise StoreError(f"store path {path} is a file, not a directory; fix: pass a "
                             "directory as --store")
        store = cls(path, mode, config or MemoryConfig())
        if mode != "r":
            path.mkdir(parents=True, exist_ok=True)
            store._acquire_lock()
            exists = (path / MANIFEST).exists()  # another writer may have created it meanwhile
        try:
            if mode == "w" or not exists:
                if spec is None:
                    raise StoreError(f"creating the store {path} needs a StoreSpec (model ids "
                                     "and dims); fix: pass spec=")
                if mode == "w":
                    store._wipe()
                store._create(spec)
                store.created = not exists
            store._load(spec)
            if mode != "r" and not store.created:  # a new store has nothing to tidy (and a
                store._gc()                         # directory's own files are not ours)
        except BaseException:
            if store.created:
                (path / MANIFEST).unlink(missing_ok=True)
            store._release_lock()
            raise
        return store

    def _acquire_lock(self) -> None:
        try:
            fd = os.open(str(self.path / _LOCK), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise StoreError(f"cannot open the store {self.path} for writing ({err.strerror}); "
                             "fix: check the directory's permissions, or use another --store") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise StoreBusyError(f"the store {self.path} is being written by another process; fix: "
                             "wait for it to finish, open it read-only (mode 'r'), or use "
                             "another --store") from err
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _wipe(self) -> None:
        for p in self.path.iterdir():
            if p.name == _LOCK:
                continue
            if _is_store_file(p.name):
                remove_path(p)

    def _create(self, spec: StoreSpec) -> None:
        now = time.time()
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION, "spec": spec.to_json(),
            "memory_config": dataclasses.asdict(self.config), "generation": 0,
            "next_id": 0, "segments": [], "deleted": None, "centroids": None, "qgen": 0,
            "ivf_trained_on": 0, "hnsw": None, "created": now, "committed": now,
            "sources": {}, "counts": {"clips": 0, "bytes": 0, "consolidated": 0, "merges": 0,
                                      "levels": {}},
        }
        atomic_write_json(self.path / MANIFEST, manifest)

    def _read_manifest(self) -> dict[str, Any]:
        p = self.path / MANIFEST
        try:
            text = p.read_text(encoding="utf-8")
            m = json.loads(text)
        except FileNotFoundError as err:
            raise StoreError(f"no memory store at {self.path} (no {MANIFEST}); fix: pass the "
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
            raise StoreError(f"the store {self.path} has format version {m.get('version')!r}, "
                             f"this streamvid reads version {FORMAT_VERSION}; fix: re-index into "
                             "a new --store, or use the streamvid version that wrote it")
        for key in ("spec", "generation", "next_id", "segments", "counts"):
            if key not in m:
                raise StoreError(f"the store manifest {p} lacks {key!r}; fix: re-index into a "
                                 "new --store")
        _check_manifest(m, p)
        return m

    def _load(self, spec: StoreSpec | None) -> None:
        """Read the latest manifest and everything it names (retrying if a commit races)."""
        last: Exception | None = None
        for _ in range(20):
            m = self._read_manifest()
            try:
                self._load_manifest(m, spec)
                return
            except FileNotFoundError as err:  # a newer commit removed what we were reading
                last = err
                time.sleep(0.05)
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
                raise StoreError(f"the store {self.path} has a malformed manifest or file "
                                 f"({type(err).__name__}: {err}); {_DAMAGED}") from err
        raise StoreError(f"the store {self.path} names a file that does not exist ({last}); "
                         "fix: the store is damaged, re-index into a new --store")

    def _load_manifest(self, m: dict[str, Any], spec: StoreSpec | None, *,
                       keep_index: bool = False) -> None:
        try:
            stored = StoreSpec.from_json(m["spec"])
        except (KeyError, TypeError, ValueError) as err:
            raise StoreError(f"the store manifest {self.path / MANIFEST} has a bad spec ({err}); "
                             "fix: re-index into a new --store") from err
        self.spec = stored
        if spec is not None:
            self.check_spec(spec)
        segs: dict[str, _Segment] = {}
        for entry in m["segments"]:
            old = self._segments.get(entry["name"])
            segs[entry["name"]] = old if old is not None and old.assign_file == entry.get("assign") \
                else _Segment(self.path, entry, stored)
        files = m.get("files") or {}

        def verified(name: str) -> Path:
            p = self.path / name
            _verify_file(p, *(files.get(name) or (None, None)))
            return p

        for name in _ATTACHABLE & set(files):
            verified(name)
        deleted = np.zeros(0, np.int64)
        if m.get("deleted"):
            deleted = np.asarray(_load_npy(verified(m["deleted"])), dtype=np.int64)
        centroids = None
        if m.get("centroids"):
            centroids = np.asarray(_load_npy(verified(m["centroids"])), dtype=np.float32)
        hnsw_index = None
        if m.get("hnsw") and not keep_index:
            p = verified(m["hnsw"])
            try:
                hnsw_index = faiss.read_index(str(p))
            except RuntimeError as err:
                raise StoreError(f"the store index {p} cannot be read ({str(err).splitlines()[0]}"
                                 "); fix: the store is damaged, re-index into a new --store") from err
        self._manifest = m
        self._segments = segs
        self._deleted = set(int(i) for i in deleted)
        self._build_state(centroids, hnsw_index, keep_index=keep_index)

    def _build_state(self, centroids: np.ndarray | None, hnsw_index: Any, *,
                     keep_index: bool = False) -> None:
        """Row tables (id -> segment/row, start, end, source) and the in-memory indexes."""
        m = self._manifest
        self._next_id = int(m["next_id"])
        seg_list = list(self._segments.values())
        src_names: list[str] = sorted({s for seg in seg_list for s in seg.sources}
                                      | {c.source_id for c in self._pending.values()})
        self._src_code = {s: i for i, s in enumerate(src_names)}
        self._src_names = src_names
        ids, segi, rows, start, end, src, lev = [], [], [], [], [], [], []
        deleted = np.fromiter(self._deleted, np.int64, len(self._deleted))
        for si, seg in enumerate(seg_list):
            live = ~np.isin(seg.ids, deleted) if len(deleted) else np.ones(seg.rows, bool)
            r = np.nonzero(live)[0]
            ids.append(seg.ids[r])
            segi.append(np.full(len(r), si, np.int32))
            rows.append(r.astype(np.int64))
            start.append(seg.start[r])
            end.append(seg.end[r])
            lev.append(seg.level[r])
            remap = np.array([self._src_code[s] for s in seg.sources], np.int32)
            src.append(remap[seg.source[r]] if len(seg.sources) else np.zeros(0, np.int32))
        self._seg_list = seg_list
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
        self._ids = cat(ids, np.int64)
        self._segi = cat(segi, np.int32)
        self._rows = cat(rows, np.int64)
        self._start = cat(start, np.float64)
        self._end = cat(end, np.float64)
        self._src = cat(src, np.int32)
        self._lev = cat(lev, np.int16)
        self._order = np.argsort(self._ids, kind="stable")
        self._sorted_ids = self._ids[self._order]
        # pending (uncommitted) clips of a writer
        self._pend_ids = np.array(sorted(self._pending), np.int64)
        if keep_index:
            return
        # indexes
        kind = self._index_kind_for(len(self._ids) + len(self._pending), centroids, hnsw_index)
        cfg = self.config
        self._vindex = VecIndex(kind, self.spec.vector_dim, nprobe=cfg.nprobe,
                                ef_search=cfg.ef_search, hnsw_m=cfg.hnsw_m, centroids=centroids)
        if kind == "hnsw" and hnsw_index is not None:
            self._vindex.index = hnsw_index
            faiss.downcast_index(hnsw_index.index).hnsw.efSearch = cfg.ef_search
            in_graph = faiss.vector_to_array(hnsw_index.id_map).astype(np.int64)
            self._dead = set(in_graph[~np.isin(in_graph, self._ids)].tolist())
        else:
            for si, seg in enumerate(seg_list):
                r = self._rows[self._segi == si]
                if len(r) == 0:
                    continue
                assign = None
                if kind == "ivf" and seg.assign is not None and seg.assign_file == \
                        f"assign-{m.get('qgen', 0)}.npy":
                    assign = seg.assign if len(r) == seg.rows else seg.assign[r]
                if len(r) == seg.rows:  # every row live: read the mapped file once, no gather
                    self._vindex.add(seg.ids, seg.vectors, assign)
                else:
                    self._vindex.add(seg.ids[r], np.asarray(seg.vectors[r]), assign)
        self._tindex = VecIndex("flat", self.spec.text_dim)
        for si, seg in enumerate(seg_list):
            r = self._rows[self._segi == si]
            r = r[seg.has_text[r]]
            if len(r):
                self._tindex.add(seg.ids[r], np.asarray(seg.text_vectors[r]))
        for cid, c in self._pending.items():
            self._index_pending(c)

    def check_spec(self, spec: StoreSpec) -> None:
        """Raise :class:`StoreError` unless ``spec``'s models are the ones the store holds."""
        for key in ("encoder_id", "vector_dim", "text_id", "text_dim"):
            a, b = getattr(self.spec, key), getattr(spec, key)
            if a != b:
                raise StoreError(
                    f"the store {self.path} was built with {key}={a!r}, but the current "
                    f"models have {key}={b!r}; fix: use another --store for these models, "
                    "or re-index the videos into this one with mode 'w'")

    def _index_kind_for(self, n: int, centroids: np.ndarray | None, hnsw_index: Any) -> str:
        want = self.config.index
        if hnsw_index is not None:
            return "hnsw"
        if centroids is not None:
            return "ivf"
        if want in ("flat", "auto"):
            return "flat"
        # ivf/hnsw requested but not built yet: exact until the first commit builds it
        return "flat"

    def _index_pending(self, c: ClipMemory) -> None:
        ids = np.array([c.id], np.int64)
        self._vindex.add(ids, c.vector[None], None if self._vindex.kind != "ivf"
                         else self._vindex.assign(c.vector[None]))
        if c.text_vector is not None:
            self._tindex.add(ids, c.text_vector[None])

    # ------------------------------------------------------------------ reading
    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest of the last commit (a copy)."""
        return json.loads(json.dumps(self._manifest))

    @property
    def generation(self) -> int:
        return int(self._manifest["generation"])

    def __len__(self) -> int:
        return int(len(self._ids) + len(self._pending))

    def ids(self) -> np.ndarray:
        """Ids of all clips (committed and, for a writer, pending), ascending."""
        return np.union1d(self._sorted_ids, self._pend_ids).astype(np.int64)

    def sources(self) -> list[str]:
        """Source ids with at least one clip, sorted."""
        present = set(np.unique(self._src).tolist())
        out = {self._src_names[i] for i in present}
        out |= {c.source_id for c in self._pending.values()}
        return sorted(out)

    def span(self, source: str | None = None) -> tuple[float, float]:
        """``(start, end)`` covered by ``source`` (or by all sources)."""
        t = self.table()
        mask = np.ones(len(t["id"]), bool) if source is None else \
            (t["source"] == self._src_code.get(source, -1))
        starts, ends = t["start"][mask], t["end"][mask]
        if len(starts) == 0:
            raise StoreError(f"the store {self.path} has no clips of source {source!r}; "
                             f"sources: {', '.join(self.sources()) or 'none'}")
        return float(starts.min()), float(ends.max())

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``ids`` in the committed row tables (-1 where absent)."""
        ids = np.asarray(ids, np.int64)
        if len(self._sorted_ids) == 0 or len(ids) == 0:
            return np.full(len(ids), -1, np.int64), np.zeros(len(ids), bool)
        pos = np.clip(np.searchsorted(self._sorted_ids, ids), 0, len(self._sorted_ids) - 1)
        found = self._sorted_ids[pos] == ids
        return np.where(found, self._order[pos], -1).astype(np.int64), found

    def get(self, ids: Iterable[int]) -> list[ClipMemory]:
        """The clips with these ids, in the same order (tokens memory-mapped)."""
        ids = np.asarray(list(ids), np.int64)
        pos, found = self._locate(ids)
        out = []
        for cid, p, f in zip(ids.tolist(), pos.tolist(), found.tolist()):
            if cid in self._pending:
                out.append(self._pending[cid])
            elif f:
                seg = self._seg_list[int(self._segi[p])]
                out.append(seg.clip(int(self._rows[p]), vector_dim=self.spec.vector_dim))
            else:
                raise StoreError(f"clip id {cid} is not in the store {self.path}; fix: use ids "
                                 "returned by search()/ids() of the current generation")
        return out

    def keyframe(self, clip_id: int) -> bytes | None:
        """The JPEG of clip ``clip_id``'s keyframe (longer side <= 384 px), or None when the
        clip has none (stores written before keyframes were kept)."""
        cid = int(clip_id)
        if cid in self._pending:
            return self._pending[cid].keyframe_jpeg
        pos, found = self._locate(np.array([cid], np.int64))
        if not found[0]:
            raise StoreError(f"clip id {cid} is not in the store {self.path}; fix: use ids "
                             "returned by search()/ids() of the current generation")
        p = int(pos[0])
        return self._seg_list[int(self._segi[p])].keyframe(int(self._rows[p]))

    def vectors(self, ids: np.ndarray, *, space: str = "visual") -> np.ndarray:
        """``[n, D]`` float32 vectors of ``ids`` (zeros for clips without a text vector)."""
        ids = np.asarray(ids, np.int64)
        dim = self.spec.vector_dim if space == "visual" else self.spec.text_dim
        out = np.zeros((len(ids), dim), np.float32)
        pos, found = self._locate(ids)
        if found.any():
            fi = np.nonzero(found)[0]
            segi, rows = self._segi[pos[fi]], self._rows[pos[fi]]
            for si in np.unique(segi):
                seg = self._seg_list[int(si)]
                sel = segi == si
                arr = seg.vectors if space == "visual" else seg.text_vectors
                r = rows[sel]
                order = np.argsort(r)
                block = np.asarray(arr[r[order]])
                tgt = fi[sel][order]
                out[tgt] = block
        for i, cid in enumerate(ids.tolist()):
            c = self._pending.get(cid)
            if c is not None:
                v = c.vector if space == "visual" else c.text_vector
                if v is not None:
                    out[i] = v
        return out

    def table(self) -> dict[str, np.ndarray]:
        """Columns of all clips: ``id``, ``start``, ``end``, ``source`` (code), for scans.

        ``source_names[source]`` gives the source id of a code.
        """
        pend = list(self._pending.values())
        return {"id": np.concatenate([self._ids, np.array([c.id for c in pend], np.int64)]),
                "start": np.concatenate([self._start, np.array([c.start for c in pend], np.float64)]),
                "end": np.concatenate([self._end, np.array([c.end for c in pend], np.float64)]),
                "source": np.concatenate([self._src, np.array([self._src_code[c.source_id]
                                                               for c in pend], np.int32)]),
                "level": np.concatenate([self._lev, np.array([c.level for c in pend], np.int16)]),
                "source_names": np.asarray(self._src_names, dtype=object)}

    def _selected(self, space: str, source: str | None,
                  time_range: tuple[float, float] | None) -> np.ndarray:
        t = self.table()
        mask = np.ones(len(t["id"]), bool)
        if source is not None:
            mask &= t["source"] == self._src_code.get(source, -1)
        if time_range is not None:
            lo, hi = float(time_range[0]), float(time_range[1])
            mask &= (t["end"] >= lo) & (t["start"] <= hi)
        ids = t["id"][mask]
        if space == "text":
            ids = ids[self._has_text(ids)]
        return np.sort(ids)

    def _has_text(self, ids: np.ndarray) -> np.ndarray:
        out = np.zeros(len(ids), bool)
        pos, found = self._locate(ids)
        fi = np.nonzero(found)[0]
        segi, rows = self._segi[pos[fi]], self._rows[pos[fi]]
        for si in np.unique(segi):
            sel = segi == si
            out[fi[sel]] = self._seg_list[int(si)].has_text[rows[sel]]
        for i, cid in enumerate(ids.tolist()):
            c = self._pending.get(cid)
            if c is not None:
                out[i] = c.text_vector is not None
        return out

    def search(self, vector: np.ndarray, k: int, *, space: str = "visual",
               source: str | None = None,
               time_range: tuple[float, float] | None = None) -> list[tuple[int, float]]:
        """The ``k`` most similar clips as ``(id, cosine)``, best first.

        ``space`` is ``"visual"`` (clip vectors) or ``"text"`` (description vectors);
        ``source`` and ``time_range`` (seconds, overlapping clips) filter the candidates.
        """
        if space not in ("visual", "text"):
            raise StoreError(f"search space {space!r} is not 'visual' or 'text'")
        dim = self.spec.vector_dim if space == "visual" else self.spec.text_dim
        q = np.asarray(vector, np.float32).reshape(-1)
        if q.shape[0] != dim:
            raise StoreError(f"a {space} query vector must have {dim} dims (store {self.path}), "
                             f"got {q.shape[0]}; fix: encode the query with the store's model")
        if k <= 0 or len(self) == 0:
            return []
        index = self._vindex if space == "visual" else self._tindex
        dead = self._dead if space == "visual" else set()
        if source is None and time_range is None and not dead:
            scores, ids = index.index.search(q[None], int(min(k, max(index.ntotal, 1))))
        else:
            selected = self._selected(space, source, time_range)
            if len(selected) == 0:
                return []
            id_space = int(max(self._next_id, int(selected.max()) + 1))
            scores, ids = index.search(q[None], k, selected, id_space,
                                       vectors_of=lambda s: self.vectors(s, space=space))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    # ------------------------------------------------------------------ writing
    def _writable(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        if self.mode == "r":
            raise StoreError(f"the store {self.path} is open read-only; fix: open it with "
                             "mode 'a' to add or remove clips")

    def add(self, clips: Sequence[ClipMemory]) -> list[int]:
        """Add clips (visible to this writer at once, to readers after :meth:`commit`).

        Returns the new ids; the stored clips carry them.
        """
        self._writable()
        out = []
        for c in clips:
            if c.vector.shape[0] != self.spec.vector_dim:
                raise StoreError(f"clip {c.source_id}@{c.start:.1f}s has a {c.vector.shape[0]}-d "
                                 f"vector, the store {self.path} holds {self.spec.vector_dim}-d "
                                 "ones; fix: encode with the store's model or use another --store")
            if c.text_vector is not None and c.text_vector.shape[0] != self.spec.text_dim:
                raise StoreError(f"clip {c.source_id}@{c.start:.1f}s has a "
                                 f"{c.text_vector.shape[0]}-d text vector, the store holds "
                                 f"{self.spec.text_dim}-d ones; fix: use the store's text model")
            cid = self._next_id
            self._next_id += 1
            c = dataclasses.replace(c, id=cid)
            self._pending[cid] = c
            if c.source_id not in self._src_code:
                self._src_code[c.source_id] = len(self._src_names)
                self._src_names.append(c.source_id)
            self._pend_ids = np.append(self._pend_ids, cid)
            self._dirty = True
            self._index_pending(c)
            out.append(cid)
        return out

    def adopt_segments(self, entries: Sequence[dict[str, Any]], *, next_id: int,
                       deleted: Iterable[int] = ()) -> None:
        """Add segments whose directories were already written under this store's root
        (by :func:`memory.merge.merge_stores`); durable at the next :meth:`commit`.

        Each entry is a manifest segment entry (``name``, ``rows``, ``sources`` and any
        other keys); the sizes and checksums of its known files are taken from the directory, IVF assignments are dropped
        (the next commit assigns or trains). Their ids must be new and below ``next_id``;
        ``deleted`` names ids among them that are not live.
        """
        self._writable()
        new = []
        for e in entries:
            d = self.path / e["name"]
            checks = {p.name: file_check(p) for p in sorted(d.iterdir())
                      if p.is_file() and p.name in _SEG_NAMES}
            new.append({**e, "sizes": {k: c[0] for k, c in checks.items()},
                        "hashes": {k: c[1] for k, c in checks.items()}, "assign": None})
        m = dict(self._manifest)
        m["segments"] = list(m["segments"]) + new
        m["next_id"] = max(int(m["next_id"]), int(next_id))
        self._manifest = m
        self._segments = {**self._segments, **{e["name"]: _Segment(self.path, e, self.spec) for e in new}}
        self._deleted |= {int(i) for i in deleted}
        self._build_state(None, None)
        self._dirty = True

    def remove(self, ids: Iterable[int]) -> None:
        """Remove clips by id (durable at the next :meth:`commit`)."""
        self._writable()
        ids = np.asarray(list(ids), np.int64)
        if len(ids) == 0:
            return
        pos, found = self._locate(ids)
        missing = [int(i) for i, f in zip(ids, found) if not f and int(i) not in self._pending]
        if missing:
            raise StoreError(f"cannot remove clip id(s) {missing[:5]} from {self.path}: not in "
                             "the store")
        self._dirty = True
        pend = [int(i) for i in ids if int(i) in self._pending]
        for cid in pend:
            del self._pending[cid]
        self._pend_ids = np.array(sorted(self._pending), np.int64)
        committed = ids[found]
        if len(committed):
            self._deleted.update(int(i) for i in committed)
            keep = np.ones(len(self._ids), bool)
            keep[pos[found]] = False
            for name in ("_ids", "_segi", "_rows", "_start", "_end", "_src", "_lev"):
                setattr(self, name, getattr(self, name)[keep])
            self._order = np.argsort(self._ids, kind="stable")
            self._sorted_ids = self._ids[self._order]
        self._tindex.remove(ids)
        if self._vindex.kind == "hnsw":
            self._dead = self._dead | set(int(i) for i in ids)
        else:
            self._vindex.remove(ids)

    def bytes_estimate(self) -> int:
        """Bytes the committed files take plus an estimate for pending clips."""
        b = int(self._manifest["counts"].get("bytes", 0))
        tok_bytes = 2 if self.config.token_dtype == "float16" else 4
        for c in self._pending.values():
            b += clip_bytes(c, tok_bytes)
        return b

    def commit(self) -> None:
        """Make every change durable and visible to readers, atomically.

        When the store is over its capacity, older clips are consolidated first.
        """
        self._writable()
        from .consolidate import consolidate_store

        stats = consolidate_store(self)
        if not self._dirty:  # nothing to commit
            return
        m = dict(self._manifest)
        gen = int(m["generation"]) + 1
        n_live = len(self)
        kind_cfg = self.config.index
        use_ivf = kind_cfg == "ivf" or (kind_cfg == "auto" and n_live > self.config.approx_threshold)
        centroids_name = m.get("centroids")
        qgen = int(m.get("qgen", 0))
        retrain = use_ivf and (centroids_name is None or
                               n_live > 8 * max(1, int(m.get("ivf_trained_on", 0))))
        segments = [e for e in m["segments"]]
        deleted = set(self._deleted)
        pending = [self._pending[i] for i in sorted(self._pending)]
        ivf: VecIndex | None = None
        if use_ivf and not retrain and self._vindex.kind == "ivf":
            ivf = self._vindex
        compact = retrain or len(segments) >= self.config.max_segments or (
            len(deleted) > 0.25 * max(1, n_live + len(deleted)))
        if retrain and n_live > 0:
            allv = self.vectors(self.ids())
            cents = VecIndex.train_centroids(allv, ivf_nlist(n_live))
            qgen += 1
            centroids_name = f"centroids-{qgen}.npy"
            atomic_save_npy(self.path / centroids_name, cents)
            ivf = VecIndex("ivf", self.spec.vector_dim, nprobe=self.config.nprobe,
                           centroids=cents)
            m["ivf_trained_on"] = n_live
        if compact:
            all_clips = self.get(self.ids()) if n_live else []
            entry = _write_segment(self.path, f"seg-{gen:08d}", all_clips,
                                   self.spec.vector_dim, self.spec.text_dim,
                                   self.config.token_dtype, ivf if use_ivf else None, qgen)
            segments = [entry] if all_clips else []
            deleted = set()
        elif pending:
            entry = _write_segment(self.path, f"seg-{gen:08d}", pending, self.spec.vector_dim,
                                   self.spec.text_dim, self.config.token_dtype,
                                   ivf if use_ivf else None, qgen)
            segments.append(entry)
        deleted_name = None
        if deleted:
            deleted_name = f"deleted-{gen:08d}.npy"
            atomic_save_npy(self.path / deleted_name, np.array(sorted(deleted), np.int64))
        hnsw_name = None
        if kind_cfg == "hnsw" or (self._vindex.kind == "hnsw"):
            hnsw_name = f"hnsw-{gen:08d}.faiss"
            self._write_hnsw(hnsw_name)
        # counts and sources
        t = self.table()
        sources = {}
        for code in np.unique(t["source"]):
            mask = t["source"] == code
            sources[str(t["source_names"][code])] = [float(t["start"][mask].min()),
                                                     float(t["end"][mask].max())]
        counts = dict(m["counts"])
        counts["clips"] = n_live
        counts["consolidated"] = int(counts.get("consolidated", 0)) + stats.get("consolidated", 0)
        counts["merges"] = int(counts.get("merges", 0)) + stats.get("merges", 0)
        lv, lc = np.unique(t["level"], return_counts=True)
        counts["levels"] = {str(int(a)): int(b) for a, b in zip(lv, lc)}
        size = 0
        for e in segments:
            size += sum(int(v) for v in e["sizes"].values())
        counts["bytes"] = size
        files = {name: file_check(self.path / name)
                 for name in (deleted_name, centroids_name if use_ivf else None, hnsw_name) if name}
        for name in _ATTACHABLE & (self._attached | set(m.get("files") or {})):
            if (self.path / name).is_file():
                files[name] = file_check(self.path / name)
        m.update({"generation": gen, "next_id": self._next_id, "segments": segments, "files": files,
                  "deleted": deleted_name, "centroids": centroids_name if use_ivf else None,
                  "qgen": qgen, "hnsw": hnsw_name, "committed": time.time(),
                  "sources": sources, "counts": counts,
                  "memory_config": dataclasses.asdict(self.config)})
        atomic_write_json(self.path / MANIFEST, m)  # the commit point
        prev = self._manifest
        self._pending = {}
        self._dirty = False
        self._previous_manifest = prev
        # the writer's indexes already hold this state unless they were retrained/rebuilt
        keep = not retrain and (self._vindex.kind == "ivf") == use_ivf and (
            hnsw_name is None or self._vindex.kind == "hnsw")
        self._load_manifest(m, None, keep_index=keep)
        self._gc()

    def attach(self, name: str) -> None:
        """Record ``name`` (a file the caller keeps in the store directory, e.g. the config it
        was built with) in the manifest at each commit, so it is verified like the data."""
        if name not in _ATTACHABLE:
            raise StoreError(f"cannot attach {name!r} to the store {self.path}; attachable: "
                             f"{', '.join(sorted(_ATTACHABLE))}")
        self._writable()
        self._attached.add(name)
        self._dirty = True

    def _write_hnsw(self, name: str) -> None:
        """Write the HNSW graph of the live clips (rebuilt when many were removed)."""
        idx = self._vindex
        dead = self._dead
        if idx.kind != "hnsw" or len(dead) > 0.1 * max(1, idx.ntotal):
            idx = VecIndex("hnsw", self.spec.vector_dim, ef_search=self.config.ef_search,
                           hnsw_m=self.config.hnsw_m)
            ids = self.ids()
            if len(ids):
                idx.add(ids, self.vectors(ids))
            self._vindex = idx
            self._dead = set()
        data = faiss.serialize_index(idx.index)
        atomic_write(self.path / name, lambda fh: fh.write(data.tobytes()))

    def _gc(self) -> None:
        """Remove files that neither the current nor the previous manifest names."""
        keep = set()
        for m in (self._manifest, getattr(self, "_previous_manifest", None)):
            if not m:
                continue
            for e in m.get("segments", []):
                keep.add(e["name"])
            for key in ("deleted", "centroids", "hnsw"):
                if m.get(key):
                    keep.add(m[key])
        for p in self.path.iterdir():
            if _is_store_file(p.name) and p.name != MANIFEST and p.name not in keep:
                remove_path(p)
        # stale assign files inside kept segments
        for e in self._manifest.get("segments", []):
            seg_dir = self.path / e["name"]
            for p in seg_dir.glob("assign-*.npy"):
                if p.name != e.get("assign"):
                    p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ readers
    def refresh(self) -> bool:
        """Re-read the latest commit; True when it changed. Pending changes are kept."""
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        m = self._read_manifest()
        if m["generation"] == self._manifest.get("generation"):
            return False
        last: Exception | None = None
        for _ in range(20):
            try:
                self._load_manifest(m, None)
                return True
            except FileNotFoundError as err:
                last = err
                time.sleep(0.05)
                m = self._read_manifest()
        raise StoreError(f"the store {self.path} names a file that does not exist ({last}); "
                         "fix: the store is damaged, re-index into a new --store")

    def close(self) -> None:
        """Release the store (uncommitted changes are discarded)."""
        if self._closed:
            return
        if self._dirty:
            log.warning("closing the store %s with uncommitted changes; they are discarded",
                        self.path)
        self._closed = True
        self._release_lock()

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"MemoryStore({str(self.path)!r}, mode={self.mode!r}, clips={len(self)}, "
                f"generation={self._manifest.get('generation')})")


_TEMP_NAME = re.compile(r"\.tmp-seg-\d{8,}-\d+|\.(manifest\.json|deleted-\d{8,}\.npy|"
                        r"centroids-\d+\.npy|hnsw-\d{8,}\.faiss)\.\w+\.tmp")


def _is_store_file(name: str) -> bool:
    """A name the store writes (other files in its directory are never touched)."""
    return (name == MANIFEST or any(_NAMES[k].fullmatch(name) for k in
                                    ("segment", "deleted", "centroids", "hnsw"))
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
    return b
