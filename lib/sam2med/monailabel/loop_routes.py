"""The active-learning loop's routes: sam2med's versions of MONAI Label's `/train/`, and rollback.

- `POST /train/{model}` (and `POST /train/`): the body is checked before anything starts (train_task's
  `validate_train_params`: a 422 naming the bad key; a raw NaN is a 422 too), and a second training while
  one is submitted or running is a 429 "already running", however soon after the first (MONAI Label
  itself answers 429 only once the first job's process exists, and queues with `enqueue`).
- `DELETE /train/`: stops the job, then leaves a true state: `train_stats` "stopped" with the step reached,
  no temporary or unpublished checkpoint.
- `GET /train/`: MONAI Label's answer, or after a restart the kept history (publishing.HISTORY).
- `POST /sam2med/rollback`: the previous model becomes current again (refused while a training runs).
Every finished job (done, refused, failed, stopped) is recorded in the history by `finish`.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from typing import Any, Callable, Dict

from fastapi import Depends, HTTPException, Request
from monailabel.config import RBAC_ADMIN, RBAC_USER, settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.async_tasks.utils import processes, run_background_task, stop_background_task, tasks

from sam2med.errors import InputError
from sam2med.monailabel.lifetime import stop_job
from sam2med.monailabel.publishing import (
    FINISHED,
    NothingToRollBack,
    append_history,
    read_history,
    read_stats,
    remove_leftovers,
    rollback,
    write_stats,
)
from sam2med.monailabel.train_task import validate_train_params

logger = logging.getLogger(__name__)

API = settings.MONAI_LABEL_API_STR
TRAIN = "train"
ACTIVE = ("SUBMITTED", "RUNNING")
_lock = threading.Lock()  # one start / stop / finish at a time


def _admin() -> Any:
    return Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))


def _user() -> Any:
    return Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))


def _state_dir() -> str | None:
    services = getattr(app_instance(), "services", None)
    return services.config.state_dir if services is not None else None


def _now() -> str:
    return datetime.datetime.today().strftime("%Y-%m-%d %H:%M:%S")


def active_task() -> dict | None:
    return next((t for t in tasks(TRAIN) if t.get("status") in ACTIVE), None)


async def _json_body(request: Request) -> Any:
    """The request body as JSON with finite numbers only (a raw NaN or Infinity is a 422); empty means {}."""
    body = await request.body()
    if not body.strip():
        return {}

    def refuse(name: str) -> Any:
        raise ValueError(f"the non-finite number {name} is not JSON: give finite numbers")

    try:
        return json.loads(body, parse_constant=refuse)
    except RecursionError:
        raise HTTPException(status_code=422, detail="request body is nested too deeply") from None
    except ValueError as err:  # JSONDecodeError included
        raise HTTPException(status_code=422, detail=f"request body: {str(err).splitlines()[0][:200]}") from None


def _checked(params: Any) -> Dict[str, Any]:
    try:
        return validate_train_params(params if params is not None else {})
    except InputError as err:
        raise HTTPException(status_code=422, detail=str(err)) from None


def _submit(model: str, params: Dict[str, Any]) -> dict:
    """Start one training job unless one is submitted or running (429)."""
    instance = app_instance()
    if model not in instance.info()["trainers"]:
        raise HTTPException(status_code=404, detail=f"no trainer {model[:80]!r}; this server has "
                                                    f"{', '.join(instance.info()['trainers']) or 'none'}")
    with _lock:
        running = active_task()
        if running is not None:
            raise HTTPException(status_code=429, detail=f"a training is already running (task {running['id']}, "
                                                        f"{running['status']}); stop it with DELETE /train/ or wait")
        state_dir = _state_dir()
        if state_dir:  # until the job says "running": a stop or crash before then is not read as the last run's end
            write_stats(state_dir, {"status": "submitted", "params": params, "submitted": _now()})
        task = run_background_task({"model": model, **params}, TRAIN, callback=finish)
    logger.info("training %s submitted: task %s, %s", model, task["id"], params)
    return task


async def start_training(model: str, request: Request, run_sync: bool = False, enqueue: bool = False,
                         user: User = _admin()):
    if run_sync:
        raise HTTPException(status_code=422, detail="run_sync is not supported: training runs in its own process")
    return _submit(model, _checked(await _json_body(request)))


async def start_all_training(request: Request, run_sync: bool = False, user: User = _admin()):
    """MONAI Label's deprecated `POST /train/`: {trainer: options}; here one trainer, so one job."""
    if run_sync:
        raise HTTPException(status_code=422, detail="run_sync is not supported: training runs in its own process")
    body = await _json_body(request)
    trainers = list(app_instance().info()["trainers"])
    if not isinstance(body, dict) or any(k not in trainers for k in body):
        raise HTTPException(status_code=422, detail=f"POST /train/ takes {{trainer: options}} with trainers {', '.join(trainers)}")
    return {m: {"result": _submit(m, _checked(body.get(m) or {})), "detail": None} for m in trainers}


def finish(task: dict, stopped_by: str | None = None) -> None:
    """Make the state true once a job ended: stats say how (a killed job cannot say it itself), leftovers removed,
    the job added to the history. Runs once per job (MONAI Label's callback and a stop may both call it)."""
    state_dir = _state_dir()
    if not state_dir:
        return
    with _lock:
        if task.get("sam2med_finished"):
            return
        task["sam2med_finished"] = True
        stats = read_stats(state_dir)
        stopped_by = stopped_by or ("DELETE /train/" if task.get("status") == "STOPPED" else None)
        if stats.get("status") not in FINISHED:  # the job could not say how it ended (killed, crashed)
            if stopped_by:
                status, reason = "stopped", f"stopped by {stopped_by} at step {stats.get('epoch', 0)} of {stats.get('total_epochs', '?')}"
            else:
                last = list(task.get("details") or [])[-1:] or [""]
                status, reason = "failed", f"the training process ended ({task.get('status')}) before finishing: {last[0][:200]}"
            stats = {**stats, "status": status, "reason": reason, "published": False, "pid": None}
            write_stats(state_dir, stats)
        remove_leftovers(state_dir)
        task["train_stats"] = stats
        record = {k: (list(v) if k == "details" else v) for k, v in task.items() if k != "sam2med_finished"}
        append_history(state_dir, record)
    logger.info("training task %s ended: %s%s", task.get("id"), stats.get("status"),
                f" ({stats['reason']})" if stats.get("reason") else "")


def stop_training(user: User = _admin()):
    deadline = time.monotonic() + 10
    while active_task() is not None and not processes(TRAIN) and time.monotonic() < deadline:
        time.sleep(0.05)  # submitted a moment ago: its process is about to exist
    running = next(iter(processes(TRAIN).items()), None)
    task = stop_background_task(TRAIN)
    if running is not None:
        try:
            running[1].wait(timeout=30)  # killed: gone before the state is made true
        except Exception as err:  # the MONAI Label thread may reap it first
            logger.debug("waiting for the stopped training: %s", err)
    if task is None:
        return None
    finish(task, stopped_by="DELETE /train/")
    return _public(task)


def training_status(all: bool = False, check_if_running: bool = False, user: User = _user()):
    current = tasks(TRAIN)
    if check_if_running:
        running = active_task()
        if running is None:
            raise HTTPException(status_code=404, detail="No Train Tasks are currently Running")
        return _public(running)
    kept = [r for r in read_history(_state_dir()) if r.get("id") not in {t["id"] for t in current}]
    everything = kept + [_public(t) for t in current]
    if not everything:
        raise HTTPException(status_code=404, detail="No Train Tasks Found")
    return everything if all else everything[-1]


def _public(task: dict) -> dict:
    return {k: (list(v) if k == "details" else v) for k, v in task.items() if k != "sam2med_finished"}


def rollback_model(user: User = _admin()):
    if active_task() is not None:
        raise HTTPException(status_code=409, detail="a training is running: stop it (DELETE /train/) before a rollback")
    state_dir = _state_dir()
    if not state_dir:
        raise HTTPException(status_code=409, detail="this server has no state folder: nothing was published")
    try:
        pointer = rollback(state_dir)
    except NothingToRollBack as err:
        raise HTTPException(status_code=409, detail=str(err)) from None
    return {"model_version": pointer["version"], "rolled_back_from": pointer["rolled_back_from"]}


def recover_after_restart(state_dir: str | None) -> None:
    """At server start: a training the last server left (killed with it, or still running) is stopped and recorded
    as failed; temporary and unpublished checkpoints are removed."""
    if not state_dir:
        return
    stats = read_stats(state_dir)
    if stats.get("status") in ("submitted", "running"):
        pid = stats.get("pid")
        killed = isinstance(pid, int) and stop_job(pid)
        reason = ("the server stopped during this training; its process (pid %d) was still running and was stopped" % pid
                  if killed else "the server stopped during this training")
        stats = {**stats, "status": "failed", "reason": reason, "published": False, "pid": None}
        write_stats(state_dir, stats)
        append_history(state_dir, {"id": f"before-restart-{stats.get('start_ts')}", "status": "ERROR", "end_ts": _now(),
                                   "train_stats": stats})
        logger.warning("training left by the previous server: %s", reason)
    remove_leftovers(state_dir)


def loop_routes() -> list[tuple[str, str, Callable[..., Any], str]]:
    return [
        ("POST", f"{API}/train/{{model}}", start_training, f"{RBAC_ADMIN}Run Training Task (options checked first)"),
        ("POST", f"{API}/train/", start_all_training, f"{RBAC_ADMIN}Run All Training Tasks"),
        ("DELETE", f"{API}/train/", stop_training, f"{RBAC_ADMIN}Stop Training Task"),
        ("GET", f"{API}/train/", training_status, f"{RBAC_USER}Status of the Training Task (history kept across restarts)"),
        ("POST", "/sam2med/rollback", rollback_model, f"{RBAC_ADMIN}Serve the previous model again"),
    ]
