"""shopaug.serve: the HTTP service (extra ``[serve]``).

``create_app(settings, loader)`` builds the FastAPI app; :func:`run` serves a run directory with
uvicorn (what ``shopaug serve`` calls). FastAPI and uvicorn are imported only when used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopaug.errors import require
from shopaug.serve.backend import BackendLoader, Hit, SearchBackend, UnknownProductError
from shopaug.serve.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "BackendLoader",
    "Hit",
    "SearchBackend",
    "Settings",
    "UnknownProductError",
    "create_app",
    "run",
]

logger = logging.getLogger(__name__)


def create_app(settings: Settings, loader: BackendLoader) -> FastAPI:
    """Build the FastAPI service; see :func:`shopaug.serve.app.create_app`."""
    require("fastapi", "serve")
    from shopaug.serve.app import create_app as factory

    return factory(settings, loader)


def run(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    loader: BackendLoader,
    log_level: str = "info",
    **settings: Any,
) -> None:
    """Serve ``run_dir`` with uvicorn until interrupted.

    Args:
        run_dir: the run directory (``current`` pointer or ``model/``, feedback database).
        host: interface to bind; keep 127.0.0.1 unless the service sits behind a proxy.
        port: TCP port.
        loader: builds the search backend from a model directory.
        log_level: uvicorn's log level.
        **settings: other :class:`Settings` fields (``admin_token``, ``database_url``, limits).
            The admin token defaults to ``$SHOPAUG_ADMIN_TOKEN``, so it need not appear on a
            command line.
    """
    uvicorn = require("uvicorn", "serve")
    app = create_app(Settings.for_run_dir(run_dir, **settings), loader)
    logger.info("serving %s on http://%s:%d", run_dir, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
