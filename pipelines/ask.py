"""Asking: a question (text and/or image) against a store -> an Answer with evidence."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from streamvid.config import AnswerConfig, Config
# image queries are read and checked beside the encoders; the names stay importable from here
from streamvid.encoders.query import (MAX_QUERY_PIXELS, MIN_QUERY_SIDE, MIN_QUERY_STD,  # noqa: F401
                                      load_image)
from streamvid.errors import ModelError, StoreError
from streamvid.io import file_digest
from streamvid.types import Answer, Context, Question

from .answerers import create_answerer
from .models import INDEX_SECTIONS, Models

log = logging.getLogger(__name__)


def require_local_models(config: Config, store_dir: Path) -> None:
    """Opening a store never downloads: a hub model it names must already be on this machine.

    Raises :class:`ModelError` naming the model and the two fixes.
    """
    named = []
    if config.encoder.name == "hf" and config.encoder.model:
        named.append(("encoder.model", config.encoder.model))
    if config.text.model != "minilm":
        named.append(("text.model", config.text.model))
    for key, model in named:
        if Path(model).exists() or _in_hub_cache(model):
            continue
        raise ModelError(
            f"the store {store_dir} names the hub model {model!r} ({key}), which is not on this "
            f"machine, and opening a store never downloads; fix: download it yourself (e.g. "
            f"`huggingface-cli download {model}`) if you trust it, or pass --allow-download")


def _in_hub_cache(model: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - comes with transformers
        return False
    try:
        got = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repo id
        return False
    return isinstance(got, str)


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
                 models: Models | None = None, allow_download: bool = False):
        from memory.retrieval import Retriever
        from memory.store import MemoryStore

        self.store_dir = Path(store_dir)
        if not (self.store_dir / "manifest.json").exists():
            raise StoreError(f"no store at {self.store_dir}; fix: build one with "
                             f"`streamvid index VIDEO --store {self.store_dir}`")
        self.config = merge_query_config(store_config(self.store_dir), config)
        if models is None and not allow_download:
            require_local_models(self.config, self.store_dir)
        # the store's files are checked before any model loads: a damaged store fails fast
        self.store = MemoryStore.open(self.store_dir, None, mode="r", config=self.config.memory)
        try:
            self.models = models or Models(self.config, allow_download=allow_download)
            self.store.check_spec(self.models.store_spec())
        except BaseException:
            self.store.close()
            raise
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
