"""Asking: a question (text and/or image) against a store -> an Answer with evidence."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamvid.config import AnswerConfig, Config
from streamvid.errors import QueryError, StoreError
from streamvid.io import file_digest
from streamvid.types import Answer, Context, Question

from .answerers import create_answerer
from .models import INDEX_SECTIONS, Models

log = logging.getLogger(__name__)


def load_image(path: str | Path) -> np.ndarray:
    """An image file as upright uint8 ``[H, W, 3]`` RGB, or ``[H, W, 4]`` RGBA when it has
    transparent pixels (a cut-out: retrieval looks for the opaque part only)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise QueryError(f"image query {p} does not exist; fix: pass the path of a PNG or JPEG file")
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "P"):
                rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
                if (rgba[..., 3] < 255).any():
                    return np.ascontiguousarray(rgba)
            return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise QueryError(f"image query {p} cannot be read as an image ({err.__class__.__name__}); "
                         f"fix: pass a PNG or JPEG file") from err


def store_config(store_dir: str | Path) -> Config:
    """The config a store was built with (saved beside it at indexing time)."""
    p = Path(store_dir) / "config.yaml"
    if not p.is_file():
        raise StoreError(f"{store_dir} is not a streamvid store (no config.yaml); "
                         f"fix: build it with `streamvid index VIDEO --store {store_dir}`")
    return Config.load(p)


def merge_query_config(store_cfg: Config, user_cfg: Config | None) -> Config:
    """Index-time sections come from the store; query-time sections from the user."""
    if user_cfg is None:
        return store_cfg
    return store_cfg.replace(retrieval=user_cfg.retrieval, answer=user_cfg.answer)


class Asker:
    """Answers questions against one store; reuse it for many questions."""

    def __init__(self, store_dir: str | Path, config: Config | None = None, *,
                 models: Models | None = None):
        from memory.retrieval import Retriever
        from memory.store import MemoryStore

        self.store_dir = Path(store_dir)
        if not (self.store_dir / "manifest.json").exists():
            raise StoreError(f"no store at {self.store_dir}; fix: build one with "
                             f"`streamvid index VIDEO --store {self.store_dir}`")
        self.config = merge_query_config(store_config(self.store_dir), config)
        self.models = models or Models(self.config)
        self.store = MemoryStore.open(self.store_dir, self.models.store_spec(), mode="r",
                                      config=self.config.memory)
        self.retriever = Retriever(self.store, self.config.retrieval,
                                   text_encoder=self.models.text_encoder,
                                   vision_encoder=self.models.encoder)
        self.answerer = create_answerer(self.config.answer)
        self.last_context: Context | None = None

    def ask(self, question: Question, *, top_k: int | None = None,
            source: str | None = None, budget: int | None = None) -> Answer:
        t0 = time.perf_counter()
        self.store.refresh()
        ctx = self.retriever.retrieve(question, top_k=top_k, source=source, budget=budget)
        t1 = time.perf_counter()
        ans = self.answerer.answer(question, ctx)
        t2 = time.perf_counter()
        self.last_context = ctx
        k = top_k or self.config.retrieval.top_k
        timings = {"retrieve": t1 - t0, "answer": t2 - t1, "tokens_used": float(ctx.tokens_used),
                   **ans.timings}
        return type(ans)(ans.answer, ans.evidence[:k], timings)

    def close(self) -> None:
        self.store.close()
        close = getattr(self.answerer, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Asker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def answer_json(ans: Answer, config: AnswerConfig) -> dict[str, Any]:
    """``ans`` as JSON, with which answerer and model answered and what it cost.

    ``answerer``, ``model``, ``visual_tokens``, ``prefill_s`` and ``generate_s`` are always
    present (``model``, ``prefill_s``, ``generate_s`` null where they do not apply or were not
    measured); the older keys are unchanged.
    """
    t = ans.timings
    seconds = {k: round(float(t[k]), 4) if k in t else None for k in ("prefill_s", "generate_s")}
    return {**ans.to_json(), "answerer": config.name, "model": config.model or None,
            "visual_tokens": int(t.get("visual_tokens", 0)), **seconds}


def cache_root() -> Path:
    env = os.environ.get("STREAMVID_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamvid"


def cached_store_dir(video: str | Path, config: Config) -> Path:
    """Where ``ask VIDEO`` keeps the store it builds: keyed by the file's content and config."""
    key = file_digest(Path(video))[:16] + "-" + config.fingerprint(*INDEX_SECTIONS)
    return cache_root() / "stores" / key
