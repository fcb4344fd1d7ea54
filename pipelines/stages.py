"""Stages of a pipeline overlapped in threads, joined by bounded queues.

:func:`overlap` runs ``items`` (e.g. decoding) and each stage function in a thread of its
own; every stage keeps its items in order, so the output is exactly what running the stages
one after another gives. The queues are bounded (a slow stage holds the ones before it
back, and memory stays flat); an error in any thread ends every thread and is raised, once,
where the output is read; closing the output early (a Ctrl-C, a stop) ends the threads too.

Threads pay off here because the heavy work (video decoding, torch, ONNX Runtime, OpenCV)
releases the GIL: decode, encode and describe then run on different cores at once.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator

#: a stage takes one item and returns the items it hands on (none, one or several); called
#: with ``FLUSH`` after the last item, it returns what it still holds
Stage = Callable[[Any], Iterable[Any]]

#: passed to each stage once the input ended
FLUSH = object()
_END = object()
#: seconds a blocked put or get waits before it looks whether the pipeline was closed
_POLL = 0.1


class _Failed:
    def __init__(self, err: BaseException):
        self.err = err


def sequential(items: Iterable[Any], stages: list[Stage]) -> Iterator[Any]:
    """The stages one after another, in the calling thread (what :func:`overlap` overlaps)."""

    def run(i: int, item: Any) -> Iterator[Any]:
        if i == len(stages):
            yield item
            return
        for out in stages[i](item):
            yield from run(i + 1, out)

    for item in items:
        yield from run(0, item)
    for i in range(len(stages)):
        for out in stages[i](FLUSH):
            yield from run(i + 1, out)


def overlap(items: Iterable[Any], stages: list[Stage], *, queue_size: int = 16,
            name: str = "stage") -> Iterator[Any]:
    """The output of ``stages`` over ``items`` as :func:`sequential` gives it, with the input
    and each stage in a thread of its own and at most ``queue_size`` items between two."""
    closed = threading.Event()
    queues = [queue.Queue(maxsize=max(1, queue_size)) for _ in range(len(stages) + 1)]

    def put(q: queue.Queue, item: Any) -> bool:
        while not closed.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def feed() -> None:
        try:
            for item in items:
                if not put(queues[0], item):
                    return
            put(queues[0], _END)
        except BaseException as err:  # noqa: BLE001 - handed to the reader
            put(queues[0], _Failed(err))

    def work(i: int) -> None:
        inq, outq, stage = queues[i], queues[i + 1], stages[i]
        try:
            while not closed.is_set():
                try:
                    item = inq.get(timeout=_POLL)
                except queue.Empty:
                    continue
                if item is _END or isinstance(item, _Failed):
                    if item is _END:
                        for out in stage(FLUSH):
                            if not put(outq, out):
                                return
                    put(outq, item)
                    return
                for out in stage(item):
                    if not put(outq, out):
                        return
        except BaseException as err:  # noqa: BLE001 - handed to the reader
            put(outq, _Failed(err))

    threads = [threading.Thread(target=feed, name=f"{name}-input", daemon=True)]
    threads += [threading.Thread(target=work, args=(i,), name=f"{name}-{i + 1}", daemon=True)
                for i in range(len(stages))]
    for t in threads:
        t.start()
    try:
        last = queues[-1]
        while True:
            item = last.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.err
            yield item
    finally:
        closed.set()
        for t in threads:
            t.join(timeout=30.0)
