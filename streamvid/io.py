"""Small file helpers: atomic writes (temp file + fsync + rename), content hashing, and
small JPEG thumbnails."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def umask() -> int:
    """The process's file mode creation mask."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):  # pragma: no cover - not Linux
        pass
    mask = os.umask(0o022)  # pragma: no cover
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


def atomic_write(path: Path, write: Callable[[Any], None], *, binary: bool = True) -> None:
    """Write ``path`` through ``write(fileobj)`` into a temp file, then rename over it.

    The file gets the permissions of any new file (0666 less the umask), not the temp
    file's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text), binary=False)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True))


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, arr, allow_pickle=False))


def file_digest(path: Path, *, chunk: int = 1 << 20, limit: int | None = None) -> str:
    """SHA-256 of a file's content (of its first ``limit`` bytes plus its size when given)."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    h.update(str(size).encode())
    read = 0
    with open(path, "rb") as fh:
        while True:
            if limit is not None and read >= limit:
                break
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
            read += len(block)
    return h.hexdigest()


#: keyframe thumbnails kept per clip: longer side at most this many pixels, this JPEG quality
THUMB_MAX_SIDE = 384
THUMB_QUALITY = 80


def encode_jpeg(image: np.ndarray, *, max_side: int = THUMB_MAX_SIDE,
                quality: int = THUMB_QUALITY) -> bytes:
    """``[H, W, 3]`` uint8 RGB as JPEG bytes, shrunk so the longer side is <= ``max_side``."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(image[..., :3]), "RGB")
    if max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                       Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def remove_path(p: Path) -> None:
    """Remove a file or a directory tree; a link is removed, never followed; gone already is fine."""
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    except FileNotFoundError:
        pass
