"""Progress of running propagations, by an id the client chooses, for clients that poll while they wait."""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from sam2med.errors import InputError

_PROGRESS_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class ProgressBoard:
    """How far each running propagation is, by a client-chosen id; bounded, oldest entries dropped."""

    def __init__(self, max_entries: int = 256):
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries

    @staticmethod
    def check_id(progress_id: str) -> str:
        if not isinstance(progress_id, str) or not _PROGRESS_ID.match(progress_id):
            raise InputError("progress_id must be 8 to 64 letters, digits, '-' or '_'")
        return progress_id

    def reporter(self, progress_id: str | None) -> Callable[[int, int, str], None] | None:
        """A progress callback for the engine (None when the request has no id)."""
        if not progress_id:
            return None
        self.check_id(progress_id)
        self.update(progress_id, 0, 0, "queued")
        return lambda done, total, stage: self.update(progress_id, done, total, stage)

    def update(self, progress_id: str, done: int, total: int, stage: str) -> None:
        with self._lock:
            self._entries[progress_id] = {"stage": stage, "done": int(done), "total": int(total), "time": time.time()}
            self._entries.move_to_end(progress_id)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def finish(self, progress_id: str | None, stage: str = "done") -> None:
        if progress_id:
            with self._lock:
                entry = self._entries.get(progress_id)
                if entry is not None:
                    entry.update(stage=stage, time=time.time())

    def get(self, progress_id: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._entries.get(self.check_id(progress_id))
            return dict(entry) if entry else None


PROGRESS = ProgressBoard()
