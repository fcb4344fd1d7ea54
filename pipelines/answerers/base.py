"""The answerer registry: each backend registers itself by name."""

from __future__ import annotations

from streamvid.config import AnswerConfig
from streamvid.registry import Registry
from streamvid.types import Answerer

ANSWERERS: Registry[Answerer] = Registry("answerer")
ANSWERERS.register_lazy("hf", "pipelines.answerers.hf", package="transformers", extra="hf")


def create_answerer(config: AnswerConfig | None = None, *, allow_download: bool = True) -> Answerer:
    """The answerer named by ``config.name`` (backends are imported on first use; the hf
    answerer's model is loaded only from the local cache unless ``allow_download``)."""
    config = config or AnswerConfig()
    kw = {} if allow_download or config.name != "hf" else {"local_files_only": True}
    return ANSWERERS.create(config.name, config=config, **kw)
