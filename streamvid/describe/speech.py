"""The speech describer: a source's audio in, transcript segments with word times out.

Audio chunks are pushed as the frames are read; a worker thread of its own collects them,
finds the voiced regions (voice activity detection) and transcribes only those, a window of
about ``WINDOW`` seconds at a time, cut in a pause so that no sentence is split, while the
frames go on being encoded. The input queue is bounded: when speech comes faster than it is
transcribed, ``push`` waits (files) and the frame loop slows to the recogniser's pace.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import Any

import numpy as np

from ..errors import StreamvidError
from ..types import AudioChunk, SpeechSegment

log = logging.getLogger(__name__)

RATE = 16000
WINDOW = 20.0         # seconds of audio collected before the voiced part is transcribed
MAX_WINDOW = 30.0     # ... cut at its end when speech never pauses (Whisper's own window)
TAIL = 0.3            # speech closer than this to the window's end may go on: wait for it
_END = object()


class SpeechDescriber:
    """Transcribes pushed :class:`AudioChunk` values in its own thread (see the module).

    ``done_until`` is the time up to which every segment is known; :meth:`segments` returns
    those found so far; :meth:`finish` transcribes the rest, waits, and returns them all.
    """

    name = "asr"

    def __init__(self, recogniser: Any, *, max_queue: int = 64):
        self.recogniser = recogniser
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._segments: list[SpeechSegment] = []
        self._done_until = 0.0
        self._error: BaseException | None = None
        self.audio_seconds = 0.0
        self.voiced_seconds = 0.0
        self.asr_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="streamvid-asr", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ consumer side
    def push(self, chunk: AudioChunk) -> None:
        """Queue ``chunk`` for transcription (waits while the queue is full)."""
        self._raise()
        while True:
            try:
                self._q.put(chunk, timeout=0.5)
                return
            except queue.Full:
                self._raise()

    @property
    def done_until(self) -> float:
        with self._lock:
            return self._done_until

    def segments(self) -> list[SpeechSegment]:
        """Segments transcribed so far, in time order."""
        self._raise()
        with self._lock:
            return list(self._segments)

    def finish(self) -> list[SpeechSegment]:
        """Transcribe what is left, stop the thread and return every segment."""
        if self._thread.is_alive():
            self._q.put(_END)
            self._thread.join()
        self._raise()
        with self._lock:
            self._done_until = math.inf
            return list(self._segments)

    def close(self) -> None:
        """Stop without transcribing what is left."""
        if self._thread.is_alive():
            self._error = self._error or _Closed()
            while self._thread.is_alive():
                try:
                    self._q.put(_END, timeout=0.2)
                except queue.Full:
                    try:
                        self._q.get_nowait()
                    except queue.Empty:
                        pass
                    continue
                self._thread.join(timeout=30)
                break

    @property
    def stats(self) -> dict[str, float]:
        return {"audio_s": self.audio_seconds, "voiced_s": self.voiced_seconds,
                "asr_s": self.asr_seconds, "segments": len(self._segments)}

    def _raise(self) -> None:
        if self._error is not None and not isinstance(self._error, _Closed):
            err, self._error = self._error, _Closed()
            if isinstance(err, StreamvidError):
                raise err
            raise StreamvidError(f"speech recognition failed: {err}") from err

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        buf: list[np.ndarray] = []
        start: float | None = None   # time of buf's first sample
        n = 0
        try:
            while True:
                item = self._q.get()
                if item is _END:
                    if isinstance(self._error, _Closed):
                        return
                    if buf:
                        self._window(np.concatenate(buf), start or 0.0, final=True)
                    return
                if start is not None and abs(item.start - (start + n / RATE)) > 0.5:
                    # a gap or a jump in the audio (a live reconnect): finish what came before
                    self._window(np.concatenate(buf), start, final=True)
                    buf, n, start = [], 0, None
                if start is None:
                    start = item.start
                buf.append(item.samples)
                n += len(item.samples)
                self.audio_seconds += len(item.samples) / RATE
                if n >= WINDOW * RATE:
                    rest = self._window(np.concatenate(buf), start, final=n >= MAX_WINDOW * RATE)
                    consumed = n - len(rest)
                    start += consumed / RATE
                    buf, n = ([rest], len(rest)) if len(rest) else ([], 0)
                    if not n:
                        start = None
        except BaseException as err:  # noqa: BLE001 - forwarded to the consumer
            self._error = err

    def _window(self, audio: np.ndarray, start: float, *, final: bool) -> np.ndarray:
        """Transcribe the voiced part of ``audio`` up to a pause; return what is kept back."""
        regions = self.recogniser.voiced(audio)
        cut = len(audio)
        if regions and not final and regions[-1][1] >= len(audio) - TAIL * RATE:
            cut = regions[-1][0]   # the last utterance may go on: keep it for the next window
            regions = regions[:-1]
        if regions:
            end = regions[-1][1]
            self.voiced_seconds += sum(b - a for a, b in regions) / RATE
            t = time.perf_counter()
            found = self.recogniser.transcribe(audio[:min(cut, end + RATE // 5)], offset=start)
            self.asr_seconds += time.perf_counter() - t
        else:
            found = []
        with self._lock:
            self._segments.extend(found)
            self._done_until = start + cut / RATE
        return audio[cut:]


class _Closed(Exception):
    """Marks a describer that was closed (what is left is not transcribed)."""
