"""streamvid: streaming long-video understanding.

Frames -> cached encoder -> token pruner / keyframes -> clip memories (FAISS) ->
question-aware retrieval under a fixed visual budget -> answer.
"""

from .config import Config
from .errors import (ConfigError, DecodeError, MissingDependencyError, ModelError, QueryError,
                     SourceError, StoreError, StreamvidError, ValidationError)

__version__ = "0.1.0"

__all__ = [
    "Config", "StreamvidError", "ConfigError", "SourceError", "DecodeError",
    "MissingDependencyError", "StoreError", "QueryError", "ModelError", "ValidationError",
    "__version__",
]
