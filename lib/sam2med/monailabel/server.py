"""The ASGI app that `main.py serve` runs: MONAI Label's own FastAPI app, with three changes.

1. Request bodies over the upload limit are refused with 413 before they are stored.
2. `POST /infer/{model}` runs in FastAPI's worker threads (MONAI Label's version blocks the event loop),
   so concurrent requests proceed side by side and `/info/` answers while a propagation runs; request
   params cannot override `image` or `label`, and an unknown image id is a 404 before any upload is read.
3. Any `Sam2MedError` that escapes a route becomes its 4xx answer.

`monailabel start_server` without `--uvicorn_app sam2med.monailabel.server:app` serves the same app
with MONAI Label's routes; the app's own guard (service.py) still applies there.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional

from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from monailabel.app import app
from monailabel.config import RBAC_USER, settings
from monailabel.datastore.local import LocalDatastore
from monailabel.endpoints.infer import ResultType, run_inference
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from sam2med.errors import Sam2MedError
from sam2med.monailabel.appconfig import DEFAULT_MAX_UPLOAD_MB, MAX_UPLOAD_ENV
from sam2med.monailabel.http import status_of
from sam2med.monailabel.ohif import install_ohif_routes
from sam2med.monailabel.safety import check_image_id

logger = logging.getLogger(__name__)

RESERVED_PARAMS = ("image", "label", "file", "image_id", "session", "model")
INFER_PATH = f"{settings.MONAI_LABEL_API_STR}/infer/{{model}}"


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


def _infer_route(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),
    output: Optional[ResultType] = None,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    try:
        request_params = json.loads(params) if params else {}
    except ValueError as err:
        raise HTTPException(status_code=400, detail=f"params is not valid JSON ({err})") from None
    if not isinstance(request_params, dict):
        raise HTTPException(status_code=400, detail="params must be a JSON object")
    dropped = [key for key in RESERVED_PARAMS if key in request_params]
    for key in dropped:
        request_params.pop(key)
    if dropped:
        logger.warning("infer %s: ignored params %s (set by the server, not the request)", model, dropped)
    if not file and not session_id:
        try:
            check_image_id(image)
        except Sam2MedError as err:
            raise HTTPException(status_code=status_of(err), detail=str(err)) from None
        datastore = app_instance().datastore()
        if isinstance(datastore, LocalDatastore) and not datastore.get_image_uri(image):
            raise HTTPException(status_code=404, detail=f"image {image!r} is not in the datastore")
    return run_inference(background_tasks, model, image, session_id, json.dumps(request_params), file, label, output)


def _install() -> None:
    limit_mb = float(os.environ.get(MAX_UPLOAD_ENV) or DEFAULT_MAX_UPLOAD_MB)
    app.add_middleware(BodyLimit, limit_bytes=int(limit_mb * 1e6))
    app.router.routes[:] = [r for r in app.router.routes
                            if not (isinstance(r, APIRoute) and r.path == INFER_PATH and "POST" in r.methods)]
    app.add_api_route(INFER_PATH, _infer_route, methods=["POST"], tags=["Infer"],
                      summary=f"{RBAC_USER}Run Inference for supported model")
    # first match wins: put ours before MONAI Label's (which newer FastAPI keeps inside an included router)
    app.router.routes.insert(0, app.router.routes.pop())
    install_ohif_routes(app)

    @app.exception_handler(Sam2MedError)
    async def _sam2med_error(request: Request, err: Sam2MedError):
        return JSONResponse({"detail": str(err)}, status_code=status_of(err))

    logger.info("sam2med server app: infer runs in worker threads; uploads limited to %.0f MB", limit_mb)


_install()

__all__ = ["app"]
