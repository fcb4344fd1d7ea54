"""What the file backends that are not PyAV share: a PyAV probe for codec, rotation and
length (and for a precise reason when the backend cannot open a file), and the end-of-file
bookkeeping for truncated files."""

from __future__ import annotations

import heapq
import itertools
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

from fractions import Fraction

from ..types import SourceStats
from ._common import file_size_problem, open_error

log = logging.getLogger(__name__)


class KnownLength:
    """``fps`` and ``duration`` of a file source, read once when it opens (``_fps``,
    ``_duration``). List it before ``FrameSource`` among the bases."""

    _fps: Fraction | None = None
    _duration: float | None = None

    @property
    def fps(self) -> Fraction | None:
        return self._fps

    @property
    def duration(self) -> float | None:
        return self._duration


def probe_or_raise(path: str, tried: str) -> dict[str, Any]:
    """PyAV's view of ``path``; raises the one-line SourceError naming ``tried``."""
    from ..errors import SourceError
    from .pyav_source import probe

    problem = file_size_problem(Path(path))
    if problem:
        raise open_error(path, problem, tried)
    try:
        return probe(path)
    except SourceError as err:
        msg = str(err).replace("(tried a PyAV probe)", f"(tried {tried}, and PyAV to find out why)")
        raise SourceError(msg) from None


def in_pts_order(items: Iterator[tuple[float, Any]], depth: int = 4, *,
                 start: float = float("-inf"),
                 on_late: Callable[[], None] | None = None) -> Iterator[tuple[float, Any]]:
    """Re-order ``(time, item)`` that a decoder hands out slightly out of order; items that
    arrive after a later one was already passed on (or at or before ``start``) are dropped,
    and ``on_late`` is called for each."""
    heap: list[tuple[float, int, Any]] = []
    seq = itertools.count()
    last = start

    def release() -> Iterator[tuple[float, Any]]:
        nonlocal last
        t0, _, it = heapq.heappop(heap)
        if t0 > last + 1e-9:
            last = t0
            yield t0, it
        elif on_late is not None:
            on_late()

    for t, item in items:
        heapq.heappush(heap, (t, next(seq), item))
        if len(heap) > depth:
            yield from release()
    while heap:
        yield from release()


def note_end(stats: SourceStats, uri: str, last_t: float | None, expected: float | None,
             fps: float | None, stopped: bool) -> None:
    """Mark ``stats`` truncated (and log once) when the file ended well before its length."""
    if stopped or last_t is None or not expected:
        return
    frame_dur = 1.0 / fps if fps else 0.1
    if last_t + max(3 * frame_dur, 0.5) < expected:
        stats.truncated = True
        stats.ended_at = last_t
        log.warning("%s: the file ends early, at %.2f s of %.2f s; it is probably truncated — "
                    "frames up to there were read", uri, last_t, expected)
