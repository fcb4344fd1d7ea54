"""Summaries of what a store holds: a timeline of segments and a short overview per video.

A segment is a run of consecutive clips that show the same kinds of objects and the same
on-screen text; for each, what was seen (the most of each class in one frame, with its
time), the text read and what the picture looks like (labels). The overview says, in one or
two sentences, which objects were seen how often and at most how many at once, and quotes
the text read. Used by ``streamvid summarize`` and by the extractive answerer for "what is
this video about" questions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from streamvid.compress.clips import LINE_SEP, plural
from streamvid.errors import QueryError
from streamvid.types import ClipMemory, FrameObjects, format_time

#: a class seen in at least this share of described frames is seen "throughout"
THROUGHOUT = 0.8
#: text lines quoted in an overview at most
OVERVIEW_LINES = 6
#: labels named per segment at most
SEGMENT_LABELS = 3


@dataclass(frozen=True)
class Seen:
    """One class of object in a span: the most at once, when, and in how many frames."""

    label: str
    peak: int
    peak_time: float
    frames: int

    def phrase(self) -> str:
        return f"{self.peak} {plural(self.label, self.peak)}"

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "max_count": self.peak, "max_at": round(self.peak_time, 3),
                "frames": self.frames}


@dataclass(frozen=True)
class Segment:
    source_id: str
    start: float
    end: float
    objects: tuple[Seen, ...] = ()
    text: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    clips: int = 1

    def line(self) -> str:
        parts = []
        if self.objects:
            parts.append("seen: " + ", ".join(s.phrase() for s in self.objects))
        if self.text:
            parts.append("text: " + " | ".join(f'"{t}"' for t in self.text))
        if self.labels and not self.objects:
            parts.append("looks like: " + ", ".join(self.labels))
        return f"{format_time(self.start)}–{format_time(self.end)}  " + ("; ".join(parts) or "nothing recognised")

    def to_json(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "clips": self.clips,
                "objects": [s.to_json() for s in self.objects], "text": list(self.text),
                "labels": list(self.labels)}


@dataclass(frozen=True)
class Summary:
    """One video's (or one span's) timeline and overview."""

    source_id: str
    start: float
    end: float
    overview: str
    segments: tuple[Segment, ...] = field(default_factory=tuple)
    objects: tuple[Seen, ...] = ()
    described_frames: int = 0

    def lines(self) -> list[str]:
        head = f"{self.source_id} {format_time(self.start)}–{format_time(self.end)}: {self.overview}"
        return [head] + ["  " + s.line() for s in self.segments]

    def to_json(self) -> dict[str, Any]:
        return {"source_id": self.source_id, "start": round(self.start, 3), "end": round(self.end, 3),
                "overview": self.overview, "objects": [s.to_json() for s in self.objects],
                "described_frames": self.described_frames,
                "segments": [s.to_json() for s in self.segments]}


def seen_in(frames: Iterable[FrameObjects]) -> tuple[Seen, ...]:
    """Per class: the most in one frame (first time at that count) and the frames showing it."""
    peak: dict[str, tuple[int, float]] = {}
    count: dict[str, int] = {}
    for fo in sorted(frames, key=lambda f: f.time):
        for name, n in fo.counts().items():
            count[name] = count.get(name, 0) + 1
            if n > peak.get(name, (0, 0.0))[0]:
                peak[name] = (n, fo.time)
    out = [Seen(name, n, t, count[name]) for name, (n, t) in peak.items()]
    return tuple(sorted(out, key=lambda s: (-s.frames, -s.peak, s.label)))


def _lines(clips: Sequence[ClipMemory]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for c in clips:
        for ln in c.ocr_text.split(LINE_SEP):
            ln = ln.strip()
            if ln:
                seen.setdefault(ln, None)
    return tuple(seen)


def _labels(clips: Sequence[ClipMemory], k: int) -> tuple[str, ...]:
    best: dict[str, float] = {}
    for c in clips:
        for name, p in c.labels:
            best[name] = best.get(name, 0.0) + p
    return tuple(n for n, _ in sorted(best.items(), key=lambda kv: -kv[1])[:k])


def _signature(c: ClipMemory) -> tuple[frozenset[str], frozenset[str]]:
    classes = frozenset(name for fo in c.objects for name in fo.counts())
    return classes, frozenset(ln.strip() for ln in c.ocr_text.split(LINE_SEP) if ln.strip())


def segments(clips: Sequence[ClipMemory]) -> list[Segment]:
    """Consecutive clips (one source, in time order) grouped while they show the same kinds of
    objects and the same text."""
    out: list[Segment] = []
    run: list[ClipMemory] = []

    def close() -> None:
        if run:
            out.append(Segment(run[0].source_id, run[0].start, run[-1].end,
                               seen_in(fo for c in run for fo in c.objects), _lines(run),
                               _labels(run, SEGMENT_LABELS), len(run)))

    for c in clips:
        if run and _signature(c) != _signature(run[-1]):
            close()
            run = []
        run.append(c)
    close()
    return out


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def overview(clips: Sequence[ClipMemory]) -> tuple[str, tuple[Seen, ...], int]:
    """A sentence or two on what ``clips`` (one source, time order) hold."""
    frames = [fo for c in clips for fo in c.objects]
    seen = seen_in(frames)
    parts = []
    if seen:
        said = []
        for s in seen:
            share = s.frames / max(len(frames), 1)
            when = "throughout" if share >= THROUGHOUT else f"in {s.frames} of {len(frames)} looks"
            said.append(f"{plural(s.label)} {when} (up to {s.phrase()} at once, at {format_time(s.peak_time)})"
                        if s.peak > 1 else f"{s.phrase()} {when} (first at {format_time(_first(frames, s.label))})")
        parts.append("Seen: " + _and(said) + ".")
    elif frames:
        parts.append("No people, vehicles or other common objects were detected.")
    lines = _lines(clips)
    if lines:
        quoted = ", ".join(f'"{ln}"' for ln in lines[:OVERVIEW_LINES])
        more = f" and {len(lines) - OVERVIEW_LINES} more lines" if len(lines) > OVERVIEW_LINES else ""
        parts.append(f"On-screen text: {quoted}{more}.")
    labels = _labels(clips, SEGMENT_LABELS)
    if labels and not seen:
        parts.append("The picture looks like: " + ", ".join(labels) + ".")
    return " ".join(parts) or "Nothing was recognised.", seen, len(frames)


def _first(frames: Sequence[FrameObjects], label: str) -> float:
    return min(fo.time for fo in frames if any(d.label == label for d in fo.objects))


def summarize_clips(clips: Iterable[ClipMemory], *, with_segments: bool = True) -> list[Summary]:
    """One :class:`Summary` per source of ``clips``, in order of first appearance."""
    by_source: dict[str, list[ClipMemory]] = {}
    for c in clips:
        by_source.setdefault(c.source_id, []).append(c)
    out = []
    for sid, cs in by_source.items():
        cs.sort(key=lambda c: (c.start, c.end))
        text, seen, n = overview(cs)
        out.append(Summary(sid, cs[0].start, max(c.end for c in cs), text,
                           tuple(segments(cs)) if with_segments else (), seen, n))
    return out


def summarize_store(store_dir: str | Path, *, start: float | None = None, end: float | None = None,
                    source: str | None = None) -> list[Summary]:
    """The summaries of a store's videos (of ``source`` only, if given), over ``start``..``end``
    seconds when given. Reads the store only (no models are loaded)."""
    from memory.store import MemoryStore

    from .ask import store_config

    store_dir = Path(store_dir)
    cfg = store_config(store_dir)
    if start is not None and end is not None and end < start:
        raise QueryError(f"--from {format_time(start)} is after --to {format_time(end)}; fix: swap them")
    with MemoryStore.open(store_dir, None, mode="r", config=cfg.memory) as store:
        if source is not None and source not in store.sources():
            raise QueryError(f"source {source!r} is not in the store {store_dir}; sources: "
                             f"{', '.join(store.sources()) or 'none'}")
        t = store.table()
        keep = [int(i) for i, s, e, src in zip(t["id"], t["start"], t["end"], t["source"])
                if (start is None or e > start) and (end is None or s < end)
                and (source is None or t["source_names"][src] == source)]
        clips = store.get(keep)
    lo = -1.0 if start is None else start
    hi = float("inf") if end is None else end
    # only what was seen inside the span counts
    clips = [dataclasses.replace(c, objects=tuple(fo for fo in c.objects if lo <= fo.time <= hi))
             for c in clips]
    return summarize_clips(clips)
