"""Synthetic clip memories for the memory tests (real FAISS, real files)."""

from __future__ import annotations

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
