"""The models a pipeline needs, loaded once and shared by indexing and asking."""

from __future__ import annotations

import logging
from typing import Any

from streamvid.config import Config

log = logging.getLogger(__name__)

# Config sections that change what is written into a store: a store built with other values
# of these is a different store (``ask VIDEO`` keys its cache on them).
INDEX_SECTIONS = ("source", "encoder", "cache", "compress", "describe", "clips", "memory", "text")


def _quiet_transformers() -> None:
    """transformers draws its own weight-loading bars; streamvid shows its own progress."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
        return
    hf_logging.disable_progress_bar()


class Models:
    """Lazily built encoder, text encoder and describer for one :class:`Config`."""

    def __init__(self, config: Config, *, allow_download: bool = True):
        """``allow_download=False``: hub models named by ``config`` load only from the local
        cache (a store's config never starts a download)."""
        self.config = config
        self.allow_download = allow_download
        self._encoder: Any = None
        self._text: Any = None
        self._describer: Any = None
        self._recogniser: Any = None

    @property
    def encoder(self):
        if self._encoder is None:
            from streamvid.encoders import create_encoder

            self._encoder = create_encoder(self.config.encoder,
                                           allow_download=self.allow_download)
            log.info("vision encoder %s ready", self._encoder.model_id)
        return self._encoder

    @property
    def text_encoder(self):
        if self._text is None:
            from streamvid.encoders import create_text_encoder

            if self.config.text.model != "minilm":   # minilm runs without transformers
                _quiet_transformers()
            self._text = create_text_encoder(self.config.text, allow_download=self.allow_download)
        return self._text

    @property
    def describer(self):
        """The frame describer, or None when labels, OCR and the detector are all off."""
        d = self.config.describe
        if not (d.labels or d.ocr or d.detector != "none"):
            return None
        if self._describer is None:
            from streamvid.describe import create_describer

            self._describer = create_describer(d, self.encoder)
        return self._describer

    @property
    def recogniser(self):
        """The speech recogniser (``describe.asr_model``), or None when ``describe.asr`` is off."""
        if not self.config.describe.asr:
            return None
        if self._recogniser is None:
            from streamvid.describe import create_recogniser

            self._recogniser = create_recogniser(self.config.describe)
            log.info("speech recogniser %s ready", self._recogniser.model_id)
        return self._recogniser

    def store_spec(self):
        """What a store built with these models records and checks when reopened."""
        from memory.store import StoreSpec

        enc, txt = self.encoder, self.text_encoder
        return StoreSpec(
            encoder_id=enc.model_id,
            vector_dim=int(enc.pooled_dim or enc.dim),
            text_id=txt.model_id,
            text_dim=int(txt.dim),
            config={k: v for k, v in self.config.to_dict().items() if k in INDEX_SECTIONS},
            tokens=enc.token_spec,
        )
