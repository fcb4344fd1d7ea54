"""Indexing a corpus: many videos (and long videos in time ranges) on many workers, one store.

The plan is a list of work items, one per video or per ``--split-long`` range of a long
video. Each item is indexed by :func:`pipelines.index.index_video` into its own shard store
under ``STORE/shards/``; the finished shards are merged, in plan order, into ``STORE``
(:func:`memory.merge.merge_stores`). A shard is named by the content digest of its video, its
time range and the indexing config, and is moved into place only when complete, so a re-run
skips what is done and a run that died resumes. Items run in-process (``engine="local"``) or
on the actors of a Ray cluster (``engine="ray"``, models loaded once per actor); a worker
process that dies has its item retried on a fresh worker, an input that cannot be indexed
fails alone and is listed in the summary.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from streamvid.config import Config
from streamvid.errors import ConfigError, MissingDependencyError, SourceError, StoreError
from streamvid.io import atomic_write_json, file_digest
from streamvid.progress import progress as make_progress
from streamvid.types import format_time

log = logging.getLogger(__name__)

SHARDS = "shards"
CORPUS_FILE = "corpus.json"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ts",
                  ".flv", ".wmv")
# what makes two shards of the same video range the same (the memory section is applied at
# merge time)
_SHARD_SECTIONS = ("source", "encoder", "cache", "compress", "describe", "clips", "text")


@dataclass(frozen=True)
class WorkItem:
    """One video, or one time range of a long video, to index into one shard."""

    uri: str
    source_id: str             # name in the store: the same for every range of a video
    key: str                   # digest of (content, range, config): the shard's name
    start: float = 0.0
    duration: float | None = None  # None: to the end
    part: int = 0
    parts: int = 1
    length: float | None = None  # expected seconds of video, when the plan probed it

    @property
    def label(self) -> str:
        if self.parts == 1:
            return self.uri
        end = "end" if self.duration is None else format_time(self.start + self.duration)
        return f"{self.uri} [{format_time(self.start)}–{end}]"

    def config(self, base: Config) -> Config:
        return base.replace(source=dataclasses.replace(base.source, start=self.start,
                                                       duration=self.duration))


@dataclass(frozen=True)
class ItemResult:
    """What became of one work item."""

    key: str
    label: str
    ok: bool
    video_seconds: float = 0.0
    seconds: float = 0.0          # wall-clock time indexing took
    clips: int = 0
    skipped: bool = False         # finished by an earlier run
    attempts: int = 1
    error: str = ""


@dataclass
class CorpusSummary:
    """What one ``index-corpus`` run did."""

    store: str
    engine: str
    workers: int
    inputs: int = 0
    items: int = 0
    results: list[ItemResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, error)
    clips: int = 0
    seconds: float = 0.0
    # where the time went: planning (digests, probes), indexing (workers starting, loading
    # their models and indexing), merging the shards
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def done(self) -> list[ItemResult]:
        return [r for r in self.results if r.ok]

    @property
    def video_seconds(self) -> float:
        return sum(r.video_seconds for r in self.done)

    @property
    def indexed_seconds(self) -> float:
        """Video seconds indexed by this run (not skipped)."""
        return sum(r.video_seconds for r in self.done if not r.skipped)

    @property
    def x_realtime(self) -> float:
        return self.indexed_seconds / self.seconds if self.seconds > 0 else 0.0

    @property
    def retried(self) -> int:
        return sum(r.attempts - 1 for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store, "engine": self.engine, "workers": self.workers,
            "inputs": self.inputs, "items": self.items,
            "indexed": sum(1 for r in self.done if not r.skipped),
            "skipped": sum(1 for r in self.done if r.skipped), "retried": self.retried,
            "failed": len(self.failures), "clips": self.clips,
            "hours": round(self.video_seconds / 3600.0, 4),
            "hours_indexed": round(self.indexed_seconds / 3600.0, 4),
            "seconds": round(self.seconds, 3), "x_realtime": round(self.x_realtime, 2),
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "failures": [{"input": i, "error": e} for i, e in self.failures],
        }

    def lines(self) -> list[str]:
        j = self.to_json()
        out = [
            f"indexed {j['inputs']} inputs ({j['items']} work items: {j['indexed']} indexed, "
            f"{j['skipped']} already done, {j['failed']} failed, {j['retried']} retried) "
            f"with {self.workers} {self.engine} worker{'s' if self.workers != 1 else ''}",
            f"{format_time(self.video_seconds)} of video ({j['hours']:.2f} h) in the store, "
            f"{format_time(self.indexed_seconds)} indexed now in {self.seconds:.1f} s "
            f"({self.x_realtime:.1f}x real time); {self.clips} clips",
        ]
        for inp, err in self.failures:
            out.append(f"failed: {inp}: {err}")
        out.append(f"store: {self.store}")
        return out


# --------------------------------------------------------------------------- planning


def expand_inputs(inputs: Iterable[str]) -> list[str]:
    """Files, folders (their videos, recursively), globs and text files of URIs (one per
    line, ``#`` comments) to a list of video URIs, in order, without repeats."""
    out: list[str] = []
    for raw in inputs:
        s = str(raw)
        p = Path(s)
        if "://" in s:
            found = [s]
        elif p.is_dir():
            found = sorted(str(q) for q in p.rglob("*")
                           if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise SourceError(f"the folder {s} holds no videos ({', '.join(VIDEO_SUFFIXES)}); "
                                  "fix: pass the folder that holds them")
        elif p.is_file() and p.suffix.lower() in (".txt", ".list", ".lst"):
            found = []
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = line if "://" in line or os.path.isabs(line) else str(p.parent / line)
                    found.append(q)
        elif p.exists():
            found = [s]
        elif glob.has_magic(s):
            found = sorted(glob.glob(s, recursive=True))
            if not found:
                raise SourceError(f"the pattern {s} matches no file; fix: check the pattern")
        else:
            found = [s]  # reported as this input's failure when it is read
        out.extend(found)
    return list(dict.fromkeys(out))


def plan(uris: Sequence[str], config: Config, *, split_long: float | None = None
         ) -> tuple[list[WorkItem], list[tuple[str, str]]]:
    """Work items for ``uris`` (a video longer than ``split_long`` seconds in ranges of that
    length), and ``(uri, error)`` of the inputs that cannot be read."""
    from streamvid.sources import open_source

    if split_long is not None and split_long <= 0:
        raise ConfigError(f"--split-long {split_long}: must be a positive number of seconds")
    names = [_source_id(u) for u in uris]
    clash = {n for n in names if names.count(n) > 1}
    fp = config.fingerprint(*_SHARD_SECTIONS)
    items: list[WorkItem] = []
    failed: list[tuple[str, str]] = []
    for uri, name in zip(uris, names):
        sid = uri if name in clash else name
        try:
            digest = _digest(uri)
            duration = None
            if split_long:
                src = open_source(uri, config.source)
                try:
                    duration = src.duration
                finally:
                    src.close()
        except Exception as err:  # noqa: BLE001 - a bad input fails alone
            failed.append((uri, _one_line(err)))
            continue
        s0 = config.source.start
        if split_long and duration and duration - s0 > split_long:
            end = duration if config.source.duration is None else min(duration, s0 + config.source.duration)
            n = math.ceil((end - s0) / split_long - 1e-9)
            ranges = [(s0 + i * split_long, split_long if i < n - 1 else None) for i in range(n)]
            if config.source.duration is not None:
                ranges[-1] = (ranges[-1][0], end - ranges[-1][0])
        else:
            ranges = [(s0, config.source.duration)]
        for i, (start, dur) in enumerate(ranges):
            key = hashlib.sha256(json.dumps([digest, start, dur, fp]).encode()).hexdigest()[:24]
            length = None if not duration else (dur if dur is not None else duration - start)
            items.append(WorkItem(uri, sid, key, start, dur, i, len(ranges), length))
    return items, failed


def _source_id(uri: str) -> str:
    from streamvid.sources._common import default_source_id

    return default_source_id(uri)


def _digest(uri: str) -> str:
    if "://" in uri and not uri.startswith("file://"):
        return "uri:" + hashlib.sha256(uri.encode()).hexdigest()
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
    if not path.is_file():
        raise SourceError(f"video {uri} does not exist; fix: check the path")
    return file_digest(path)


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


# --------------------------------------------------------------------------- workers


def index_item(item: WorkItem, config: Config, shards: Path, models=None) -> ItemResult:
    """Index one work item into ``shards/<key>`` (moved into place only when complete)."""
    from .index import index_video

    final = shards / item.key
    tmp = shards / f".tmp-{item.key}-{uuid.uuid4().hex[:8]}"
    try:
        summary = index_video(item.uri, tmp, item.config(config), models=models, progress=False,
                              source_id=item.source_id)
        atomic_write_json(tmp / "index.json", {"item": dataclasses.asdict(item),
                                               "summary": summary.to_json()})
        if final.exists():  # another worker finished the same item
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, final)
        return ItemResult(item.key, item.label, True, summary.duration, summary.seconds,
                          summary.clips)
    except Exception as err:  # noqa: BLE001 - a bad input fails alone
        shutil.rmtree(tmp, ignore_errors=True)
        log.debug("indexing %s failed", item.label, exc_info=True)
        return ItemResult(item.key, item.label, False, error=_one_line(err))


def finished(item: WorkItem, shards: Path) -> ItemResult | None:
    """The result of an item an earlier run finished, or None."""
    p = shards / item.key / "index.json"
    if not p.is_file():
        return None
    s = json.loads(p.read_text(encoding="utf-8"))["summary"]
    return ItemResult(item.key, item.label, True, float(s["duration"]), float(s["seconds"]),
                      int(s["clips"]), skipped=True)


def with_threads(config: Config, cpus: int) -> Config:
    """``config`` with every model of the pipeline on ``cpus`` threads: the encoder and the
    detector (torch), OCR (onnxruntime) and the speech recogniser (CTranslate2)."""
    return config.replace(encoder=dataclasses.replace(config.encoder, threads=cpus),
                          describe=dataclasses.replace(config.describe, threads=cpus,
                                                       asr_threads=cpus))


class ShardWorker:
    """A worker process's state: the models, loaded once, and the indexing config.

    ``cpus``: the cores the worker may use; every library in it then runs on that many
    threads (None: as the config says), so that workers side by side do not contend.
    """

    def __init__(self, config: dict[str, Any], cpus: int | None = None):
        import numpy as np

        from .models import Models

        self.config = Config.from_dict(config)
        if cpus:
            import cv2
            import torch

            self.config = with_threads(self.config, cpus)
            torch.set_num_threads(cpus)
            cv2.setNumThreads(cpus)
        self.models = Models(self.config)
        _ = self.models.encoder, self.models.text_encoder, self.models.recogniser
        describer = self.models.describer
        if describer is not None:  # OCR and the detector load on first use: load them now
            blank = np.zeros((64, 64, 3), np.uint8)
            if describer.ocr is not None:
                describer.ocr.read_lines(blank)
            if describer.detector is not None:
                describer.detector.detect(blank)

    def run(self, item: WorkItem, shards: str) -> ItemResult:
        return index_item(item, self.config, Path(shards), self.models)


def _run_local(items: Sequence[WorkItem], config: Config, shards: Path,
               done: Callable[[ItemResult], None], *, cpus: int | None, **_: Any) -> None:
    worker = None
    for item in items:
        worker = worker or ShardWorker(config.to_dict(), cpus)
        done(worker.run(item, str(shards)))


def _run_ray(items: Sequence[WorkItem], config: Config, shards: Path,
             done: Callable[[ItemResult], None], *, workers: int, address: str | None,
             retries: int, cpus: int | None) -> None:
    try:
        import ray
        from ray.exceptions import RayActorError, WorkerCrashedError
    except ImportError as err:
        raise MissingDependencyError("index-corpus --engine ray", "ray", "ray") from err
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kw["address"] = address
        else:
            kw["num_cpus"] = workers * (cpus or 1)
        ray.init(**kw)
        started = True
    try:
        actor_cls = ray.remote(num_cpus=cpus or 1, max_restarts=0)(ShardWorker)
        cfg = config.to_dict()
        # the longest items first, so that no worker is left with a long one at the end
        order = sorted(items, key=lambda it: -(it.length or 0.0))
        queue = deque((it, 1) for it in order)
        idle = [actor_cls.remote(cfg, cpus) for _ in range(min(workers, len(items)))]
        running: dict[Any, tuple[Any, WorkItem, int]] = {}
        while queue or running:
            while queue and idle:
                item, attempt = queue.popleft()
                actor = idle.pop()
                running[actor.run.remote(item, str(shards))] = (actor, item, attempt)
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, item, attempt = running.pop(ref)
            try:
                result = dataclasses.replace(ray.get(ref), attempts=attempt)
            except (RayActorError, WorkerCrashedError) as err:
                ray.kill(actor)
                actor = actor_cls.remote(cfg, cpus)  # a fresh worker in place of the dead one
                if attempt <= retries:
                    log.warning("worker died on %s; retrying (%d of %d)", item.label, attempt,
                                retries)
                    queue.appendleft((item, attempt + 1))
                    idle.append(actor)
                    continue
                result = ItemResult(item.key, item.label, False, attempts=attempt,
                                    error=f"its worker died {attempt} times ({_one_line(err)})")
            idle.append(actor)
            done(result)
        for actor in idle:
            ray.kill(actor)
    finally:
        if started:
            ray.shutdown()


ENGINES = {"local": _run_local, "ray": _run_ray}


# --------------------------------------------------------------------------- the job


def index_corpus(inputs: Sequence[str], store: str | os.PathLike[str], config: Config, *,
                 engine: str = "local", workers: int = 1, address: str | None = None,
                 split_long: float | None = None, retries: int = 2,
                 worker_cpus: int | None = None, progress: bool = True) -> CorpusSummary:
    """Index ``inputs`` (files, folders, globs, text files of URIs) into one store at ``store``.

    ``worker_cpus``: cores per worker; every library in a worker runs on that many threads
    and a Ray actor reserves that many CPUs (default: 1 on Ray; in-process, as the config says).

    Finished items of earlier runs with the same config are skipped; the store is rebuilt
    from the shards when the set of finished items changed.
    """
    from memory.merge import merge_stores
    from memory.store import MemoryStore

    from .models import INDEX_SECTIONS

    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: expected at least 1")
    if worker_cpus is not None and worker_cpus < 1:
        raise ConfigError(f"--worker-cpus {worker_cpus}: expected at least 1")
    if worker_cpus is None and engine == "ray":
        worker_cpus = 1
    t0 = time.perf_counter()
    store = Path(store)
    state_path = store / CORPUS_FILE
    if (store / "manifest.json").exists():
        if not state_path.exists():
            raise StoreError(f"the store {store} was not built by index-corpus; fix: pass a new "
                             "--store (index-corpus rebuilds its store from its shards)")
    shards = store / SHARDS
    shards.mkdir(parents=True, exist_ok=True)
    for p in shards.glob(".tmp-*"):  # what workers that died left half-written
        shutil.rmtree(p, ignore_errors=True)
    uris = expand_inputs(inputs)
    if not uris:
        raise SourceError("index-corpus: no inputs; fix: pass video files, folders, globs or "
                          "a text file of URIs")
    items, failed = plan(uris, config, split_long=split_long)
    t_plan = time.perf_counter()
    summary = CorpusSummary(str(store), engine, workers, inputs=len(uris), items=len(items))
    summary.failures.extend(failed)
    results: dict[str, ItemResult] = {}
    todo = []
    for item in items:
        r = finished(item, shards)
        if r is not None:
            results[item.key] = r
        else:
            todo.append(item)
    bar = make_progress(total=len(todo), desc="indexing corpus", unit="item", enabled=progress)

    def done(r: ItemResult) -> None:
        results[r.key] = r
        bar.update(1)
        bar.set_postfix_str(f"{sum(x.video_seconds for x in results.values()) / 3600:.2f} h")
        if not r.ok:
            log.warning("%s failed: %s", r.label, r.error)

    try:
        if todo:
            log.info("%d of %d work items to index (%s engine, %d workers)", len(todo),
                     len(items), engine, workers)
            ENGINES[engine](todo, config, shards, done, workers=workers, address=address,
                            retries=retries, cpus=worker_cpus)
    finally:
        bar.close()
    t_index = time.perf_counter()
    summary.results = [results[it.key] for it in items if it.key in results]
    summary.failures.extend((r.label, r.error) for r in summary.results if not r.ok)
    keys = [it.key for it in items if results.get(it.key) is not None and results[it.key].ok]
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if keys and (state.get("shards") != keys or not (store / "manifest.json").exists()):
        base = config.replace(source=dataclasses.replace(config.source, start=0.0, duration=None))
        spec_config = {k: v for k, v in base.to_dict().items() if k in INDEX_SECTIONS}
        merged = merge_stores([shards / k for k in keys], store, config=config.memory,
                              spec_config=spec_config)
        base.save(store / "config.yaml")
        atomic_write_json(state_path, {"shards": keys, "inputs": uris})
        summary.clips = merged.clips
    elif keys:
        with MemoryStore.open(store, mode="r") as s:
            summary.clips = len(s)
    end = time.perf_counter()
    summary.seconds = end - t0
    summary.phases = {"plan": t_plan - t0, "index": t_index - t_plan, "merge": end - t_index}
    return summary
