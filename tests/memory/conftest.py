"""Synthetic clip memories for the memory tests (real FAISS, real files)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from memory.store import StoreSpec
from streamvid.types import ClipMemory

DV, DT = 64, 16
SPEC = StoreSpec(encoder_id="test-encoder/v1", vector_dim=DV, text_id="test-text/v1", text_dim=DT,
                 config={"encoder": {"name": "test"}})


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def vec_for(i: int, dim: int = DV, salt: int = 0) -> np.ndarray:
    """A deterministic unit vector for clip number ``i`` (to check data after a reopen)."""
    return unit(np.random.default_rng(i * 7919 + salt).normal(size=dim))


def make_clip(i: int, *, source: str = "cam", length: float = 4.0, tokens: int = 6,
              text: bool = True, description: str | None = None, ocr: str = "",
              vector: np.ndarray | None = None) -> ClipMemory:
    start = i * length
    tk = None
    if tokens:
        tk = (np.random.default_rng(i).normal(size=(tokens, DV))).astype(np.float16)
    return ClipMemory(
        source_id=source, start=start, end=start + length,
        vector=vec_for(i) if vector is None else vector, keyframes=(start + 1.0,),
        text_vector=vec_for(i, DT, salt=1) if text else None, tokens=tk,
        token_times=np.linspace(start, start + length, tokens, dtype=np.float32) if tokens else None,
        token_positions=np.arange(tokens, dtype=np.int32) if tokens else None,
        labels=(("dog", 0.7), ("cat", 0.1)), ocr_text=ocr,
        description=description if description is not None else f"clip {i}", novelty=0.5)


@pytest.fixture
def spec() -> StoreSpec:
    return SPEC


def commit_killed_before_manifest(path: Path, maker: str) -> None:
    """In a child process: open the store at ``path``, remove clips 0 and 5, add clips 30-44
    made by ``maker`` (``module:function`` of this folder) and commit, SIGKILLed when the
    commit comes to write the manifest (every other file of the commit already written)."""
    module, func = maker.split(":")
    here = Path(__file__).resolve().parent
    child = textwrap.dedent(f"""
        import os, signal, sys
        sys.path[:0] = {[str(here.parents[1]), str(here)]!r}
        import memory.store as store_mod
        from memory.store import MemoryStore
        from conftest import SPEC
        from {module} import {func} as make

        def killed(path, obj):
            if path.name == "manifest.json":
                os.kill(os.getpid(), signal.SIGKILL)

        store = MemoryStore.open({str(path)!r}, SPEC, mode="a")
        store.remove([0, 5])
        store.add([make(i) for i in range(30, 45)])
        store_mod.atomic_write_json = killed
        store.commit()
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def flip_middle_byte(path: Path) -> None:
    """Damage the file at ``path``: its middle byte inverted (size unchanged)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
