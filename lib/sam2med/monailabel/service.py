"""What the app class in apps/sam2med/main.py delegates to: config, tasks, strategies, the infer guard, hooks."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

from sam2med.monailabel.corrections import CorrectionStore
from sam2med.errors import InputError
from sam2med.monailabel.appconfig import AppConfig
from sam2med.monailabel.datastore import GuardedLocalDatastore
from sam2med.monailabel.shared_propagator import SharedEngine
from sam2med.monailabel.params import parse_bool
from sam2med.monailabel.http import http_errors
from sam2med.monailabel.lifetime import mark_server_process
from sam2med.monailabel.rescoring import PromptStore, Rescorer
from sam2med.monailabel.routes import install_routes
from sam2med.monailabel.safety import (
    AccessError,
    ConflictError,
    check_image_reference,
    check_upload_size,
    is_upload,
    is_within,
    remove_uploads,
)
from sam2med.monailabel.scoring import SCORING_METHODS
from sam2med.monailabel.snapshot import ImageSnapshot, SnapshotDatastore, take_snapshot
from sam2med.monailabel.strategies import STRATEGIES
from sam2med.monailabel.tasks import TASKS
from sam2med.monailabel.train_task import Sam2FinetuneTask
from sam2med.monailabel.loop_routes import recover_after_restart
from sam2med.monailabel.warmup import WarmUp

logger = logging.getLogger(__name__)

APP_JSON = "app.json"


@dataclass(frozen=True)
class GuardedInfer:
    """A checked infer request and the datastore its task reads (a private snapshot of a datastore image)."""

    request: Dict[str, Any]
    datastore: Datastore
    snapshot: ImageSnapshot | None


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
        self.corrections = CorrectionStore(Path(self.config.state_dir) / "corrections") if self.config.state_dir else None
        self.rescorer = Rescorer(self.engine, PromptStore(Path(self.config.state_dir) / "prompts") if self.config.state_dir else None)
        self.warmup: WarmUp | None = WarmUp(self.engine) if self._warmup_enabled() else None

    def _warmup_enabled(self) -> bool:
        """On unless `--warmup false`. It used to be on only with CUDA ("auto"): on a CPU an encoding warm-up
        competed with requests for the same cores. It now yields: one slice at a time, each a background step of
        the engine's `EncoderPriority`, so a request waits for at most one slice's encoding (warmup.py)."""
        return self.config.warmup != "false"

    def local_datastore(self, studies: str) -> LocalDatastore:
        return GuardedLocalDatastore(
            studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def infers(self, datastore: Callable[[], Datastore]) -> Dict[str, InferTask]:
        tasks = {name: TASKS[name](self.engine, datastore, self.config.labels, self.corrections) for name in self.config.tasks}
        for task in tasks.values():
            task.prompts = self.rescorer.prompts
        return tasks

    def forget_image(self, image_id: str) -> None:
        """Drop what the app keeps of a removed image (its correction state)."""
        if self.corrections is not None:
            self.corrections.remove(image_id)

    def strategies(self) -> Dict[str, Strategy]:
        return {name: STRATEGIES[name](self.rescorer) for name in self.config.strategies}

    def trainers(self) -> Dict[str, Any]:
        return {"sam2_finetune": Sam2FinetuneTask(self)} if "sam2_finetune" in self.description.get("trainers", []) else {}

    def scoring_methods(self) -> Dict[str, ScoringMethod]:
        return {name: SCORING_METHODS[name](self.rescorer) for name in self.description.get("scoring", [])}

    def info(self) -> Dict[str, Any]:
        return {"model": self.engine.model_name, "model_title": self.engine.model_title, "model_version": self.engine.current_version(),
                "loaded": self.engine.loaded, "device": self.config.device, "image_size": self.engine.image_size,
                "warmup": self.warmup is not None}

    @staticmethod
    def wants_saved_result(request: Dict[str, Any]) -> bool:
        """`save_label` of an infer request (true/false, default false): keep the result in the datastore (as
        DICOM-SEG on a DICOMweb server) under `label_tag`. A text "false" is false, not a non-empty string."""
        return parse_bool(request.get("save_label"), "save_label", default=False)

    def on_start(self) -> None:
        """Put sam2med's routes into the served app; load the model now (conf preload true) or say that the first request will."""
        from monailabel.app import app as served_app  # the FastAPI app uvicorn serves, whichever launch

        install_routes(served_app)
        mark_server_process()
        recover_after_restart(self.config.state_dir)
        if not self.config.preload:
            logger.info("%s loads lazily, on the first request (--conf preload false)", self.engine.model_title)
            return
        try:
            self.engine.get("at start")
        except Exception as err:  # keep serving: requests will answer with the same message
            logger.error("%s could not be loaded at start: %s; requests will retry and report it", self.engine.model_title, err)

    @contextmanager
    def infer_guard(self, request: Dict[str, Any], datastore: Datastore, sessions_root: str | None) -> Iterator[GuardedInfer]:
        """Check what the request points at; inside, the task runs on the checked request; user errors leave as
        their 4xx; uploads are always removed. Use: `with guard as g: return guard.kept(g, run(g.request, g.datastore))`.

        A path is read only if this request uploaded it (`request_uploads`) or it is the image of the
        session the request named; error details name the image id or "the uploaded seed", never a path.
        A datastore image is read once into a private snapshot (snapshot.py): replaced or removed while the
        request runs, the request is a 409 and its result is not kept (`kept`).
        """
        image, label = request.get("image"), request.get("label")
        session = request.get("session") if isinstance(request.get("session"), dict) else None
        if session and not (sessions_root and isinstance(session.get("image"), str)
                            and is_within(session["image"], [sessions_root])):
            session = None  # a session's image lives in the session store, whatever a request claims
        snapshot: ImageSnapshot | None = None
        foreground = self.engine.priority.foreground(("infer", request.get("model")))
        foreground.__enter__()  # from here a warm-up pauses after its current slice, until the request has ended
        try:
            local = isinstance(datastore, LocalDatastore)
            check_image_reference(image, (lambda i: bool(datastore.get_image_uri(i))) if local else (lambda i: True),
                                  [session["image"]] if session and session.get("image") else [])
            if label and not is_upload(label):
                raise AccessError("'label' must be a file uploaded with the request, not a server path")
            check_upload_size(image, self.config.max_upload_bytes, "image")
            check_upload_size(label, self.config.max_upload_bytes, "label")
            request = dict(request)
            request["image_id"] = image if not os.path.isabs(str(image)) else None
            if local and request["image_id"]:
                snapshot = take_snapshot(str(image), datastore.get_image_uri(image))
            yield GuardedInfer(request, SnapshotDatastore(datastore, snapshot) if snapshot else datastore, snapshot)
        except Exception as err:
            if snapshot is not None and not isinstance(err, ConflictError) and snapshot.changed():
                err = self._conflict(snapshot)  # the failure came from the image changing under the request
            names = self._path_names(image, label, session, datastore, sessions_root)
            if snapshot is not None:  # the task read the request's private copy of the image
                names[snapshot.path] = f"image {snapshot.image_id!r}"
            with http_errors(names, rejected=f"infer {request.get('model')} on {image!r}"):
                raise err
        finally:
            remove_uploads(image, label)
            if snapshot is not None:
                snapshot.remove()
            foreground.__exit__(None, None, None)

    def kept(self, guarded: GuardedInfer, result: Dict[str, Any]) -> Dict[str, Any]:
        """The task's result, unless the image changed while it ran (then its file goes and the request is a 409)."""
        snapshot = guarded.snapshot
        if snapshot is not None and snapshot.changed():
            if result.get("file"):
                Path(result["file"]).unlink(missing_ok=True)
            self._check_snapshot(snapshot)
        return result

    def _conflict(self, snapshot: ImageSnapshot) -> ConflictError:
        try:
            self._check_snapshot(snapshot)
        except ConflictError as err:
            return err
        return ConflictError(f"image {snapshot.image_id!r} changed while it was being segmented")

    def _check_snapshot(self, snapshot: ImageSnapshot) -> None:
        """Raise the 409 of a changed image; a removed image's correction state (written by the run) goes too."""
        if snapshot.changed() == "removed":
            self.forget_image(snapshot.image_id)
        snapshot.check_unchanged()

    @staticmethod
    def _path_names(image: Any, label: Any, session: Dict[str, Any] | None, datastore: Datastore,
                    sessions_root: str | None) -> Dict[str, str]:
        """Server paths a message may hold, and how a client knows each of them."""
        names: Dict[str, str] = {}
        if isinstance(image, str) and image:
            if is_upload(image):
                names[image] = "the uploaded image"
            elif session and image == session.get("image"):
                names[image] = f"the image of session {session.get('name', '')!r}"
            elif isinstance(datastore, LocalDatastore) and datastore.get_image_uri(image):
                names[datastore.get_image_uri(image)] = f"image {image!r}"
        if isinstance(label, str) and label:
            names[label] = "the uploaded seed"
        roots = {getattr(datastore, "_datastore_path", ""): "<studies>", sessions_root or "": "<sessions>",
                 tempfile.gettempdir(): "<tmp>"}
        for root, name in roots.items():
            if root:
                names[root] = name
                names[os.path.realpath(root)] = name
        return names

    def check_strategy(self, request: Dict[str, Any], known: Dict[str, Any]) -> None:
        """An active-learning request must name a registered strategy (404, not MONAI Label's 500)."""
        strategy = request.get("strategy") or "random"
        if not isinstance(strategy, str) or strategy not in known:
            raise HTTPException(status_code=404, detail=f"no active-learning strategy {str(strategy)[:80]!r}; "
                                                        f"this server has {', '.join(known) or 'none'}")

    def after_next_sample(self, result: Dict[str, Any]) -> None:
        if self.warmup is not None and result and result.get("path"):
            self.warmup.schedule(result["path"])
