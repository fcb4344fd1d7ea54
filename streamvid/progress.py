"""Progress bars that the caller can switch off (tqdm to stderr), and status lines."""

from __future__ import annotations

import os
import sys
from typing import Any

#: a bar over seconds of video: ``indexing vtest.avi:  40%|████      | 00:00:32 / 00:01:20 [00:12<00:18]``
CLOCK_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {video_n} / {video_total} [{elapsed}<{remaining}]"
CLOCK_FORMAT_OPEN = "{desc}: {video_n} of video [{elapsed}]"


def _enabled(enabled: bool) -> bool:
    return enabled and os.environ.get("STREAMVID_PROGRESS", "1") != "0"


def progress(total: float | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
             *, clock: bool = False, **kw: Any):
    """A tqdm bar, or a silent stand-in when disabled or when tqdm is unavailable.

    ``clock=True`` counts seconds of video and shows them as ``HH:MM:SS / HH:MM:SS``.
    ``STREAMVID_PROGRESS=0`` disables bars globally.
    """
    if _enabled(enabled):
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover
            return _Silent()
        cls = tqdm
        if clock:
            cls = _clock_class(tqdm)
            kw.setdefault("bar_format", CLOCK_FORMAT if total else CLOCK_FORMAT_OPEN)
        return cls(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                   leave=False, **kw)
    return _Silent()


def _clock_class(base: type) -> type:
    from .types import format_time

    class ClockBar(base):  # type: ignore[misc, valid-type]
        @property
        def format_dict(self) -> dict[str, Any]:
            d = super().format_dict
            d["video_n"] = format_time(d["n"] or 0)
            d["video_total"] = format_time(d["total"]) if d.get("total") else "?"
            return d

    return ClockBar


def status(message: str, enabled: bool = True) -> None:
    """One status line on stderr (model loading, ...), unless progress output is off."""
    if _enabled(enabled):
        print(message, file=sys.stderr, flush=True)


class _Silent:
    n = 0

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix_str(self, *a: Any, **k: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: object) -> None:
        pass
