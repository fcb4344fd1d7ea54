"""Merging stores: shards built apart (one per video or time range, on many machines) into one.

A shard's segments are carried file by file: every file of a segment is copied (hard-linked
where the file system allows), and only the clip ids are renumbered — ``ids.npy`` and the
``id`` of each ``meta.jsonl`` line. Whatever per-clip arrays and metadata a segment holds
therefore travel without code here. IVF assignments are dropped; the target's commit builds
its FAISS index over all clips (IVF centroids are trained once, on the merged clips).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from streamvid.config import MemoryConfig
from streamvid.errors import StoreError
from streamvid.io import fsync_dir

from .store import MemoryStore, StoreSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeSummary:
    """What a merge wrote."""

    store: str
    shards: int
    clips: int
    sources: tuple[str, ...]


def merge_stores(shards: Sequence[str | os.PathLike[str]], target: str | os.PathLike[str], *,
                 config: MemoryConfig | None = None,
                 spec_config: dict[str, Any] | None = None) -> MergeSummary:
    """Write the clips of ``shards``, in order, into a new store at ``target``.

    Ids are renumbered shard after shard (a shard's clips keep their order), so the result
    equals a store that indexed the same inputs one after another. Clips of one source in
    several shards (the time ranges of a long video) read as that one source. ``target``
    is replaced when it holds a store; ``spec_config`` replaces the config recorded in the
    shards' spec (a shard of a time range records its range).
    """
    if not shards:
        raise StoreError(f"nothing to merge into {target}: no shards given; fix: pass the "
                         "shard stores to merge")
    target = Path(target)
    with MemoryStore.open(shards[0], mode="r") as first:
        spec = first.spec
    if spec_config is not None:
        spec = StoreSpec(spec.encoder_id, spec.vector_dim, spec.text_id, spec.text_dim,
                         dict(spec_config))
    out = MemoryStore.open(target, spec, mode="w", config=config)
    try:
        gen = out.generation + 1
        base = int(out.manifest["next_id"])
        entries: list[dict[str, Any]] = []
        deleted: list[int] = []
        for shard in shards:
            with MemoryStore.open(shard, spec, mode="r") as src:
                live = src.ids()
                m = src.manifest
                for e in m["segments"]:
                    name = f"seg-{gen:08d}-{len(entries):06d}"
                    ids = _copy_segment(Path(shard) / e["name"], target / name, base)
                    deleted.extend((ids[~np.isin(ids - base, live)]).tolist())
                    entries.append({**e, "name": name})
                base += int(m["next_id"])
        out.adopt_segments(entries, next_id=base, deleted=deleted)
        out.commit()
        summary = MergeSummary(str(target), len(shards), len(out), tuple(out.sources()))
    finally:
        out.close()
    log.info("merged %d shards into %s: %d clips", len(shards), target, summary.clips)
    return summary


def _copy_segment(src: Path, dst: Path, offset: int) -> np.ndarray:
    """Copy the segment directory ``src`` to ``dst`` with every clip id moved by ``offset``;
    returns the new ids."""
    tmp = dst.parent / f".tmp-{dst.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    new_ids = np.zeros(0, np.int64)
    for p in sorted(src.iterdir()):
        if not p.is_file() or p.name.startswith("assign-"):
            continue
        q = tmp / p.name
        if p.name == "ids.npy":
            new_ids = np.load(p, allow_pickle=False).astype(np.int64) + offset
            _write(q, lambda fh: np.save(fh, new_ids, allow_pickle=False))
        elif p.name == "meta.jsonl":
            lines = []
            for line in p.read_text(encoding="utf-8").splitlines():
                if line:
                    d = json.loads(line)
                    if "id" in d:
                        d["id"] = int(d["id"]) + offset
                    line = json.dumps(d, ensure_ascii=False)
                lines.append(line)
            text = "\n".join(lines) + ("\n" if lines else "")
            _write(q, lambda fh: fh.write(text.encode("utf-8")))
        else:
            try:
                os.link(p, q)  # segments are immutable: a link is a copy
            except OSError:
                shutil.copyfile(p, q)
    fsync_dir(tmp)
    os.replace(tmp, dst)
    return new_ids


def _write(path: Path, write) -> None:
    with open(path, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
