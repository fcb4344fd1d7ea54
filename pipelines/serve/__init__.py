"""``streamvid serve``: many live streams questioned over HTTP, with a web page at ``/``.

:func:`create_app` builds the ASGI app over a :class:`pipelines.live.LiveSession`;
:func:`run` starts it on uvicorn. Needs the ``serve`` extra (Starlette, uvicorn).
"""

from __future__ import annotations

import signal

from streamvid.errors import MissingDependencyError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def create_app(*args, **kwargs):
    try:
        from .app import create_app as _create
    except ImportError as err:
        raise MissingDependencyError("streamvid serve", err.name or "starlette", "serve") from err
    return _create(*args, **kwargs)


def run(app, host: str, port: int) -> None:
    """Serve ``app`` until Ctrl-C (open event streams are closed after 3 s)."""
    try:
        import uvicorn
    except ImportError as err:
        raise MissingDependencyError("streamvid serve", "uvicorn", "serve") from err
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=3, access_log=False)
    # uvicorn stops on SIGTERM, then raises it again: end as a normal exit so the caller's
    # session commits and closes
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    uvicorn.Server(config).run()


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)
