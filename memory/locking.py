"""The writer lock of a store directory: one writing process at a time, readers never wait."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from streamvid.errors import StoreError

LOCK = ".writer.lock"


class StoreBusyError(StoreError):
    """Another process holds the store's writer lock."""


class WriterLock:
    """An exclusive ``flock`` on ``<store>/.writer.lock``, released on :meth:`release` or
    when the process ends (also when it is killed)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(str(self.root / LOCK), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise StoreError(f"cannot open the store {self.root} for writing ({err.strerror}); "
                             "fix: check the directory's permissions, or use another --store") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise StoreBusyError(f"the store {self.root} is being written by another process; fix: "
                             "wait for it to finish, open it read-only (mode 'r'), or use "
                             "another --store") from err
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
