"""sam2med's versions of the MONAI Label routes that take uploads or serve server files.

Installed ahead of MONAI Label's own routes (first match wins), both by `main.py serve`'s server app and
by the app itself when `monailabel start_server` serves MONAI Label's app, so every launch gets them:

- `POST /infer/{model}`: uploads go to a private folder of this request and are registered as the
  request's uploads (`safety.registered_uploads`); only they are read as uploads and deleted, always,
  when the request ends. A `session_id` must name an existing session. Params are checked JSON.
- `PUT /datastore/label`, `PUT /datastore/image`, `DELETE /datastore/...`: MONAI Label's handlers, with their
  upload files removed when the request ends, also when it is refused, and a full or read-only disk a 507.
- `PUT /session/`: sessions.py (archives unpacked member by member within the upload limit, nothing left on failure).
- `POST /reload`: refused (403). It re-initialises the whole app on every call, without a token.
- `POST /activelearning/{strategy}`: MONAI Label's answer without the image's server `path`, in a worker thread
  (`uncertain` may re-score images with a new model: the event loop, and so `/info/`, must not wait for it).
- `GET /logs/`, `GET /logs/gpu`: refused (403). The log names server paths and other clients' uploads,
  and MONAI Label serves it to anyone who can reach the port.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, List, Optional

from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, UploadFile
from fastapi.routing import APIRoute
from monailabel.config import RBAC_ADMIN, RBAC_ANNOTATOR, RBAC_USER, settings
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.endpoints import activelearning as ml_activelearning
from monailabel.endpoints import datastore as ml_datastore
from monailabel.endpoints.infer import ResultType, run_inference
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.utils.app import app_instance

from sam2med.monailabel import sessions as sam2med_sessions
from sam2med.monailabel.appconfig import DEFAULT_MAX_UPLOAD_MB
from sam2med.monailabel.auth import install_token_check
from sam2med.monailabel.http import RESERVED_PARAMS, call, parse_request_params
from sam2med.monailabel.ohif import ohif_routes
from sam2med.monailabel.ohif_save import save_routes
from sam2med.monailabel.safety import (
    check_image_id,
    check_session_id,
    registered_uploads,
    remove_results,
    upload_suffix,
)
from sam2med.monailabel.loop_routes import loop_routes
from sam2med.monailabel.warmup import warmup_routes

logger = logging.getLogger(__name__)

API = settings.MONAI_LABEL_API_STR
RELOAD_REFUSED = "POST /reload is not served: it re-initialises the app (model, threads) on every call; restart the server instead"
LOGS_REFUSED = "the server log is not served over HTTP (it names server files); read logs/app.log in the app folder on the server"


def _user() -> Any:
    return Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))


def _save_upload(upload: UploadFile, folder: str, stem: str) -> str:
    path = os.path.join(folder, stem + upload_suffix(upload.filename))
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out)
    return path


def infer(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),
    output: Optional[ResultType] = None,
    user: User = _user(),
):
    request_params = parse_request_params(params)
    instance = app_instance()
    if output == ResultType.dicom_seg and not isinstance(instance.datastore(), DICOMWebDatastore):
        raise HTTPException(status_code=400, detail="output=dicom_seg needs a DICOMweb datastore; this server has local files")
    if session_id:
        sessions = instance.sessions()
        call(check_session_id, session_id, lambda s: sessions is not None and sessions.get_session(s) is not None)
    elif not file:
        call(check_image_id, image)
        datastore = instance.datastore()
        if isinstance(datastore, LocalDatastore) and not datastore.get_image_uri(image):
            raise HTTPException(status_code=404, detail=f"image {image!r} is not in the datastore")
    folder = tempfile.mkdtemp(prefix="sam2med_upload_")
    try:
        if file:
            image = _save_upload(file, folder, "image")
        if label:
            request_params["label"] = _save_upload(label, folder, "label")
        with registered_uploads([p for p in (image, request_params.get("label")) if p and p.startswith(folder)]):
            try:
                return call(run_inference, background_tasks, model, image, session_id, json.dumps(request_params),
                             None, None, output)
            except BaseException:
                remove_results()
                raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _now(tasks: BackgroundTasks) -> None:
    """Run a handler's clean-up tasks (MONAI Label registers its upload removal there) right away."""
    for task in tasks.tasks:
        try:
            task.func(*task.args, **task.kwargs)
        except OSError as err:
            logger.warning("clean-up after a request failed: %s", err)


def save_label(
    image: str,
    params: str = Form("{}"),
    tag: str = DefaultLabelTag.FINAL.value,
    label: UploadFile = File(...),
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),
):
    tasks = BackgroundTasks()
    try:
        return call(ml_datastore.save_label, tasks, image, params, tag, label, user.username)
    finally:
        _now(tasks)


def add_image(
    image: Optional[str] = None,
    params: str = Form("{}"),
    file: UploadFile = File(...),
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),
):
    tasks = BackgroundTasks()
    try:
        return call(ml_datastore.add_image, tasks, image, params, file, user.username)
    finally:
        _now(tasks)


def _upload_limit(instance: Any) -> int:
    config = getattr(getattr(instance, "services", None), "config", None)
    return int(getattr(config, "max_upload_bytes", DEFAULT_MAX_UPLOAD_MB * 1e6))


def create_session(
    uncompress: bool = False,
    expiry: int = 0,
    files: List[UploadFile] = File(...),
    user: User = _user(),
):
    instance = app_instance()
    sessions = instance.sessions()
    if sessions is None:
        raise HTTPException(status_code=406, detail="sessions are not enabled on this server")
    return call(sam2med_sessions.create_session, sessions, files, uncompress, expiry, _upload_limit(instance))


def remove_image(id: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))):
    answer = call(ml_datastore.remove_image, id, user.username)
    services = getattr(app_instance(), "services", None)
    if services is not None:
        services.forget_image(id)
    return answer


def remove_label(id: str, tag: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))):
    return call(ml_datastore.remove_label, id, tag, user.username)


def refuse_reload(user: User = _user()):
    raise HTTPException(status_code=403, detail=RELOAD_REFUSED)


def next_sample(strategy: str, params: Optional[dict] = None, user: User = _user()):
    """MONAI Label's next sample without the image's `path` on the server: clients fetch the image by its id."""
    result = call(ml_activelearning.sample, strategy, params, user.username)
    return {k: v for k, v in result.items() if k != "path"}


def refuse_logs():
    raise HTTPException(status_code=403, detail=LOGS_REFUSED)


ROUTES: list[tuple[str, str, Callable[..., Any], str]] = [
    ("POST", f"{API}/infer/{{model}}", infer, f"{RBAC_USER}Run Inference for supported model"),
    ("PUT", f"{API}/datastore/label", save_label, f"{RBAC_ANNOTATOR}Save Finished Label"),
    ("PUT", f"{API}/datastore/image", add_image, f"{RBAC_ANNOTATOR}Upload new Image"),
    ("PUT", f"{API}/datastore/", add_image, f"{RBAC_ANNOTATOR}Upload new Image"),
    ("PUT", f"{API}/session/", create_session, f"{RBAC_USER}Create new session with Image"),
    ("POST", f"{API}/activelearning/{{strategy}}", next_sample, f"{RBAC_USER}Next sample to label (no server path)"),
    ("DELETE", f"{API}/datastore/image", remove_image, f"{RBAC_ADMIN}Remove Image and corresponding labels"),
    ("DELETE", f"{API}/datastore/", remove_image, f"{RBAC_ADMIN}Remove Image and corresponding labels"),
    ("DELETE", f"{API}/datastore/label", remove_label, f"{RBAC_ADMIN}Remove Label"),
    ("POST", "/reload", refuse_reload, "App reload: not served (re-initialises the app on every call)"),
    ("GET", f"{API}/logs/", refuse_logs, f"{RBAC_ADMIN}Server log: not served (names server files)"),
    ("GET", f"{API}/logs/gpu", refuse_logs, f"{RBAC_ADMIN}GPU info: not served"),
]


def install_routes(app) -> None:
    """Put sam2med's routes first in `app` (once); MONAI Label's versions of them are dropped where top-level."""
    if getattr(app.state, "sam2med_routes", False):
        return
    app.state.sam2med_routes = True
    install_token_check()
    for method, path, endpoint, summary in [*ROUTES, *ohif_routes(), *save_routes(), *loop_routes(), *warmup_routes()]:
        app.router.routes[:] = [r for r in app.router.routes
                                if not (isinstance(r, APIRoute) and r.path == path and method in r.methods)]
        app.add_api_route(path, endpoint, methods=[method], summary=summary, tags=["sam2med"])
        # first match wins: put ours before MONAI Label's (which newer FastAPI keeps inside an included router)
        app.router.routes.insert(0, app.router.routes.pop())
    logger.info("sam2med routes installed: %s, and the OHIF extension's", ", ".join(f"{m} {p}" for m, p, _, _ in ROUTES))


__all__ = ["install_routes", "parse_request_params", "RESERVED_PARAMS"]
