"""Shared pieces of the hostile-input suite: a small real store, CLI runs, file snapshots."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from pipelines.cli import main

from .media import DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# the store every case copies: 8 s of real video, small and quick to index
STORE_VIDEO = DATA / "world_8s.mp4"


@pytest.fixture(scope="session")
def built_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("safety") / "store"
    assert main(["index", str(STORE_VIDEO), "--store", str(store), "--json"]) == 0
    return store


@pytest.fixture()
def ws(tmp_path) -> Path:
    """A workspace any user can enter (the permission cases drop root's rights)."""
    d = Path(tempfile.mkdtemp(prefix="streamvid-safety-"))
    d.chmod(0o755)
    yield d
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = Path(root) / name
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else 0o644)
    shutil.rmtree(d)


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Every entry under ``root`` (except under ``skip``): type, mode, size, content hash."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        if skip is not None and (here == skip or skip in here.parents):
            dirs[:] = []
            continue
        for name in dirs + files:
            p = here / name
            if skip is not None and p == skip:
                continue
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[str(p.relative_to(root))] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[str(p.relative_to(root))] = ("file", st.st_mode, st.st_size, digest)
            else:
                out[str(p.relative_to(root))] = ("dir", st.st_mode)
    return out


@contextlib.contextmanager
def unprivileged():
    """Run as an ordinary user (nobody) while inside: root ignores file permissions."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def run_cli(capsys, argv: list[str], *, as_user: bool = False) -> tuple[int, str, str]:
    capsys.readouterr()
    ctx = unprivileged() if as_user else contextlib.nullcontext()
    with ctx:
        code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(code: int, err: str, *needles: str) -> str:
    """Exit 1, exactly one ``error: … fix: …`` line, no traceback; returns the line."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1, (code, err)
    assert len(lines) == 1, err
    assert "fix:" in lines[0], lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
