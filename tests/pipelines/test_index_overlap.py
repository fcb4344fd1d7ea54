"""Indexing with decode, encode and describe overlapped in threads gives exactly the clips of
running them one after another; the stage runner keeps order, bounds its queues, and ends
its threads on an error or when closed early."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from memory.store import MemoryStore
from pipelines.index import index_video
from pipelines.models import Models
from pipelines.stages import FLUSH, overlap, sequential
from streamvid.config import Config

DATA = Path(__file__).resolve().parents[1] / "data"


def _clips(store: Path) -> list:
    with MemoryStore.open(store, mode="r") as s:
        return s.get(s.ids())


def _same(a, b) -> None:
    for name in ("source_id", "start", "end", "keyframes", "labels", "ocr_text", "description",
                 "novelty", "objects", "text_times", "keyframe_jpeg", "speech"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("vector", "text_vector", "tokens", "token_times", "token_positions"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("video", ["vtest_10s_1fps.mp4", "world_8s.mp4"])
def test_overlapped_index_equals_sequential(tmp_path, video):
    """Small encoder batches, so frames wait in the feature cache and in every queue."""
    base = {"source.fps": 2.0, "encoder.batch_size": 3, "describe.detect_interval": 0.0}
    runs = {}
    for overlapped in (False, True):
        config = Config.load(None, {**base, "source.overlap": overlapped})
        store = tmp_path / f"store-{overlapped}"
        summary = index_video(str(DATA / video), store, config, models=Models(config),
                              progress=False)
        runs[overlapped] = (summary, _clips(store))
    (seq, seq_clips), (ovl, ovl_clips) = runs[False], runs[True]
    assert seq.frames == ovl.frames >= 10
    assert (seq.clips, seq.described, seq.tokens_kept) == (ovl.clips, ovl.described, ovl.tokens_kept)
    assert len(seq_clips) == len(ovl_clips) == seq.clips > 1
    for a, b in zip(seq_clips, ovl_clips):
        _same(a, b)
    assert set(ovl.stage_seconds) >= {"decode", "encode", "describe", "compress", "memory"}


def _double(x):
    return () if x is FLUSH else [x, x]


def _batches(n: int):
    held: list = []

    def stage(x):
        if x is FLUSH:
            out, held[:] = list(held), []
            return out
        held.append(x)
        if len(held) < n:
            return []
        out, held[:] = list(held), []
        return out
    return stage


def test_overlap_keeps_order_and_flushes():
    stages = [_double, _batches(4), lambda x: () if x is FLUSH else [x * 10]]
    assert list(overlap(range(7), stages, queue_size=2)) == list(sequential(range(7), stages)) \
        == [v * 10 for v in range(7) for _ in range(2)]


def test_overlap_raises_a_stage_error_once_and_ends_its_threads():
    def stage(x):
        if x == 5:
            raise ValueError("bad item 5")
        return () if x is FLUSH else [x]

    before = threading.active_count()
    got = []
    with pytest.raises(ValueError, match="bad item 5"):
        for x in overlap(range(100), [stage, _double], queue_size=2):
            got.append(x)
    assert got == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert threading.active_count() == before


def test_overlap_input_error_reaches_the_reader():
    def items():
        yield 1
        raise OSError("decoder broke")

    with pytest.raises(OSError, match="decoder broke"):
        list(overlap(items(), [_double]))


def test_closing_early_ends_the_threads_and_bounds_the_queues():
    pulled = []

    def items():
        for i in range(10_000):
            pulled.append(i)
            yield i

    before = threading.active_count()
    out = overlap(items(), [_double, _double], queue_size=3)
    assert next(out) == 0
    time.sleep(0.3)
    # the input is held back by full queues, not read ahead to the end
    assert len(pulled) < 30
    out.close()
    assert threading.active_count() == before
