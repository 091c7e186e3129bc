"""Progress of running propagations, by an id the server issues, for clients that poll while they wait.

A client asks `POST /sam2med/progress` for an id (192 random bits: not guessable), then names it in one
infer request: the first request to use an id binds it, any other request naming it is refused, and an
id the server did not issue is refused. Entries of running propagations are never dropped to make room;
idle issued ids expire, finished entries are dropped oldest first.

Live slices: while the engine tracks, each slice it finishes is published for each label it propagates
(`SliceReporter.slice_done`); `GET /sam2med/progress/{id}?since=N` returns the entries from sequence
number N on (see `ProgressBoard.get`), so a viewer paints slices as they finish, before the response.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np

from sam2med.errors import InputError
from sam2med.monailabel.safety import ConflictError, NotFoundError

_PROGRESS_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
ISSUED, QUEUED, DONE, FAILED = "issued", "queued", "done", "failed"
ISSUED_TTL_SECONDS = 600.0
SLICES_TTL_SECONDS = 600.0  # a finished entry's live slices are dropped this long after it finished


def rle_encode(mask: np.ndarray) -> list[int]:
    """Run lengths of a 2D boolean mask (H, W) read in C order (row by row, W fastest), alternating
    background and foreground and starting with background: [n0, n1, n0, n1, ...], the first count
    possibly 0, the counts summing to H * W (an empty mask is [H * W])."""
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(bounds).tolist()
    return [0, *counts] if flat.size and flat[0] else counts


def rle_decode(counts: list[int], shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) boolean mask of `rle_encode`'s counts."""
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, np.asarray(counts, dtype=np.int64))
    if flat.size != shape[0] * shape[1]:
        raise InputError(f"run lengths sum to {flat.size}, not {shape[0]} x {shape[1]}")
    return flat.reshape(shape)


class SliceReporter:
    """A request's progress callback `(done, total, stage)` that also takes the slices the engine finishes.

    `values` maps the engine's label values to those the client sees (its label_info); unmapped ones are kept."""

    def __init__(self, board: "ProgressBoard", progress_id: str):
        self.board = board
        self.progress_id = progress_id
        self.values: dict[int, int] = {}

    def __call__(self, done: int, total: int, stage: str) -> None:
        self.board.update(self.progress_id, done, total, stage)

    def slice_done(self, axis_index: int, frame_label: np.ndarray, labels: list[int]) -> None:
        """The engine finished slice `axis_index` (its (H, W) label) for `labels`: one entry per label."""
        masks = {self.values.get(int(v), int(v)): frame_label == v for v in labels}
        self.board.publish(self.progress_id, int(axis_index), masks)


class ProgressBoard:
    """How far each running propagation is, by a server-issued id; bounded, finished and idle entries dropped first."""

    def __init__(self, max_entries: int = 256):
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries
        self._slices: dict[str, list[dict[str, Any]]] = {}  # live slice entries, by id, in sequence order
        self._published: dict[str, dict[tuple[int, int], list[int]]] = {}  # (slice, label) -> its last run lengths

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
        for key in [k for k in self._slices if k not in self._entries or (
                self._entries[k]["stage"] in (DONE, FAILED) and now - self._entries[k]["time"] > SLICES_TTL_SECONDS)]:
            self._slices.pop(key, None)
            self._published.pop(key, None)

    def reporter(self, progress_id: str | None) -> SliceReporter | None:
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
            self._slices[progress_id] = []
            self._published[progress_id] = {}
        return SliceReporter(self, progress_id)

    def publish(self, progress_id: str, axis_index: int, masks: Mapping[int, np.ndarray]) -> None:
        """Append one live entry per label of a finished slice; a later entry of the same slice and label replaces it."""
        encoded = {label: rle_encode(mask) for label, mask in masks.items()}
        with self._lock:
            entries, published = self._slices.get(progress_id), self._published.get(progress_id)
            if entries is None or published is None:
                return
            for label, rle in encoded.items():
                entries.append({"seq": len(entries), "axis_index": axis_index, "label": label, "rle": rle})
                published[(axis_index, label)] = rle
            entry = self._entries.get(progress_id)
            if entry is not None and masks:
                entry.setdefault("slice_shape", list(next(iter(masks.values())).shape))

    def settle(self, progress_id: str | None, label_slices: np.ndarray) -> int:
        """Before the response: re-publish every published (slice, label) whose mask in the final label
        (N, H, W, the client's values) differs from its last entry (a label cut at an auto-range stop, an
        roi, a refine band), so that the entries, applied in order, end as the response. Entries re-published."""
        if not progress_id:
            return 0
        with self._lock:
            published = dict(self._published.get(progress_id) or {})
        changed: dict[int, dict[int, np.ndarray]] = {}
        for (axis_index, label), rle in published.items():
            mask = label_slices[axis_index] == label
            if rle_encode(mask) != rle:
                changed.setdefault(axis_index, {})[label] = mask
        for axis_index, masks in sorted(changed.items()):
            self.publish(progress_id, axis_index, masks)
        return sum(len(m) for m in changed.values())

    def update(self, progress_id: str, done: int, total: int, stage: str) -> None:
        with self._lock:
            entry = self._entries.get(progress_id)
            if entry is not None:
                entry.update(stage=stage, done=int(done), total=int(total), time=time.time())

    def finish(self, progress_id: str | None, stage: str = DONE) -> None:
        if progress_id:
            with self._lock:
                entry = self._entries.get(progress_id)
                if entry is not None and entry["stage"] not in (ISSUED, DONE, FAILED):
                    entry.update(stage=stage, time=time.time())
                self._make_room()

    def get(self, progress_id: str, since: int | None = None) -> dict[str, Any] | None:
        """{"stage", "done", "total", "time"}; with `since` also the live slices from sequence number `since` on:

        "slices": [{"seq": n, "axis_index": k, "label": v, "rle": [...]}, ...] in sequence order (n = 0, 1, ...),
        one entry per finished slice and label: k is the slice's index along the request's axis, v the label
        value (the client's, as in the result file), rle `rle_encode` of the label's mask on that slice, an
        (H, W) array as the engine tracks it (`geometry.to_slices`: for the axial axis H = y, W = x; coronal
        H = z, W = x; sagittal H = z, W = y) read in C order. A later entry of the same slice and label replaces
        an earlier one (the last ones re-publish what the final result changed, see `settle`).
        "slice_shape": [H, W] once a slice is published; "next": the `since` of the next poll."""
        with self._lock:
            entry = self._entries.get(self.check_id(progress_id))
            if not entry:
                return None
            answer = dict(entry)
            if since is not None:
                if isinstance(since, bool) or not isinstance(since, int) or since < 0:
                    raise InputError(f"since must be a whole number >= 0, got {since!r}")
                entries = self._slices.get(progress_id, [])
                answer["slices"] = entries[since:]
                answer["next"] = max(since, len(entries))
            return answer


PROGRESS = ProgressBoard()
