"""Answerers: turn a retrieved Context into an Answer.

One module per backend, each registered by name in :data:`ANSWERERS`:
``extractive`` (the offline default) answers from what the memory holds; ``hf`` runs a
VideoLLM in-process on the retrieved visual tokens; ``openai`` asks any OpenAI-compatible
chat server (both imported on first use).
"""

from __future__ import annotations

from .base import ANSWERERS, create_answerer
from .extractive import ExtractiveAnswerer, best_text_line, evidence_of, parse_options, words

ANSWERERS.register_lazy("openai", "pipelines.answerers.openai", package="httpx", extra="openai")

__all__ = ["ANSWERERS", "create_answerer", "ExtractiveAnswerer", "best_text_line", "evidence_of",
           "parse_options", "words"]
