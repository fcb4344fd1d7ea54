"""Progress bars that the caller can switch off (tqdm to stderr)."""

from __future__ import annotations

import os
import sys
from typing import Any


def progress(total: float | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
             **kw: Any):
    """A tqdm bar, or a silent stand-in when disabled or when tqdm is unavailable.

    ``STREAMVID_PROGRESS=0`` disables bars globally.
    """
    if enabled and os.environ.get("STREAMVID_PROGRESS", "1") != "0":
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                        leave=False, **kw)
        except ImportError:  # pragma: no cover
            pass
    return _Silent()


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
