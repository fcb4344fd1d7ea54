"""ImageNet labels for a frame, from the vision encoder's own classifier."""

from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigError
from ..types import Describer, Description, Frame, FrameFeatures, VisionEncoder

log = logging.getLogger(__name__)


def readable_label(name: str) -> str:
    """A class name as people would say it.

    ImageNet names can list synonyms (``"tabby, tabby cat"``); the first is kept unless a later
    one extends it with more words (``"tabby cat"``), which then replaces it because the extra
    words help matching. Underscores become spaces.
    """
    syns = [s.strip().replace("_", " ") for s in name.split(",") if s.strip()]
    if not syns:
        return name.strip()
    first = syns[0]
    words = set(first.lower().split())
    longer = [s for s in syns[1:] if words < set(s.lower().split())]
    return max(longer, key=len) if longer else first


def has_classifier(encoder: VisionEncoder) -> bool:
    """True when the encoder implements ``labels`` (a classifier head)."""
    return type(encoder).labels is not VisionEncoder.labels


class LabelDescriber(Describer):
    """Top-k class labels of a frame with their probabilities (``encoder.labels``)."""

    name = "labels"

    def __init__(self, encoder: VisionEncoder, *, top_k: int = 5, min_prob: float = 0.05):
        if not has_classifier(encoder):
            raise ConfigError(
                f"describe.labels needs an encoder with a classifier; encoder {encoder.name!r} has none; "
                "fix: use encoder.name: lite, or set describe.labels: false")
        self.encoder = encoder
        self.top_k = top_k
        self.min_prob = min_prob

    def labels(self, pooled: np.ndarray) -> tuple[tuple[str, float], ...]:
        """Labels for one pooled vector ``[D]``, best first, at least ``min_prob``."""
        res = self.encoder.labels(pooled[None, :].astype(np.float32, copy=False), self.top_k)[0]
        out: dict[str, float] = {}
        for name, prob in res:
            if prob < self.min_prob:
                continue
            label = readable_label(name)
            out[label] = max(out.get(label, 0.0), round(float(prob), 4))
        return tuple(sorted(out.items(), key=lambda kv: -kv[1]))

    def describe(self, frame: Frame, features: FrameFeatures | None = None) -> Description:
        pooled = features.pooled if features is not None else self.encoder.encode([frame.image]).pooled[0]
        return Description(labels=self.labels(pooled))


def local_labels(encoder: VisionEncoder, tokens: np.ndarray, *, min_prob: float = 0.5,
                 top: int = 6) -> tuple[tuple[str, float], ...]:
    """Labels of single tokens: what small things in the picture are, one token at a time.

    A pooled label describes the whole picture, so an object covering a few tokens never
    reaches it; classifying each kept token on its own names it. Each token votes its top-1
    class when at least ``min_prob``; a label's score is its best token's probability. Labels
    that cover most of a clip are background and are left to ``BM25``'s inverse document
    frequency to discount at question time.
    """
    if tokens is None or len(tokens) == 0 or top <= 0:
        return ()
    res = encoder.labels(np.asarray(tokens, np.float32), 1)
    best: dict[str, float] = {}
    for row in res:
        name, prob = row[0]
        if prob >= min_prob:
            label = readable_label(name)
            best[label] = max(best.get(label, 0.0), round(float(prob), 4))
    return tuple(sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:top])
