"""Asking: a question (text and/or image) against a store -> an Answer with evidence."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from streamvid.config import AnswerConfig, Config
# image queries are read and checked beside the encoders; the names stay importable from here
from streamvid.encoders.query import (MAX_QUERY_PIXELS, MIN_QUERY_SIDE, MIN_QUERY_STD,  # noqa: F401
                                      load_image)
from streamvid.errors import ModelError, StoreError, StreamvidError
from streamvid.io import file_digest
from streamvid.types import Answer, Context, Question

from .answerers import create_answerer
from .models import INDEX_SECTIONS, Models

log = logging.getLogger(__name__)


def require_local_models(config: Config, store_dir: Path) -> None:
    """Opening a store never downloads: a hub model its config (or the asker's answer
    section) names must already be on this machine.

    Raises :class:`ModelError` naming the model and the two fixes.
    """
    named = []
    if config.encoder.name in ("hf", "vlm") and config.encoder.model:
        named.append(("encoder.model", config.encoder.model, f"the store {store_dir} names"))
    if config.text.model != "minilm":
        named.append(("text.model", config.text.model, f"the store {store_dir} names"))
    if config.answer.name == "hf" and config.answer.model:
        named.append(("answer.model", config.answer.model, "the answer section names"))
    for key, model, who in named:
        if Path(model).exists() or _in_hub_cache(model):
            continue
        raise ModelError(
            f"{who} the hub model {model!r} ({key}), which is not on this machine, and "
            f"nothing is downloaded unless asked; fix: download it yourself (e.g. `huggingface-cli download "
            f"{model}`) if you trust it, or pass --allow-download")


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
        self.models = models or Models(self.config, allow_download=allow_download)
        # each model loads when a question first needs it (a text question never loads the
        # vision encoder, an image question never the sentence encoder), and is then checked
        # against what the store was built with
        self.retriever = Retriever(
            self.store, self.config.retrieval,
            text_encoder=_OnFirstUse(lambda: self.models.text_encoder, self._check_text),
            vision_encoder=_OnFirstUse(lambda: self.models.encoder, self._check_vision,
                                       supports_text=_class_supports_text(self.config)))
        self.answerer = create_answerer(self.config.answer, allow_download=allow_download)
        self.last_context: Context | None = None

    def _check_vision(self, enc: Any) -> None:
        self.store.check_spec(dataclasses.replace(self.store.spec, encoder_id=enc.model_id,
                                                  vector_dim=int(enc.pooled_dim or enc.dim)))

    def _check_text(self, txt: Any) -> None:
        self.store.check_spec(dataclasses.replace(self.store.spec, text_id=txt.model_id,
                                                  text_dim=int(txt.dim)))

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


class _OnFirstUse:
    """Stands for a model until an attribute of it is first asked for; then loads it (once),
    runs ``check`` on it and passes every attribute through. ``supports_text``, when known
    from the model's class, is answered without loading."""

    def __init__(self, load: Callable[[], Any], check: Callable[[Any], None], *,
                 supports_text: bool | None = None):
        self._load, self._check, self._model = load, check, None
        self._supports_text = supports_text

    def __getattr__(self, name: str) -> Any:
        if name == "supports_text" and self._supports_text is not None:
            return self._supports_text
        if self._model is None:
            model = self._load()
            self._check(model)
            self._model = model
        return getattr(self._model, name)


def _class_supports_text(config: Config) -> bool | None:
    """False when the vision encoder's class has no text tower at all (known without loading
    its weights), else None (it depends on the checkpoint)."""
    from streamvid.encoders import ENCODERS
    from streamvid.types import VisionEncoder

    try:
        cls = ENCODERS.get(config.encoder.name)
    except StreamvidError:
        return None
    if isinstance(cls, type) and cls.supports_text is VisionEncoder.supports_text:
        return False
    return None


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
