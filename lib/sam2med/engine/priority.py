"""`EncoderPriority`: requests first, background encoding (warm-up) only when no request runs or waits.

A warm-up encodes a volume one slice at a time, each slice a `background` step; every request (a propagation,
an infer request of the server) runs in `foreground`. The rule, enforced by one condition variable:

- a background step starts only while no foreground is running or waiting, and one at a time;
- a foreground announces itself at once (from then on no background step starts) and waits only for the
  background step already running, if any, to end: a request never waits for more than one slice's encoding;
- foregrounds never wait for each other (concurrent requests run as before; nesting is allowed).

So a warm-up never slows a request beyond that one slice: the device (or the CPU cores) is the request's alone.
The gate records what happened as (seconds, event, detail) in `events` (a bounded log), so tests and the
benchmark can check the rule from the order of events rather than from wall-clock speed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator

# events
FOREGROUND_ARRIVE = "foreground-arrive"  # a request announced itself
FOREGROUND_START = "foreground-start"  # ... and runs (after the background step it found, if any, ended)
FOREGROUND_END = "foreground-end"
BACKGROUND_START = "background-start"  # a background step (one slice of a warm-up) starts
BACKGROUND_END = "background-end"


class EncoderPriority:
    """Foreground (requests) before background steps (warm-up slices); see the module docstring."""

    def __init__(self, max_events: int = 10_000):
        self._cond = threading.Condition()
        self._foreground = 0  # running or waiting requests
        self._background = False  # a background step is running
        self.events: deque[tuple[float, str, object]] = deque(maxlen=max_events)

    def _record(self, event: str, detail: object) -> None:
        self.events.append((time.perf_counter(), event, detail))

    @contextmanager
    def foreground(self, name: object = "request") -> Iterator[None]:
        """Run a request: wait only for the background step already running, if any."""
        with self._cond:
            self._foreground += 1
            self._record(FOREGROUND_ARRIVE, name)
            while self._background:
                self._cond.wait()
            self._record(FOREGROUND_START, name)
        try:
            yield
        finally:
            with self._cond:
                self._foreground -= 1
                self._record(FOREGROUND_END, name)
                self._cond.notify_all()

    @contextmanager
    def background(self, name: object = "step") -> Iterator[None]:
        """Run one short background step once no request runs or waits (and no other step runs)."""
        with self._cond:
            while self._foreground or self._background:
                self._cond.wait()
            self._background = True
            self._record(BACKGROUND_START, name)
        try:
            yield
        finally:
            with self._cond:
                self._background = False
                self._record(BACKGROUND_END, name)
                self._cond.notify_all()

    @property
    def busy(self) -> bool:
        """A request is running or waiting."""
        with self._cond:
            return self._foreground > 0

    def waits(self) -> list[dict]:
        """For each request in `events`: how long it waited and how many background steps ended / started meanwhile.

        The rule holds when every entry has `background_ended` <= 1 and `background_started` == 0."""
        open_: dict[object, list] = {}
        result = []
        for seconds, event, detail in list(self.events):
            if event == FOREGROUND_ARRIVE:
                open_.setdefault(detail, []).append({"name": detail, "arrived": seconds, "background_ended": 0,
                                                     "background_started": 0})
            elif event == FOREGROUND_START and open_.get(detail):
                entry = open_[detail].pop(0)
                entry["wait_s"] = seconds - entry["arrived"]
                result.append(entry)
            elif event in (BACKGROUND_END, BACKGROUND_START):
                key = "background_ended" if event == BACKGROUND_END else "background_started"
                for entries in open_.values():
                    for entry in entries:
                        entry[key] += 1
        return result
