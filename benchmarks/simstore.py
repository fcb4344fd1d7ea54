"""Build a long simulated store from the real clip memories of a short one.

The base store (e.g. a NIAH haystack's store) is kept as it is, needles and all; after it,
its clips are repeated with shifted times and new ids, leaving out every clip that overlaps
a needle (so each needle is in the store once and a question about it has one right
answer). Copies are written once as one block segment of about an hour through the store's
own writer; longer stores add that block again and again as further segments whose bulky
files (tokens, vectors, keyframes) are hard links to the block's and whose ids, times and
metadata are rewritten. The store is then committed through the store's writer (sizes,
checksums, the token index of every clip), so it opens and answers like any other.

    python benchmarks/simstore.py BASE_STORE OUT_STORE --seconds 604800 --haystack HAYSTACK.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory import tokenindex  # noqa: E402
from memory.store import MemoryStore  # noqa: E402
from streamvid.config import Config  # noqa: E402
from streamvid.types import ClipMemory, FrameObjects, SpeechSegment  # noqa: E402

log = logging.getLogger("simstore")

BLOCK_SECONDS = 3600.0
LINKED = ("vectors", "text_vectors", "has_text", "source", "level", "tok_off", "tokens",
          "token_positions", "jpeg", "jpeg_off")   # identical in every copy: hard links
# the writer of the built store: one segment per block and an exact clip-vector index (with
# the defaults, a week of clips would be compacted into one segment and get IVF lists at its
# first commit); readers open it with the base's config (config.yaml is linked unchanged)
MEMORY = {"max_segments": 1_000_000, "index": "flat"}


def needle_spans(haystack: Path) -> list[tuple[float, float]]:
    return [(float(n["start"]), float(n["end"])) for n in json.loads(haystack.read_text())["needles"]]


def _shift_clip(c: ClipMemory, dt: float) -> ClipMemory:
    return dataclasses.replace(
        c, id=-1, start=c.start + dt, end=c.end + dt,
        keyframes=tuple(t + dt for t in c.keyframes),
        token_times=None if c.token_times is None else np.asarray(c.token_times) + dt,
        text_times=tuple(t + dt for t in c.text_times),
        objects=tuple(FrameObjects(fo.time + dt, fo.objects) for fo in c.objects),
        speech=tuple(SpeechSegment(s.start + dt, s.end + dt, s.text,
                                   tuple((w, a + dt, b + dt) for w, a, b in s.words))
                     for s in c.speech))


def _shift_meta(row: dict, dt: float, cid: int) -> dict:
    row = dict(row, id=cid)
    row["keyframes"] = [t + dt for t in row.get("keyframes", ())]
    row["text_times"] = [round(t + dt, 3) for t in row.get("text_times", ())]
    row["objects"] = [[round(t + dt, 3), dets] for t, dets in row.get("objects", ())]
    if row.get("speech"):
        row["speech"] = [[text, a + dt, b + dt, [[w, x + dt, y + dt] for w, x, y in words]]
                         for text, a, b, words in row["speech"]]
    return row


def _memo_centroids() -> None:
    """Copies share their tokens: their token-index centroids are computed once."""
    plain = tokenindex.clip_centroids
    memo: dict[bytes, np.ndarray] = {}

    def cached(clip: ClipMemory) -> np.ndarray:
        if clip.tokens is None:
            return plain(clip)
        key = hashlib.blake2b(np.ascontiguousarray(clip.tokens).tobytes(), digest_size=16).digest()
        if key not in memo:
            memo[key] = plain(clip)
        return memo[key]

    tokenindex.clip_centroids = cached


def build(base: Path, out: Path, seconds: float, haystack: Path | None) -> dict:
    t0 = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    cfg = Config.load(base / "config.yaml")
    mem = dataclasses.replace(cfg.memory, **MEMORY)
    src = MemoryStore.open(base, None, mode="r")
    clips = src.get(src.ids())
    span = max(c.end for c in clips)
    spans = needle_spans(haystack) if haystack else []
    plain = [c for c in clips if not any(c.start < b + 1.0 and c.end > a - 1.0 for a, b in spans)]
    copies = max(0, int(np.ceil(seconds / span)) - 1)
    per_block = max(1, min(copies, int(round(BLOCK_SECONDS / span))))
    blocks = int(np.ceil(copies / per_block)) if copies else 0
    _memo_centroids()
    # the base as it is (its own files, hard-linked), then the first block through the writer
    shutil.copytree(base, out, copy_function=os.link,
                    ignore=shutil.ignore_patterns(".writer.lock"))
    with MemoryStore.open(out, None, mode="a", config=mem) as w:
        if blocks:
            w.add([_shift_clip(c, k * span) for k in range(1, per_block + 1) for c in plain])
        w.commit()
        block = [e for e in w.manifest["segments"] if e["name"] != w.manifest["segments"][0]["name"]]
    if blocks > 1:
        bdir = out / block[0]["name"]
        meta = [json.loads(line) for line in (bdir / "meta.jsonl").read_text().splitlines() if line]
        ids0 = np.load(bdir / "ids.npy")
        start, end = np.load(bdir / "start.npy"), np.load(bdir / "end.npy")
        times = np.load(bdir / "token_times.npy")
        with MemoryStore.open(out, None, mode="a", config=mem) as w:
            next_id = int(w.manifest["next_id"])
            entries = []
            for h in range(1, blocks):
                dt = h * per_block * span
                name = f"{block[0]['name']}-{h}"
                d = out / name
                d.mkdir()
                for key in LINKED:
                    if (bdir / f"{key}.npy").exists():
                        os.link(bdir / f"{key}.npy", d / f"{key}.npy")
                ids = np.arange(next_id, next_id + len(ids0), dtype=np.int64)
                next_id += len(ids0)
                np.save(d / "ids.npy", ids)
                np.save(d / "start.npy", start + dt)
                np.save(d / "end.npy", end + dt)
                np.save(d / "token_times.npy", (times + dt).astype(times.dtype))
                (d / "meta.jsonl").write_text("".join(
                    json.dumps(_shift_meta(r, dt, int(i)), ensure_ascii=False) + "\n"
                    for r, i in zip(meta, ids)), encoding="utf-8")
                entries.append({"name": name, "rows": block[0]["rows"],
                                "sources": block[0]["sources"]})
            w.adopt_segments(entries, next_id=next_id)
            w.commit()
    with MemoryStore.open(out, None, mode="r") as r:
        lo, hi = r.span()
        info = {"clips": len(r), "seconds": hi - lo, "segments": len(r.manifest["segments"]),
                "token_index": r.token_index().kind, "copies": copies,
                "build_s": round(time.perf_counter() - t0, 1)}
    (out / "simstore.json").write_text(json.dumps(info))
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seconds", type=float, required=True, help="length of the built store")
    ap.add_argument("--haystack", type=Path, default=None,
                    help="the base haystack's JSON: clips overlapping its needles are not copied")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(build(a.base, a.out, a.seconds, a.haystack)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
