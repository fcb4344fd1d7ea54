"""Indexing: a video (file, camera, stream) into a clip-memory store.

The stages run in one direction — source -> feature cache -> keyframes -> pruner -> clip
builder -> store — each a push/flush stage, so the same loop serves a file (flushed at the
end) and a live stream (committed every ``memory.commit_every`` seconds until stopped).
A file is committed every ``memory.commit_clips`` clips, so memory stays flat on any length
and a killed run keeps every clip committed before it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import math
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from streamvid.config import Config
from streamvid.describe.speech import SpeechDescriber
from streamvid.errors import StoreError
from streamvid.io import remove_path
from streamvid.progress import progress as make_progress
from streamvid.progress import status
from streamvid.types import ClipMemory, Frame, SpeechSegment

from .models import Models
from .stages import FLUSH, overlap, sequential

log = logging.getLogger(__name__)


@dataclass
class IndexSummary:
    """What one indexing run did."""

    source_id: str
    store: str
    duration: float = 0.0          # seconds of video read
    frames: int = 0                # frames sampled
    clips: int = 0                 # clips added
    seconds: float = 0.0           # wall-clock time taken
    frames_reused: int = 0         # frames whose features came from the cache
    tokens_total: int = 0          # tokens the encoder produced (or reused) for sampled frames
    tokens_recomputed: float = 0.0  # tokens actually computed by the encoder
    tokens_kept: int = 0           # tokens kept by the pruner
    described: int = 0             # frames described (labels / OCR)
    decode_errors: int = 0
    dropped: int = 0
    reconnects: int = 0
    truncated: bool = False
    stopped: bool = False          # a live run stopped by the user or --duration
    load_seconds: float = 0.0      # loading the models (not part of ``seconds``)
    audio: str = ""                # "" no audio track, "speech" transcribed, "audio only", "not transcribed"
    audio_seconds: float = 0.0     # seconds of audio read
    voiced_seconds: float = 0.0    # of which voiced (transcribed)
    asr_seconds: float = 0.0       # transcription time, in its own thread beside the frames
    speech_segments: int = 0       # transcript segments stored
    audio_errors: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def x_realtime(self) -> float:
        return self.duration / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_minute(self) -> float:
        return self.tokens_kept / (self.duration / 60.0) if self.duration > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["x_realtime"] = round(self.x_realtime, 2)
        d["tokens_per_minute"] = round(self.tokens_per_minute, 1)
        d["stage_seconds"] = {k: round(v, 3) for k, v in self.stage_seconds.items()}
        d["seconds"] = round(self.seconds, 3)
        d["duration"] = round(self.duration, 3)
        return d

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        from streamvid.types import format_time

        reuse = f"{self.frames_reused}/{self.frames} frames reused"
        if self.tokens_total:
            reuse += f", {100.0 * (1 - self.tokens_recomputed / self.tokens_total):.0f}% of tokens reused"
        out = [
            f"indexed {self.source_id}: {format_time(self.duration)} of video, {self.frames} frames, "
            f"{self.clips} clips in {self.seconds:.1f} s ({self.x_realtime:.1f}x real time)",
            f"cache: {reuse}; pruner: {self.tokens_kept} tokens kept "
            f"({self.tokens_per_minute:.0f} per minute of video)",
            "stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items())
            + f" (models loaded in {self.load_seconds:.1f} s before)",
        ]
        notes = []
        if self.decode_errors:
            notes.append(f"{self.decode_errors} undecodable packets skipped")
        if self.truncated:
            notes.append("the file ends early (truncated)")
        if self.dropped:
            notes.append(f"{self.dropped} live frames dropped")
        if self.reconnects:
            notes.append(f"{self.reconnects} reconnects")
        if self.audio_errors:
            notes.append(f"{self.audio_errors} undecodable audio packets skipped")
        if self.audio == "audio only":
            out.append(f"audio only (no video track): the speech memory alone — "
                       f"{self.speech_segments} speech segments from {self.audio_seconds:.1f} s of audio")
        elif self.audio == "speech":
            out.append(f"speech: {self.speech_segments} segments from {self.voiced_seconds:.1f} s "
                       f"of voiced audio (of {self.audio_seconds:.1f} s)")
        elif self.audio:
            out.append(f"audio: {self.audio} (describe.asr is off)")
        if notes:
            out.append("notes: " + "; ".join(notes))
        out.append(f"store: {self.store}")
        return out


class _Timer:
    """Seconds spent per stage (stages in their own threads add up to more than the wall time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        with self._lock:
            self.seconds[stage] += now - since
        return now


class Indexer:
    """Runs the indexing stages for one source into an open store.

    With ``commit_clips`` > 0 the store is committed as soon as that many clips were built
    since the last commit (files), so a kill loses fewer than that many.
    """

    def __init__(self, config: Config, store, models: Models, source_id: str, timer: _Timer,
                 *, commit_clips: int = 0, batch_size: int | None = None):
        from streamvid.cache import create_cache
        from streamvid.compress import create_clip_builder, create_keyframe_selector, create_pruner

        self.config = config
        self.store = store
        self.models = models
        self.timer = timer
        # live sessions encode each frame as it comes (batch_size=1): batches would add lag
        self.cache = create_cache(models.encoder, config.cache,
                                  batch_size=batch_size or config.encoder.batch_size)
        self.keyframes = create_keyframe_selector(config.compress)
        self.pruner = create_pruner(config.compress)
        self.builder = create_clip_builder(config.clips, source_id=source_id)
        self.describer = models.describer
        d = config.describe
        self._local_labels = bool(d.labels and d.local_labels and self.describer is not None
                                  and getattr(self.describer, "labels", None) is not None)
        self._encoding: dict[int, Frame] = {}   # frames in the encode stage (by index)
        self._frames: dict[int, Frame] = {}
        # pixels of frames whose clip is not built yet (by pts): the clip's keyframe picture
        # is taken from them; at most a clip's and the pruner's window of frames
        self._images: dict[float, Any] = {}
        self._descriptions: dict[int, Any] = {}
        self._pending: list[ClipMemory] = []
        self.clips_built = 0
        self.clips_committed = 0
        self.commits = 0
        self.commit_clips = commit_clips
        self.summary_counts: dict[str, float] = defaultdict(float)
        self.done_pts: float | None = None   # the last frame through encoding and describing
        self.speech = None      # a SpeechDescriber while the source's audio is transcribed
        self._said: set[int] = set()   # indices of the speech segments stored with a clip
        self.source_id = source_id

    # ------------------------------------------------------------------ stages
    def push(self, frame: Frame) -> None:
        """Encode, describe and build clips from ``frame``, one stage after the other."""
        for fr, feats in self.encode(frame):
            self.take(fr, feats, self.describe(fr, feats))

    def encode(self, frame: Frame | None) -> list[tuple[Frame | None, Any]]:
        """The encode stage: ``(frame, features)`` of the frames whose features are known now,
        in frame order (the feature cache batches); ``None`` encodes what it still holds."""
        if frame is not None:
            self._encoding[frame.index] = frame
        t = time.perf_counter()
        feats = self.cache.push(frame) if frame is not None else self.cache.flush()
        self.timer.add("encode", t)
        return [(self._encoding.pop(f.index, None), f) for f in feats]

    def describe(self, frame: Frame | None, feats, *, objects: bool = True) -> Any:
        """The describe stage: the frame's description (labels, text and, unless ``objects``
        is False, objects), or None when the describer skips it."""
        if self.describer is None or frame is None:
            return None
        t = time.perf_counter()
        desc = self.describer.maybe_describe(frame, feats, objects=objects)
        self.timer.add("describe", t)
        return desc

    def detect(self, frame: Frame | None, feats, desc) -> Any:
        """The detect stage: ``desc`` (from ``describe(..., objects=False)``) with the objects."""
        if self.describer is None or frame is None or desc is None:
            return desc
        t = time.perf_counter()
        desc = self.describer.add_objects(frame, feats, desc)
        self.timer.add("detect", t)
        return desc

    def push_audio(self, chunks) -> None:
        """Hand audio chunks to the speech describer (started by ``index_video``)."""
        if self.speech is not None:
            t = time.perf_counter()
            for ch in chunks:
                self.speech.push(ch)
            self.timer.add("speech", t)

    def flush(self) -> None:
        for fr, feats in self.encode(None):
            self.take(fr, feats, self.describe(fr, feats))
        self.finish()

    def finish(self) -> None:
        """After the last frame went through :meth:`take`: build the last clips, add them."""
        t = time.perf_counter()
        decided = self.keyframes.flush()
        self.timer.add("compress", t)
        self._after_keyframes(decided)
        t = time.perf_counter()
        compressed = self.pruner.flush()
        self.timer.add("compress", t)
        self._after_pruner(compressed)
        self._to_memory(self.builder.flush())
        if self.speech is not None:
            t = time.perf_counter()
            self.speech.finish()   # waits for the transcription thread
            self.timer.add("speech", t)
        self.add_pending()
        self._add_speech_only()

    def take(self, frame: Frame | None, f, desc) -> None:
        """The rest, for one encoded (and described) frame: keyframes, pruner, clips, store."""
        if frame is not None:
            self._frames[f.index] = frame
        c = self.summary_counts
        c["frames_reused"] += int(f.reused)
        c["tokens_total"] += f.tokens.shape[0]
        c["tokens_recomputed"] += f.tokens_recomputed * f.tokens.shape[0]
        if desc is not None:
            self._descriptions[f.index] = desc
            c["described"] += 1
        t = time.perf_counter()
        decided = self.keyframes.push(f, image=None if frame is None else frame.image)
        self.timer.add("compress", t)
        self._after_keyframes(decided)
        self.done_pts = f.pts

    def _after_keyframes(self, decided) -> None:
        for feats, is_kf, is_sb in decided:
            frame = self._frames.pop(feats.index, None)
            if frame is not None:
                self._images[feats.pts] = frame.image
            t = time.perf_counter()
            out = self.pruner.push(feats, is_keyframe=is_kf, is_shot_boundary=is_sb)
            self.timer.add("compress", t)
            self._after_pruner(out)

    def _after_pruner(self, compressed) -> None:
        for cf in compressed:
            if cf.features.reused and cf.tokens.shape[0]:
                # a reused frame's tokens are copies of an earlier frame's, already kept
                # there: storing them again would put stale content (a needle that has
                # left) into later clips
                cf = dataclasses.replace(cf, tokens=cf.tokens[:0], positions=cf.positions[:0],
                                         weights=cf.weights[:0])
            self.summary_counts["tokens_kept"] += cf.tokens.shape[0]
            desc = self._descriptions.pop(cf.features.index, None)
            t = time.perf_counter()
            clips = self.builder.push(cf, desc)
            self.timer.add("compress", t)
            self._to_memory(clips)

    def _to_memory(self, clips) -> None:
        from streamvid.io import encode_jpeg
        from streamvid.pictures import frame_pictures

        t = time.perf_counter()
        for clip in clips:
            log.debug("clip built: %s %.2f-%.2f s", clip.source_id, clip.start, clip.end)
            image = self._images.get(clip.keyframe)
            if image is not None:
                clip = dataclasses.replace(clip, keyframe_jpeg=encode_jpeg(image))
            if self.config.memory.frame_pictures:
                clip = dataclasses.replace(clip, frame_pictures=frame_pictures(
                    [(pts, im) for pts, im in sorted(self._images.items())
                     if clip.start <= pts < clip.end], self.config.memory.frame_pictures))
            # later clips start at or after this one's end
            self._images = {pts: im for pts, im in self._images.items() if pts >= clip.end}
            self._pending.append(clip)
        self.clips_built += len(clips)
        self.timer.add("memory", t)
        if len(self._pending) >= 32:
            self.add_pending()
        if self.commit_clips and self.clips_built - self.clips_committed >= self.commit_clips:
            self.commit()

    def commit(self) -> None:
        """Add the pending clips and commit the store (durable, visible to readers)."""
        self.add_pending()
        t = time.perf_counter()
        self.store.commit()
        self.timer.add("memory", t)
        self.commits += 1
        self.clips_committed = self.clips_built
        _release_free_heap()
        log.info("committed %d clips (generation %d)", self.clips_committed,
                 self.store.generation)

    def _with_local_labels(self, clip: ClipMemory) -> ClipMemory:
        """Add the labels of the clip's kept tokens (small objects) to its description."""
        from streamvid.compress.clips import describe_clip
        from streamvid.describe.labels import local_labels

        d = self.config.describe
        t = time.perf_counter()
        local = local_labels(self.models.encoder, clip.tokens, min_prob=d.local_min_prob,
                             top=d.local_top)
        self.timer.add("describe", t)
        have = {name for name, _ in clip.labels}
        extra = tuple((n, p) for n, p in local if n not in have)
        if not extra:
            return clip
        labels = clip.labels + extra
        return dataclasses.replace(clip, labels=labels,
                                   description=describe_clip(labels, clip.ocr_text, clip.objects))

    def _with_speech(self, clips: list[ClipMemory]) -> list[ClipMemory]:
        """Clips with the speech segments of the words said during them (whole segments, so
        that answers can quote them), said words in their description."""
        segs = self.speech.segments()
        out = []
        for c in clips:
            said = [i for i, s in enumerate(segs) if s.said_between(c.start, c.end)]
            self._said.update(said)
            out.append(with_speech(c, tuple(segs[i] for i in said)) if said else c)
        return out

    def _add_speech_only(self) -> None:
        """Speech that no clip covers (audio only, or talk after the pictures end) becomes
        clips of its own, one per segment, with no visual content."""
        if self.speech is None:
            return
        dim = int(self.store.spec.vector_dim)
        for i, s in enumerate(self.speech.segments()):
            if i not in self._said:
                self._said.add(i)
                clip = ClipMemory(source_id=self.source_id, start=s.start, end=max(s.end, s.start + 0.01),
                                  vector=np.zeros(dim, np.float32))
                self._pending.append(with_speech(clip, (s,)))
        self.add_pending()

    def add_pending(self) -> None:
        """Embed the pending clips' descriptions and add them to the store (not committed).

        While speech is transcribed, clips whose time is not transcribed yet wait."""
        if not self._pending:
            return
        t = time.perf_counter()
        clips, self._pending = self._pending, []
        if self.speech is not None:
            until = self.speech.done_until
            self._pending = [c for c in clips if c.end > until]
            clips = [c for c in clips if c.end <= until]
            if not clips:
                return
        if self._local_labels:
            clips = [self._with_local_labels(c) for c in clips]
        if self.speech is not None:
            clips = self._with_speech(clips)
        texts = [c.description or " " for c in clips]
        vecs = self.models.text_encoder.encode(texts)
        clips = [dataclasses.replace(c, text_vector=vecs[i].astype("float32"))
                 if c.description else c for i, c in enumerate(clips)]
        self.store.add(clips)
        self.summary_counts["clips"] += len(clips)
        self.timer.add("memory", t)


def with_speech(clip: ClipMemory, segments: tuple[SpeechSegment, ...]) -> ClipMemory:
    """``clip`` with ``segments`` stored and what was said added to its description."""
    said = " ".join(s.text for s in segments)
    desc = f'{clip.description}; said: "{said}"' if clip.description else f'said: "{said}"'
    return dataclasses.replace(clip, speech=segments, description=desc)


def index_video(uri: str, store_dir: str | Path, config: Config, *, models: Models | None = None,
                progress: bool = True, source_id: str | None = None,
                stop: threading.Event | None = None,
                on_commit: Callable[[IndexSummary], None] | None = None) -> IndexSummary:
    """Index ``uri`` into the store at ``store_dir`` (created if missing, else extended).

    A file is committed every ``memory.commit_clips`` clips and at the end; a live source
    every ``memory.commit_every`` seconds, until it ends, ``source.duration`` is reached,
    ``stop`` is set or Ctrl-C. When this call created the store and fails (or is interrupted)
    before its first commit, it removes exactly what it added: a directory that held other
    files is left as it was, and a run that lost the race for the store's lock removes nothing.
    """
    from memory.store import MemoryStore, StoreBusyError
    from streamvid.sources import open_source

    _bound_heaps()
    store_dir = Path(store_dir)
    # recorded before anything is written, so a failed run can undo exactly its own work
    before = _entries(store_dir)
    made = _missing_dirs(store_dir)
    models = models or Models(config)
    timer = _Timer()
    t = time.perf_counter()
    source = open_source(str(uri), config.source)
    timer.add("decode", t)
    # models load once per process: timed apart, so x real time measures indexing itself
    t = time.perf_counter()
    status("loading models (vision encoder, text encoder, describer) ...", progress)
    _ = models.encoder, models.text_encoder, models.describer
    if source.has_audio:
        _ = models.recogniser
    load_seconds = time.perf_counter() - t
    status(f"models ready in {load_seconds:.1f} s", progress)
    t_start = time.perf_counter()
    sid = source_id or source.source_id or str(uri)  # sources name themselves (file name, URI)
    if source.is_live and not source_id:
        sid = f"{sid}@{time.strftime('%Y-%m-%dT%H:%M:%S')}"
    mcfg = config.memory
    indexer = None
    undo = False       # True once this run holds the lock on a store it created itself
    store = None
    indexer: Indexer | None = None
    summary = IndexSummary(source_id=sid, store=str(store_dir), load_seconds=load_seconds)
    try:
        if (store_dir / "manifest.json").exists():
            check_same_config(store_dir, config)
        elif (store_dir / "config.yaml").exists():
            raise StoreError(f"{store_dir} holds a config.yaml but no store, and indexing would "
                             "overwrite it; fix: pass another (new or empty) --store directory")
        spec = models.store_spec()
        try:
            store = MemoryStore.open(store_dir, spec, mode="a", config=mcfg)
        except StoreBusyError:
            raise  # another process owns the store: touch nothing
        except BaseException:
            undo = not (store_dir / "manifest.json").exists()
            raise
        undo = store.created
        if sid in store.sources():
            raise StoreError(
                f"{sid!r} is already in the store {store_dir}; fix: pass --source-id NAME to "
                f"index it again under another name, or use a new --store")
        config.save(store_dir / "config.yaml")
        store.attach("config.yaml")  # its checksum goes into the manifest with the next commit
        indexer = Indexer(config, store, models, sid, timer,
                          commit_clips=0 if source.is_live else mcfg.commit_clips)
        if source.has_audio and models.recogniser is not None:
            indexer.speech = SpeechDescriber(models.recogniser)
        total = source.duration
        bar = make_progress(total=round(total, 1) if total else None, desc=f"indexing {sid}",
                            unit="s", enabled=progress, clock=True)
        last_commit = time.monotonic()
        last_pts = 0.0
        first_pts: float | None = None
        # decode, encode, describe and detect overlap in threads on files; a live source's frames go
        # through one after another as they come (each is encoded at once, batches would lag)
        frames = _decoded(source, indexer, models, timer, stop, summary)
        # labels and OCR, then the detector, each in a stage (a thread) of its own
        stages = [lambda fr: indexer.encode(None if fr is FLUSH else fr),
                  lambda ef: () if ef is FLUSH else [(*ef, indexer.describe(*ef, objects=False))],
                  lambda efd: () if efd is FLUSH else [(*efd[:2], indexer.detect(*efd))]]
        if config.source.overlap and not source.is_live:
            described = overlap(frames, stages, queue_size=config.encoder.batch_size,
                                name="index")
        else:
            described = sequential(frames, stages)
        try:
            for frame, feats, desc in described:
                if first_pts is None:
                    first_pts = feats.pts
                summary.frames += 1
                indexer.take(frame, feats, desc)
                if indexer.done_pts is not None:   # the bar follows encoding, not decoding
                    done = min(indexer.done_pts, total) if total else indexer.done_pts
                    bar.update(round(done - bar.n, 3))
                last_pts = feats.pts
                if source.is_live and time.monotonic() - last_commit >= mcfg.commit_every:
                    indexer.commit()
                    last_commit = time.monotonic()
                    if on_commit is not None:
                        on_commit(_fill(summary, indexer, source, timer, t_start, first_pts, last_pts))
        except KeyboardInterrupt:
            if not source.is_live:
                raise
            summary.stopped = True
            log.info("stopped by the user; committing what was indexed")
        finally:
            described.close()   # ends the stage threads (a stop, Ctrl-C, an error)
            bar.close()
        _read_audio(source, indexer, last_pts if summary.stopped else math.inf)
        indexer.flush()
        indexer.commit()
        _fill(summary, indexer, source, timer, t_start, first_pts, last_pts)
        if on_commit is not None:
            on_commit(summary)
        return summary
    except BaseException:
        if indexer is not None and indexer.speech is not None:
            indexer.speech.close()
        if store is not None:
            store.close()
            store = None
        if undo and not (indexer is not None and indexer.commits):
            _remove_added(store_dir, before, made)
        raise
    finally:
        source.close()
        if store is not None:
            store.close()


def _bound_heaps() -> None:
    """At most two glibc heaps (arenas) for all threads, unless ``MALLOC_ARENA_MAX`` says
    otherwise: by default each thread that allocates (decoder, encoder and OCR thread pools)
    may get its own, up to eight per core, each keeping what its threads freed, so over a long
    run their high-water marks add up. Applies to threads that start allocating after it."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)   # M_ARENA_MAX
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them, and over a long run the
    resident memory would creep up with fragmentation)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _entries(path: Path) -> set[str] | None:
    """Names in the directory ``path`` (None when it is not a directory)."""
    try:
        return set(os.listdir(path))
    except OSError:
        return None


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    out = []
    p = path.absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def _remove_added(store_dir: Path, before: set[str] | None, made: list[Path]) -> None:
    """Remove what a failed run added to ``store_dir``: entries not there before, and the
    directories it created (only when they are empty then)."""
    for name in sorted(_entries(store_dir) or ()):
        if before is not None and name in before:
            continue
        remove_path(store_dir / name)
    for d in made:
        try:
            d.rmdir()
        except OSError:
            break


def _decoded(source, indexer: Indexer, models: Models, timer: _Timer,
             stop: threading.Event | None, summary: IndexSummary):
    """The source's frames (decode time timed) until it ends or ``stop`` is set, its audio up
    to each frame handed to the speech describer in step with the pictures."""
    it = iter(source)
    while True:
        if stop is not None and stop.is_set():
            summary.stopped = True
            return
        t = time.perf_counter()
        try:
            frame = next(it)
        except StopIteration:
            timer.add("decode", t)
            return
        timer.add("decode", t)
        yield frame
        if source.has_audio:
            if indexer.speech is None and models.recogniser is not None:
                indexer.speech = SpeechDescriber(models.recogniser)   # a live track appeared
            _read_audio(source, indexer, frame.pts)


def _read_audio(source, indexer: Indexer, until: float) -> None:
    t = time.perf_counter()
    chunks = source.read_audio(until)
    indexer.timer.add("decode", t)
    indexer.push_audio(chunks)


def _fill(summary: IndexSummary, indexer: Indexer, source, timer: _Timer, t_start: float,
          first_pts: float | None, last_pts: float) -> IndexSummary:
    c = indexer.summary_counts
    summary.clips = int(c["clips"])
    summary.frames_reused = int(c["frames_reused"])
    summary.tokens_total = int(c["tokens_total"])
    summary.tokens_recomputed = float(c["tokens_recomputed"])
    summary.tokens_kept = int(c["tokens_kept"])
    summary.described = int(c["described"])
    interval = 1.0 / indexer.config.source.fps
    summary.duration = (last_pts - first_pts + interval) if first_pts is not None else 0.0
    st = source.stats
    summary.decode_errors = st.decode_errors
    summary.dropped = st.dropped
    summary.reconnects = st.reconnects
    summary.truncated = st.truncated
    summary.audio_errors = st.audio_errors
    sp = indexer.speech
    if source.has_audio:
        summary.audio = ("audio only" if getattr(source, "audio_only", False) else "speech") \
            if sp is not None else "not transcribed"
    if sp is not None:
        summary.audio_seconds = sp.audio_seconds
        summary.voiced_seconds = sp.voiced_seconds
        summary.asr_seconds = sp.asr_seconds
        summary.speech_segments = len(indexer._said)
        if summary.frames == 0:
            summary.duration = sp.audio_seconds
    summary.seconds = time.perf_counter() - t_start
    summary.stage_seconds = dict(timer.seconds)
    return summary



# Sections whose values must match to extend a store (what a clip *is*); the source's fps or
# the memory bound may differ between runs into the same store.
SAME_CONFIG_SECTIONS = ("encoder", "cache", "compress", "describe", "clips", "text")


def check_same_config(store_dir: Path, config: Config) -> None:
    """Refuse to extend a store built with another model or config, naming the differences."""
    from .ask import store_config

    old = store_config(store_dir).to_dict()
    new = config.to_dict()
    diff = [f"{sec}.{k}" for sec in SAME_CONFIG_SECTIONS for k in new[sec]
            if old.get(sec, {}).get(k) != new[sec][k]]
    if diff:
        shown = ", ".join(f"{d} ({_get(old, d)!r} in the store, {_get(new, d)!r} now)" for d in diff[:3])
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        raise StoreError(
            f"the store {store_dir} was built with another config: {shown}{more}; fix: index with "
            f"--config {store_dir / 'config.yaml'} or use a new --store")


def _get(d: dict, dotted: str):
    sec, _, key = dotted.partition(".")
    return d.get(sec, {}).get(key)
