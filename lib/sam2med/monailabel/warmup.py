"""Warm-up: encode the slices of a series the annotator opens (or is about to get) in the background.

`POST /sam2med/warmup` {"image": id, "axis": "axial", "center": k, "window": "auto"} answers 202
{"scheduled": n} at once (n: the slices of that axis, queued nearest `center` first; `center` defaults to the
middle slice) and one background worker encodes them into the shared feature cache, so that the first Run
on that series costs little more than tracking. `GET /sam2med/warmup?image=id&axis=axial` says how far it got.
The next-sample hook (`AppServices.after_next_sample`) schedules the sampled image the same way.

A warm-up never slows a request: it encodes one slice at a time, each a background step of the engine's
`EncoderPriority`, and every infer request runs in its foreground (engine/priority.py), so a request waits for
at most the one slice being encoded and then has the device to itself. That is why the warm-up is on by
default on the CPU too (it used to be on only with CUDA: without yielding, on a CPU it competed with requests
for the same cores).

Jobs: the newest request goes first (the series just opened); a running job yields to a newer one after its
current slice and resumes later (its encoded slices are cache hits); a request for a job already known
re-centres it. At most `max_jobs` are kept, the oldest unfinished dropped. Failures are logged, never raised.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from monailabel.interfaces.utils.app import app_instance
from starlette.concurrency import run_in_threadpool

from sam2med.errors import InputError, PromptError
from sam2med.geometry import Axis
from sam2med.io import load_volume
from sam2med.monailabel.auth import user_role
from sam2med.monailabel.http import call
from sam2med.monailabel.params import parse_window
from sam2med.monailabel.results import image_grid
from sam2med.monailabel.safety import NotFoundError, check_image_id
from sam2med.monailabel.shared_propagator import SharedEngine

logger = logging.getLogger(__name__)

AXES = ("axial", "coronal", "sagittal")
QUEUED, RUNNING, DONE, FAILED, DROPPED = "queued", "running", "done", "failed", "dropped"


@dataclass
class WarmUpJob:
    """One volume and axis to encode; `result()` waits for it to end (done, failed or dropped)."""

    path: str
    axis: Axis
    window: str
    center: int | None = None
    state: str = QUEUED
    encoded: int = 0  # slices this job encoded
    cached: int = 0  # slices it found in the cache
    stats: dict = field(default_factory=dict)
    recentred: bool = False  # the center changed while it ran: restart from the new one
    order: int = 0  # the newest job runs first
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.path, int(self.axis), self.window)

    def result(self, timeout: float | None = None) -> dict:
        if not self._ended.wait(timeout):
            raise TimeoutError(f"warm-up of {os.path.basename(self.path)} still {self.state} after {timeout}s")
        return self.stats

    def to_json(self) -> dict:
        return {"state": self.state, "axis": self.axis.name.lower(), "window": self.window, "center": self.center,
                "encoded": self.encoded, "cached": self.cached, **({"stopped": self.stats["stopped"]}
                                                                    if self.stats.get("stopped") else {})}


class WarmUp:
    """One background worker over a few jobs, newest first (see the module docstring)."""

    def __init__(self, engine: SharedEngine, axis: Axis = Axis.AXIAL, window: str = "auto", max_jobs: int = 4):
        self.engine = engine
        self.axis = axis
        self.window = window
        self.max_jobs = max_jobs
        self._jobs: dict[tuple[str, int, str], WarmUpJob] = {}
        self._cond = threading.Condition()
        self._counter = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="sam2med-warmup", daemon=True)
        self._thread.start()

    def schedule(self, image_path: str, axis: "Axis | str | None" = None, center: int | None = None,
                 window: str | None = None) -> WarmUpJob:
        """Queue `image_path` (or re-centre and move to the front the job already known for it)."""
        job = WarmUpJob(str(image_path), Axis.parse(axis) if axis is not None else self.axis, window or self.window, center)
        with self._cond:
            self._counter += 1
            known = self._jobs.get(job.key)
            if known is not None and known.state in (QUEUED, RUNNING):
                known.recentred = known.recentred or (known.state == RUNNING and center != known.center)
                known.center, known.order = center, self._counter
                job = known
            else:
                job.order = self._counter
                self._jobs[job.key] = job
            self._forget_oldest()
            self._cond.notify_all()
        return job

    def job(self, image_path: str, axis: "Axis | str | None" = None, window: str | None = None) -> WarmUpJob | None:
        with self._cond:
            return self._jobs.get((str(image_path), int(Axis.parse(axis) if axis is not None else self.axis),
                                   window or self.window))

    def _forget_oldest(self) -> None:
        while len(self._jobs) > self.max_jobs:
            oldest = min(self._jobs.values(), key=lambda j: (j.state in (QUEUED, RUNNING), j.order))
            if oldest.state == RUNNING:
                oldest.recentred = True  # stops after its slice; the worker sees it dropped
            elif oldest.state == QUEUED:
                oldest.state = DROPPED
                oldest.stats = {"error": "dropped: newer warm-ups were asked for"}
                oldest._ended.set()
            del self._jobs[oldest.key]

    def _next(self) -> WarmUpJob | None:
        with self._cond:
            while not self._closed:
                queued = [j for j in self._jobs.values() if j.state == QUEUED]
                if queued:
                    job = max(queued, key=lambda j: j.order)
                    job.state, job.recentred = RUNNING, False
                    return job
                self._cond.wait()
            return None

    def _should_stop(self, job: WarmUpJob) -> bool:
        """Between slices: stop when closing, re-centred, dropped, or a newer job waits."""
        with self._cond:
            return self._closed or job.recentred or self._jobs.get(job.key) is not job or any(
                j.state == QUEUED and j.order > job.order for j in self._jobs.values())

    def _work(self) -> None:
        while (job := self._next()) is not None:
            self._run(job)

    def _run(self, job: WarmUpJob) -> None:
        start = time.perf_counter()
        try:
            volume = load_volume(job.path)
            stats = self.engine.get("warm-up").warm_up(volume, job.axis, job.window, center=job.center,
                                                       should_stop=lambda: self._should_stop(job))
            job.encoded += stats["request_miss_slices"]
            job.cached += stats["request_hit_slices"]
            job.stats = stats
            with self._cond:
                if stats.get("stopped") == "asked to stop" and not self._closed and self._jobs.get(job.key) is job:
                    job.state = QUEUED  # yielded to a newer job or re-centred: resumes later
                    self._cond.notify_all()
                    return
                dropped = self._jobs.get(job.key) is not job
            job.state = DROPPED if dropped else DONE
            logger.info("warm-up of %s (%s): %d slices encoded, %d cached in %.1fs%s", os.path.basename(job.path),
                        job.axis.name.lower(), job.encoded, job.cached, time.perf_counter() - start,
                        f" ({stats['stopped']})" if stats.get("stopped") else "")
        except Exception as err:  # a warm-up only saves time later; it must never take the server down
            logger.warning("warm-up of %s failed: %s", os.path.basename(job.path), err)
            job.state, job.stats = FAILED, {"error": str(err)}
        job._ended.set()

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


# -------------------------------------------------------------------------------------------- the routes


def parse_warmup(body: Any) -> tuple[str, Axis, int | None, str]:
    """(image id, axis, center or None, window) of a warm-up request body; an `InputError` naming what is wrong."""
    if not isinstance(body, dict):
        raise InputError('the body must be a JSON object {"image": ID, "axis": "axial", "center": K}')
    unknown = sorted(set(body) - {"image", "axis", "center", "window"})
    if unknown:
        raise InputError(f"unknown key {unknown[0][:40]!r}: a warm-up takes image, axis, center and window")
    image = body.get("image")
    if not isinstance(image, str) or not image:
        raise InputError("image must be a datastore image id (text)")
    axis = body.get("axis", "axial")
    if not isinstance(axis, str) or axis.strip().lower() not in AXES:
        raise InputError(f"axis must be one of {', '.join(AXES)}, got {str(axis)[:40]!r}")
    center = body.get("center")
    if center is not None and (isinstance(center, bool) or not isinstance(center, (int, float)) or center != int(center)):
        raise InputError(f"center must be a whole slice index, got {str(center)[:40]!r}")
    window = body.get("window", "auto")
    if not isinstance(window, str) or not window.strip():
        raise InputError("window must be a window name or LEVEL,WIDTH text")
    return image, Axis.parse(axis.strip().lower()), None if center is None else int(center), window.strip()


def _image_path(image: str) -> str:
    check_image_id(image)
    uri = app_instance().datastore().get_image_uri(image)
    if not uri or not os.path.exists(uri):
        raise NotFoundError(f"image {image!r} is not in the datastore")
    return uri


def schedule_warmup(body: Any) -> dict:
    """Check a warm-up request, queue it; {"scheduled": slices queued} (0 when warm-up is off on this server)."""
    image, axis, center, window = parse_warmup(body)
    try:
        parse_window(window)
    except PromptError as err:  # the infer route's 422 for a bad window; a bad warm-up request is a 400
        raise InputError(str(err)) from None
    path = _image_path(image)
    grid = load_volume(path).grid if os.path.isdir(path) else image_grid(path)
    slices = grid.num_slices(axis)
    if center is not None and not 0 <= center < slices:
        raise InputError(f"center {center} is outside the {slices} {axis.name.lower()} slices of image {image!r} (0..{slices - 1})")
    warmup = _warmup()
    if warmup is None:
        return {"scheduled": 0, "detail": "warm-up is off on this server (--warmup false)"}
    warmup.schedule(path, axis, center, window)
    return {"scheduled": slices}


def warmup_status(image: str, axis: str, window: str) -> dict:
    if axis.strip().lower() not in AXES:
        raise InputError(f"axis must be one of {', '.join(AXES)}, got {axis[:40]!r}")
    path = _image_path(image)
    job = None if _warmup() is None else _warmup().job(path, axis.strip().lower(), window)
    if job is None:
        raise NotFoundError(f"no warm-up of image {image!r} ({axis}) is known")
    return {"image": image, **job.to_json()}


def _warmup() -> WarmUp | None:
    services = getattr(app_instance(), "services", None)
    return getattr(services, "warmup", None)


async def _post_warmup(request: Request, user: Any = user_role()) -> JSONResponse:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError as err:
        raise HTTPException(status_code=400, detail=f"the body is not JSON ({str(err).splitlines()[0][:120]})") from None
    return JSONResponse(status_code=202, content=await run_in_threadpool(call, schedule_warmup, body))


def _get_warmup(image: str = "", axis: str = "axial", window: str = "auto", user: Any = user_role()) -> dict:
    return call(warmup_status, image, axis, window)


def warmup_routes() -> list[tuple[str, str, Callable[..., Any], str]]:
    return [
        ("POST", "/sam2med/warmup", _post_warmup, "Encode a series' slices in the background, nearest the center first (202)"),
        ("GET", "/sam2med/warmup", _get_warmup, "How far the warm-up of a series got"),
    ]
