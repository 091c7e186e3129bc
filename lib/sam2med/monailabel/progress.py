"""Progress of running propagations, by an id the server issues, for clients that poll while they wait.

A client asks `POST /sam2med/progress` for an id (192 random bits: not guessable), then names it in one
infer request: the first request to use an id binds it, any other request naming it is refused, and an
id the server did not issue is refused. Entries of running propagations are never dropped to make room;
idle issued ids expire, finished entries are dropped oldest first.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from sam2med.errors import InputError
from sam2med.monailabel.safety import ConflictError, NotFoundError

_PROGRESS_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
ISSUED, QUEUED, DONE, FAILED = "issued", "queued", "done", "failed"
ISSUED_TTL_SECONDS = 600.0


class ProgressBoard:
    """How far each running propagation is, by a server-issued id; bounded, finished and idle entries dropped first."""

    def __init__(self, max_entries: int = 256):
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries

    @staticmethod
    def check_id(progress_id: str) -> str:
        if not isinstance(progress_id, str) or not _PROGRESS_ID.match(progress_id):
            raise InputError("progress_id must be 8 to 64 letters, digits, '-' or '_'")
        return progress_id

    def issue(self) -> str:
        """A new unguessable id, for one infer request."""
        progress_id = secrets.token_urlsafe(24)
        with self._lock:
            self._entries[progress_id] = {"stage": ISSUED, "done": 0, "total": 0, "time": time.time()}
            self._make_room()
        return progress_id

    def _make_room(self) -> None:
        now = time.time()
        for key in [k for k, e in self._entries.items() if e["stage"] == ISSUED and now - e["time"] > ISSUED_TTL_SECONDS]:
            del self._entries[key]
        idle = [k for k, e in self._entries.items() if e["stage"] in (ISSUED, DONE, FAILED)]
        while len(self._entries) > self._max_entries and idle:  # running ones stay, whatever the load
            del self._entries[idle.pop(0)]

    def reporter(self, progress_id: str | None) -> Callable[[int, int, str], None] | None:
        """Bind an issued id to the calling request and return its progress callback (None when there is no id)."""
        if not progress_id:
            return None
        self.check_id(progress_id)
        with self._lock:
            entry = self._entries.get(progress_id)
            if entry is None:
                raise NotFoundError("progress_id was not issued by this server (or has expired): "
                                    "get one from POST /sam2med/progress")
            if entry["stage"] != ISSUED:
                raise ConflictError("progress_id is already used by another request: get a new one from POST /sam2med/progress")
            entry.update(stage=QUEUED, time=time.time())
        return lambda done, total, stage: self.update(progress_id, done, total, stage)

    def update(self, progress_id: str, done: int, total: int, stage: str) -> None:
        with self._lock:
            entry = self._entries.get(progress_id)
            if entry is not None:
                entry.update(stage=stage, done=int(done), total=int(total), time=time.time())

    def finish(self, progress_id: str | None, stage: str = DONE) -> None:
        if progress_id:
            with self._lock:
                entry = self._entries.get(progress_id)
                if entry is not None and entry["stage"] != ISSUED:
                    entry.update(stage=stage, time=time.time())
                self._make_room()

    def get(self, progress_id: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._entries.get(self.check_id(progress_id))
            return dict(entry) if entry else None


PROGRESS = ProgressBoard()
