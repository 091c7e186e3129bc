"""The ASGI app that `main.py serve` runs: MONAI Label's own FastAPI app, with three changes.

1. Request bodies over the upload limit are refused with 413 before they are stored.
2. sam2med's routes (routes.py) go first, put there by the app when it starts (`service.on_start`, the one
   place that installs them, for both launches): `POST /infer/{model}` runs in FastAPI's worker threads
   (MONAI Label's version blocks the event loop), so concurrent requests proceed side by side and
   `/info/` answers while a propagation runs; uploads are the request's own; `/logs/` is not served.
3. Any `Sam2MedError` that escapes a route becomes its 4xx answer; a malformed request is a one-line 422; any
   other fault a 500 `{"detail": one line}` (never plain text): `http.install_error_handlers`.

`monailabel start_server` without `--uvicorn_app sam2med.monailabel.server:app` serves MONAI Label's app;
the sam2med app installs the same routes there when it starts, without the body limit.
"""

from __future__ import annotations

import logging
import os

from fastapi.responses import JSONResponse
from monailabel.app import app

from sam2med.monailabel.appconfig import DEFAULT_MAX_UPLOAD_MB, MAX_UPLOAD_ENV
from sam2med.monailabel.auth import install_token_check
from sam2med.monailabel.http import install_error_handlers

logger = logging.getLogger(__name__)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse POST/PUT bodies over `limit_bytes` (by Content-Length, or while streaming)."""

    def __init__(self, app, limit_bytes: int):
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit_bytes:
            return await self._refuse(send)
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    raise _TooLarge()
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        detail = f"request body over the {self.limit_bytes / 1e6:.0f} MB upload limit"
        await JSONResponse({"detail": detail}, status_code=413)({"type": "http"}, None, send)


def _install() -> None:
    install_token_check()
    limit_mb = float(os.environ.get(MAX_UPLOAD_ENV) or DEFAULT_MAX_UPLOAD_MB)
    app.add_middleware(BodyLimit, limit_bytes=int(limit_mb * 1e6))

    install_error_handlers(app)

    logger.info("sam2med server app: infer runs in worker threads; uploads limited to %.0f MB", limit_mb)


_install()

__all__ = ["app"]
