"""Compressed frames -> clip memories of a few seconds each.

A clip ends where the picture changes (a shot boundary, or the pooled features moved more
than ``split_threshold`` cosine distance from the clip's first frame) once it is at least
``min_length`` long, and always before its frames would span ``max_length``. Consecutive
clips tile time: a clip ends where the next one starts (the last one a sample interval after
its last frame), except across a gap in the input (no frame for more than 1.5 usual sample
intervals), where the clip ends a sample interval after its last frame.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..config import ClipConfig
from ..errors import ConfigError, ValidationError
from ..types import ClipBuilder, ClipMemory, CompressedFrame, Description, FrameObjects
from .keyframes import cosine_distance

log = logging.getLogger(__name__)

#: labels kept per clip after merging its frames' labels
CLIP_LABELS = 5
#: a pause longer than this many usual sample intervals is a gap that no clip covers
GAP_FACTOR = 1.5
#: separator between OCR lines in a description's text
LINE_SEP = " | "


def merge_labels(descriptions: list[Description], k: int = CLIP_LABELS) -> tuple[tuple[str, float], ...]:
    """Labels of several descriptions: highest probability per label, best ``k`` first."""
    best: dict[str, float] = {}
    for d in descriptions:
        for name, prob in d.labels:
            if prob > best.get(name, -1.0):
                best[name] = float(prob)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(ranked[:k])


def merge_text(descriptions: list[Description]) -> str:
    """On-screen text of several descriptions: unique lines, in order of first appearance."""
    seen: dict[str, None] = {}
    for d in descriptions:
        for line in d.text.split(LINE_SEP):
            line = line.strip()
            if line and line not in seen:
                seen[line] = None
    return LINE_SEP.join(seen)


_IRREGULAR = {"person": "people", "mouse": "mice", "knife": "knives", "skis": "skis",
              "sheep": "sheep", "scissors": "scissors", "hair drier": "hair driers"}


def plural(name: str, n: int = 2) -> str:
    """``person`` -> ``people``, ``bus`` -> ``buses``, ``car`` -> ``cars`` (``n`` 1: unchanged)."""
    if n == 1:
        return name
    if name in _IRREGULAR:
        return _IRREGULAR[name]
    if name.endswith(("s", "x", "ch", "sh")):
        return name + "es"
    return name + "s"


def peak_counts(objects: tuple[FrameObjects, ...]) -> dict[str, int]:
    """The most objects of each class seen in any one frame, most first."""
    best: dict[str, int] = {}
    for fo in objects:
        for name, n in fo.counts().items():
            best[name] = max(best.get(name, 0), n)
    return dict(sorted(best.items(), key=lambda kv: (-kv[1], kv[0])))


def describe_objects(objects: tuple[FrameObjects, ...]) -> str:
    """``6 people, 1 truck (person)``: the peak count of each class in one frame, in words.

    Class names follow in their singular form when the plural differs, so that a question
    with either form finds the clip.
    """
    counts = peak_counts(objects)
    if not counts:
        return ""
    words = ", ".join(f"{n} {plural(name, n)}" for name, n in counts.items())
    singular = [name for name, n in counts.items() if plural(name, n) != name]
    return f"{words} ({', '.join(singular)})" if singular else words


def describe_clip(labels: tuple[tuple[str, float], ...], text: str,
                  objects: tuple[FrameObjects, ...] = ()) -> str:
    """A readable one-line description:
    ``seen: 2 people (person); tabby, tiger cat; text: "WIFI PASSWORD: ..."``."""
    parts = []
    seen = describe_objects(objects)
    if seen:
        parts.append(f"seen: {seen}")
    if labels:
        parts.append(", ".join(name for name, _ in labels))
    if text:
        parts.append(f'text: "{text}"')
    return "; ".join(parts)


def _quota(counts: list[int], cap: int) -> list[int]:
    """Split ``cap`` over frames in proportion to their kept-token counts (largest remainder)."""
    total = sum(counts)
    if total <= cap:
        return list(counts)
    raw = [c * cap / total for c in counts]
    out = [min(c, math.floor(r)) for c, r in zip(counts, raw)]
    left = cap - sum(out)
    for j in sorted(range(len(counts)), key=lambda j: (-(raw[j] - out[j]), j)):
        if left <= 0:
            break
        if out[j] < counts[j]:
            out[j] += 1
            left -= 1
    return out


class SceneClipBuilder(ClipBuilder):
    """Groups compressed frames (in presentation order) into ``ClipMemory`` values."""

    def __init__(self, config: ClipConfig | None = None, *, source_id: str = ""):
        self.config = config or ClipConfig()
        if self.config.min_length > self.config.max_length:
            raise ConfigError(f"config clips.min_length ({self.config.min_length}) is longer than "
                              f"clips.max_length ({self.config.max_length}); fix: make min_length <= max_length")
        self.source_id = source_id
        self._frames: list[CompressedFrame] = []
        self._descs: list[Description | None] = []
        self._deltas: list[float] = []
        self._last_pts: float | None = None
        self.clips = 0

    def push(self, frame: CompressedFrame, description: Description | None = None) -> list[ClipMemory]:
        """Add a frame; return the clip it closes, if any."""
        pts = frame.pts
        if self._last_pts is not None:
            if pts <= self._last_pts:
                raise ValidationError(
                    f"ClipBuilder.push: expected increasing pts, got {pts} after {self._last_pts}; "
                    "fix: push frames in presentation order, one builder per source")
            self._deltas.append(pts - self._last_pts)
            self._deltas = self._deltas[-32:]
        self._last_pts = pts
        out = []
        if self._frames and self._should_split(frame):
            last = self._frames[-1].pts
            step = self._step()
            # the clip ends where the next starts, unless frames are missing in between
            out.append(self._finish(end=pts if pts - last <= GAP_FACTOR * step else last + step))
        self._frames.append(frame)
        self._descs.append(description)
        return out

    def flush(self) -> list[ClipMemory]:
        """Close the open clip (end = last frame + one sample interval)."""
        if not self._frames:
            return []
        return [self._finish(end=self._frames[-1].pts + self._step())]

    def _step(self) -> float:
        """The usual time between sampled frames (median of the recent ones; 1 s before any)."""
        return float(np.median(self._deltas)) if self._deltas else 1.0

    # ------------------------------------------------------------------ internals
    def _should_split(self, frame: CompressedFrame) -> bool:
        cfg = self.config
        start = self._frames[0].pts
        length = frame.pts - start  # the open clip's length if it ends where this frame starts
        if length >= cfg.max_length - 1e-6:
            return True
        if length < cfg.min_length - 1e-6:
            return False
        if frame.is_shot_boundary:
            return True
        first = self._frames[0].features.pooled
        return cosine_distance(frame.features.pooled, first) > cfg.split_threshold

    def _finish(self, end: float) -> ClipMemory:
        frames, all_descs = self._frames, self._descs
        descs = [d for d in all_descs if d is not None]
        objects = tuple(FrameObjects(float(f.pts), d.objects) for f, d in zip(frames, all_descs)
                        if d is not None and d.objects is not None)
        self._frames, self._descs = [], []
        start = frames[0].pts
        mean = np.mean(np.stack([f.features.pooled for f in frames]), axis=0)
        vector = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        keyframes = tuple(f.pts for f in frames if f.is_keyframe) or (start,)
        tokens, times, positions = self._tokens(frames)
        labels = merge_labels(descs)
        text = merge_text(descs)
        first_read: dict[str, float] = {}
        for f, d in zip(frames, all_descs):
            for line in (d.text.split(LINE_SEP) if d is not None else ()):
                first_read.setdefault(line.strip(), float(f.pts))
        text_times = tuple(first_read.get(ln, float(start)) for ln in text.split(LINE_SEP)) if text else ()
        self.clips += 1
        return ClipMemory(source_id=self.source_id, start=float(start), end=float(end), vector=vector,
                          keyframes=keyframes, tokens=tokens, token_times=times,
                          token_positions=positions, labels=labels, ocr_text=text,
                          description=describe_clip(labels, text, objects), objects=objects,
                          text_times=text_times,
                          novelty=float(np.mean([f.novelty for f in frames])))

    def _tokens(self, frames: list[CompressedFrame]):
        counts = [f.tokens.shape[0] for f in frames]
        quota = _quota(counts, self.config.max_tokens)
        # the pruner returns each frame's tokens most novel first, so a prefix keeps the best
        parts = [(f.tokens[:q], np.full(q, f.pts, np.float32), f.positions[:q].astype(np.int32))
                 for f, q in zip(frames, quota)]
        dim = frames[0].tokens.shape[1] if frames[0].tokens.ndim == 2 else frames[0].features.tokens.shape[1]
        if sum(quota) == 0:
            return (np.zeros((0, dim), np.float16), np.zeros(0, np.float32), np.zeros(0, np.int32))
        return (np.concatenate([p[0] for p in parts]).astype(np.float16),
                np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]))
