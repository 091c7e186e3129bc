"""What the app class in apps/sam2med/main.py delegates to: config, tasks, strategies, the infer guard, hooks."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict

from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy

from sam2med.corrections import CorrectionStore
from sam2med.errors import InputError
from sam2med.monailabel.appconfig import AppConfig
from sam2med.monailabel.datastore import GuardedLocalDatastore
from sam2med.monailabel.engine import SharedEngine
from sam2med.monailabel.http import to_http
from sam2med.monailabel.safety import AccessError, check_image_reference, check_upload_size, is_upload, remove_uploads
from sam2med.monailabel.strategies import STRATEGIES
from sam2med.monailabel.tasks import TASKS
from sam2med.monailabel.warmup import WarmUp

logger = logging.getLogger(__name__)

APP_JSON = "app.json"


def read_app_json(app_dir: str | os.PathLike) -> Dict[str, Any]:
    path = Path(app_dir) / APP_JSON
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the app description ({err})") from None


def is_url(studies: str) -> bool:
    return studies.startswith(("http://", "https://"))


class AppServices:
    """The app's parts, built from app.json and `--conf` before MONAI Label asks for tasks and datastore."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, Any]):
        self.description = read_app_json(app_dir)
        self.config = AppConfig.from_conf(conf or {}, studies, self.description)
        self.engine = SharedEngine(self.config)
        self.warmup: WarmUp | None = WarmUp(self.engine) if self._warmup_enabled() else None

    def _warmup_enabled(self) -> bool:
        if self.config.warmup != "auto":
            return self.config.warmup == "true"
        import torch

        return self.config.device != "cpu" and torch.cuda.is_available()

    def local_datastore(self, studies: str) -> LocalDatastore:
        return GuardedLocalDatastore(
            studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def infers(self, datastore: Callable[[], Datastore]) -> Dict[str, InferTask]:
        corrections = CorrectionStore(Path(self.config.state_dir) / "corrections") if self.config.state_dir else None
        return {name: TASKS[name](self.engine, datastore, self.config.labels, corrections) for name in self.config.tasks}

    def strategies(self) -> Dict[str, Strategy]:
        return {name: STRATEGIES[name]() for name in self.config.strategies}

    def info(self) -> Dict[str, Any]:
        return {"model": self.engine.model_name, "loaded": self.engine.loaded, "device": self.config.device,
                "image_size": self.config.image_size, "warmup": self.warmup is not None}

    def on_start(self) -> None:
        """Load the model now (conf preload true) or say that the first request will."""
        if not self.config.preload:
            logger.info("SAM2.1 %s loads lazily, on the first request (--conf preload false)", self.engine.model_name)
            return
        try:
            self.engine.get("at start")
        except Exception as err:  # keep serving: requests will answer with the same message
            logger.error("SAM2.1 %s could not be loaded at start: %s; requests will retry and report it", self.engine.model_name, err)

    def guarded_infer(self, request: Dict[str, Any], datastore: Datastore, sessions_root: str | None,
                      infer: Callable[[Dict[str, Any]], Dict[str, Any]]) -> Dict[str, Any]:
        """Check what the request points at, run `infer`, turn user errors into 4xx, always remove uploads."""
        image, label = request.get("image"), request.get("label")
        try:
            local = isinstance(datastore, LocalDatastore)
            check_image_reference(image, (lambda i: bool(datastore.get_image_uri(i))) if local else (lambda i: True),
                                  [sessions_root] if sessions_root else [])
            if label and not is_upload(label):
                raise AccessError("'label' must be a file uploaded with the request, not a server path")
            check_upload_size(image, self.config.max_upload_bytes, "image")
            check_upload_size(label, self.config.max_upload_bytes, "label")
            request = dict(request)
            request["image_id"] = image if not os.path.isabs(str(image)) else None
            return infer(request)
        except Exception as err:
            http = to_http(err)
            if http is None:
                raise
            logger.info("infer %s on %r rejected (%d): %s", request.get("model"), image, http.status_code, http.detail)
            raise http from None
        finally:
            remove_uploads(image, label)

    def after_next_sample(self, result: Dict[str, Any]) -> None:
        if self.warmup is not None and result and result.get("path"):
            self.warmup.schedule(result["path"])
