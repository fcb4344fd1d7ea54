"""One exception root for everything streamvid raises on purpose.

Every message names the input that failed and, where there is one, the fix.
"""

from __future__ import annotations


class StreamvidError(Exception):
    """Root of all streamvid errors. The CLI prints ``str(err)`` as one line and exits 1."""


class ConfigError(StreamvidError):
    """A configuration value or key is wrong (unknown key, out of range, wrong type)."""


class SourceError(StreamvidError):
    """A frame source cannot be opened or read (missing file, not a video, no stream)."""


class DecodeError(SourceError):
    """Data was found but could not be decoded into frames."""


class MissingDependencyError(StreamvidError):
    """An optional backend needs a package that is not installed."""

    def __init__(self, what: str, package: str, extra: str | None = None):
        fix = f"pip install 'streamvid[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{what} needs the package '{package}', which is not installed; fix: {fix}")
        self.package = package
        self.extra = extra


class UnknownBackendError(ConfigError):
    """A backend name is not registered."""


class ValidationError(StreamvidError, ValueError):
    """A value passed between stages has the wrong shape, dtype or ordering."""


class StoreError(StreamvidError):
    """A memory store cannot be opened, read or written (wrong model, version, corrupted)."""


class QueryError(StreamvidError):
    """A question cannot be asked as given (empty question, unreadable image)."""


class ModelError(StreamvidError):
    """A model cannot be loaded or run."""


class AnswerError(StreamvidError):
    """An answerer could not answer (its server is down, refused the input, replied garbage)."""
