"""The correction loop: which slices of a re-submitted label are the user's, and which are the last result's.

A viewer (3D Slicer's MONAI Label plugin) always submits the whole label under the same tag: first the
seed, later the propagated result with a few slices corrected. After each run the server keeps, per
image, the conditioning slices it used and a digest of every slice of the result it returned
(`CorrectionState`). When a label comes back, a slice of a label value whose mask differs from the last
result's is a correction; the next run conditions on the corrected slices plus the earlier conditioning
slices, and every slice left as the server returned it is propagated again rather than taken as a seed.

The state is a small JSON file per image (slice indices and 16-byte digests), so it survives a restart.

Undo: every state is content-addressed (`CorrectionState.state_id`, a digest of what it holds) and the store
keeps the last `MAX_STATES` states of each image, newest last. A response names the state after its run
(`state_id`); a request may name the state its label was derived from (`parent_state`), and the loop then
reads the label against that state instead of the newest one. A page that restores an earlier snapshot
together with its state id therefore gets, for the same label, the same run as it did then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from sam2med.errors import InputError
from sam2med.geometry import Axis, to_slices
from sam2med.io import write_json_atomic
from sam2med.prompts import SeedMasks, SlicePrompt, SlicePrompts, SliceRange, as_slice_prompts

logger = logging.getLogger(__name__)

STATE_VERSION = 1
STORE_VERSION = 2  # a file of the last MAX_STATES states of one image (version 1: one state)
MAX_STATES = 50
_STATE_ID = re.compile(r"^[0-9a-f]{32}$")


def parse_state_id(value: object, name: str = "parent_state") -> str | None:
    """A state id as a request sends it (None when not sent); anything but 32 lowercase hex digits is a 400."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _STATE_ID.match(value):
        raise InputError(f"{name} must be a state_id of an earlier response (32 hex digits), got {value!r}"[:300])
    return value


def mask_digest(mask: np.ndarray) -> str:
    """A digest of a 2D boolean mask (its shape and packed bits)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(mask.shape).encode())
    digest.update(np.packbits(np.ascontiguousarray(mask, dtype=bool)).tobytes())
    return digest.hexdigest()


def prompt_digest(prompt: SlicePrompt) -> str:
    """A digest of what conditions one label on one slice: its mask, clicks (to 1/1000 px) and box."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(b"none" if prompt.mask is None else mask_digest(prompt.mask).encode())
    digest.update(json.dumps([[round(float(v), 3) for v in p] for p in prompt.points_rc]).encode())
    digest.update(json.dumps(list(prompt.point_labels)).encode())
    digest.update(json.dumps(None if prompt.box_rc is None else [round(float(v), 3) for v in prompt.box_rc]).encode())
    return digest.hexdigest()


def prompt_digests(conditioning: Mapping[int, Mapping[int, SlicePrompt]]) -> dict[int, dict[int, str]]:
    """{label: {slice: prompt_digest}} of a run's conditioning slices."""
    return {int(label): {int(s): prompt_digest(p) for s, p in per_slice.items()} for label, per_slice in conditioning.items()}


def slice_digests(label_xyz: np.ndarray, axis: Axis, labels: list[int]) -> dict[int, dict[int, str]]:
    """{label: {slice: digest}} of the slices along `axis` where each of `labels` is present."""
    slices = to_slices(label_xyz, axis)
    digests: dict[int, dict[int, str]] = {}
    for label in labels:
        on = slices == label
        digests[label] = {int(s): mask_digest(on[s]) for s in np.flatnonzero(on.any(axis=(1, 2)))}
    return digests


@dataclass
class CorrectionState:
    """What the server returned last for one image: its conditioning slices and per-slice result digests."""

    image_id: str
    image_fingerprint: str
    axis: Axis
    seed_slices: dict[int, list[int]]
    result: dict[int, dict[int, str]] = field(default_factory=dict)
    prompts: dict[int, dict[int, str]] = field(default_factory=dict)  # prompt_digest per conditioning slice

    def to_json(self) -> dict:
        data = {
            "version": STATE_VERSION, "image_id": self.image_id, "image_fingerprint": self.image_fingerprint,
            "axis": self.axis.name.lower(),
            "seed_slices": {str(k): v for k, v in self.seed_slices.items()},
            "result": {str(k): {str(s): d for s, d in v.items()} for k, v in self.result.items()},
        }
        if self.prompts:  # absent from states written before it existed: their ids stay as they were
            data["prompts"] = {str(k): {str(s): d for s, d in v.items()} for k, v in self.prompts.items()}
        return data

    @property
    def state_id(self) -> str:
        """The content address of this state: equal states (same image voxels, axis, seeds, result) share it."""
        canonical = json.dumps({k: v for k, v in self.to_json().items() if k != "version"}, sort_keys=True,
                               separators=(",", ":"))
        return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()

    @classmethod
    def from_json(cls, data: dict) -> "CorrectionState":
        return cls(
            image_id=str(data["image_id"]), image_fingerprint=str(data["image_fingerprint"]), axis=Axis.parse(data["axis"]),
            seed_slices={int(k): [int(s) for s in v] for k, v in data["seed_slices"].items()},
            result={int(k): {int(s): str(d) for s, d in v.items()} for k, v in data["result"].items()},
            prompts={int(k): {int(s): str(d) for s, d in v.items()} for k, v in data.get("prompts", {}).items()},
        )


@dataclass
class Correction:
    """How a submitted label was read: per label, the slices the user changed and the earlier seeds kept."""

    changed: dict[int, list[int]]
    kept: dict[int, list[int]]

    def to_json(self) -> dict:
        return {"changed_slices": {str(k): v for k, v in self.changed.items()},
                "kept_seed_slices": {str(k): v for k, v in self.kept.items()}}


def select_corrected_seeds(seeds: SeedMasks, state: CorrectionState) -> tuple[SeedMasks, Correction]:
    """Keep, per label, the slices that differ from the last result plus the earlier conditioning slices.

    `seeds` holds every labelled slice of the submitted label. A label the last result did not hold keeps
    all its slices; so does a label whose every slice matches the result and whose earlier seeds were erased.
    """
    chosen = SeedMasks(axis=seeds.axis)
    changed: dict[int, list[int]] = {}
    kept: dict[int, list[int]] = {}
    for label, per_slice in seeds.masks.items():
        previous = state.result.get(label)
        if previous is None:
            chosen.masks[label] = dict(per_slice)
            changed[label] = sorted(per_slice)
            continue
        earlier = set(state.seed_slices.get(label, []))
        changed[label] = sorted(s for s, mask in per_slice.items() if previous.get(s) != mask_digest(mask))
        kept[label] = sorted(s for s in per_slice if s in earlier and s not in changed[label])
        picked = set(changed[label]) | set(kept[label])
        if not picked:
            logger.info("label %d: the submitted label equals the last result and holds none of its seed slices; "
                        "every labelled slice is a seed", label)
            picked = set(per_slice)
            changed[label] = sorted(per_slice)
        chosen.masks[label] = {s: per_slice[s] for s in sorted(picked)}
    return chosen, Correction(changed, kept)


def prompt_correction(state: CorrectionState, conditioning: Mapping[int, Mapping[int, SlicePrompt]]) -> Correction | None:
    """How a run's prompts differ from those of `state` (a client that sends its prompts again, and no label):
    per label, the slices whose prompt is new or changed, and the earlier conditioning slices kept as they
    were. None when `state` holds no prompt digests (written before them, or by a run of masks only)."""
    if not state.prompts:
        return None
    changed: dict[int, list[int]] = {}
    kept: dict[int, list[int]] = {}
    for label, per_slice in conditioning.items():
        before = state.prompts.get(label, {})
        digests = {s: prompt_digest(p) for s, p in per_slice.items()}
        changed[label] = sorted(s for s, d in digests.items() if before.get(s) != d)
        kept[label] = sorted(s for s, d in digests.items() if before.get(s) == d)
    return Correction(changed, kept)


@dataclass(frozen=True)
class RefinePlan:
    """What a refining correction re-runs: per label, the band of slices it can change; the labels it leaves as
    submitted (nothing of theirs changed)."""

    bands: dict[int, SliceRange]
    unchanged: tuple[int, ...]

    def to_json(self) -> dict:
        return {"bands": {str(k): [r.start, r.end] for k, r in sorted(self.bands.items())},
                "unchanged_labels": list(self.unchanged)}


def refine_bands(state: CorrectionState, correction: Correction, prompted: Mapping[int, Iterable[int]],
                 ranges: Mapping[int, SliceRange]) -> RefinePlan | None:
    """Per label of `ranges` (its range in this run): the slices changed since `state` (corrected slices and the
    slices of new prompts, `prompted`) can change the label from the nearest kept seed slice below them to the
    nearest above (or the range's ends); that band is re-propagated, the rest of the label stays as it was.
    A label the last result did not hold is run over its range; a label with no change is left as submitted.
    None when no label changed (nothing to refine: the caller runs as usual)."""
    bands: dict[int, SliceRange] = {}
    unchanged = []
    for label, own in sorted(ranges.items()):
        if label not in state.result:
            bands[label] = own
            continue
        changed = set(correction.changed.get(label, [])) | set(prompted.get(label, []))
        if not changed:
            unchanged.append(label)
            continue
        kept = correction.kept.get(label, [])
        low = max((s for s in kept if s < min(changed)), default=own.start)
        high = min((s for s in kept if s > max(changed)), default=own.end)
        bands[label] = SliceRange(max(low, own.start), min(high, own.end))
    if not bands or all(label not in state.result for label in bands):
        return None
    return RefinePlan(bands, tuple(unchanged))


def restrict_to_bands(prompts: SeedMasks | SlicePrompts, bands: Mapping[int, SliceRange]) -> SlicePrompts:
    """The prompts of the labels with a band, on the slices inside it."""
    per_label = as_slice_prompts(prompts).prompts
    return SlicePrompts(prompts.axis, {label: {s: p for s, p in per_label[label].items() if band.start <= s <= band.end}
                                       for label, band in bands.items() if label in per_label})


def keep_outside_bands(label: np.ndarray, submitted: np.ndarray, bands: Mapping[int, SliceRange], axis: Axis) -> None:
    """In place: outside its band, each label is as submitted (where the run put nothing else)."""
    slices = np.arange(label.shape[int(axis)])
    for value, band in bands.items():
        outside = (slices < band.start) | (slices > band.end)
        shape = [1, 1, 1]
        shape[int(axis)] = -1
        fill = (submitted == value) & outside.reshape(shape) & (label == 0)
        label[fill] = value


class CorrectionStore:
    """Per-image files in `folder` (created on first write), each with the last `max_states` `CorrectionState`s
    of its image, oldest first."""

    def __init__(self, folder: str | Path, max_states: int = MAX_STATES):
        self.folder = Path(folder)
        self.max_states = max_states
        self._lock = threading.Lock()  # one read-modify-write of an image's file at a time

    def _path(self, image_id: str) -> Path:
        return self.folder / f"{hashlib.sha256(image_id.encode()).hexdigest()[:24]}.json"

    def _states(self, image_id: str) -> list[CorrectionState]:
        """The kept states of `image_id`, oldest first ([] when none or unreadable)."""
        path = self._path(image_id)
        try:
            data = json.loads(path.read_text())
            listed = data["states"] if data.get("version") == STORE_VERSION else [data]
            states = [CorrectionState.from_json(item) for item in listed]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            logger.warning("ignoring unreadable correction state %s (%s)", path, err)
            return []
        return [state for state in states if state.image_id == image_id]

    def load(self, image_id: str, image_fingerprint: str, axis: Axis) -> CorrectionState | None:
        """The newest state of `image_id`, or None when there is none, or it is for other voxels or another axis."""
        with self._lock:
            states = self._states(image_id)
        if not states:
            return None
        state = states[-1]
        if state.image_fingerprint != image_fingerprint or state.axis != axis:
            return None
        return state

    def load_id(self, image_id: str, state_id: str, image_fingerprint: str, axis: Axis) -> CorrectionState:
        """The kept state `state_id` of `image_id`; an InputError (400) when it is not kept (unknown, or one of
        more than `max_states` newer ones pushed it out) or was made for other voxels or another axis."""
        with self._lock:
            states = self._states(image_id)
        state = next((s for s in states if s.state_id == state_id), None)
        if state is None:
            raise InputError(f"parent_state {state_id} is not a state of image {image_id!r} this server keeps "
                             f"(it keeps the last {self.max_states}): run without parent_state")
        if state.image_fingerprint != image_fingerprint:
            raise InputError(f"parent_state {state_id} was made for other voxels of image {image_id!r}: run without parent_state")
        if state.axis != axis:
            raise InputError(f"parent_state {state_id} was made along the {state.axis.name.lower()} axis, "
                             f"this request propagates along the {axis.name.lower()} axis")
        return state

    def remove(self, image_id: str) -> None:
        """Forget the states of `image_id` (the image was removed)."""
        with self._lock:
            self._path(image_id).unlink(missing_ok=True)

    def save(self, state: CorrectionState) -> str:
        """Keep `state` as the newest of its image (an equal state kept before moves to newest); its state id."""
        state_id = state.state_id
        with self._lock:
            states = [s for s in self._states(state.image_id) if s.state_id != state_id] + [state]
            states = states[-self.max_states:]
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic({"version": STORE_VERSION, "image_id": state.image_id,
                               "states": [s.to_json() for s in states]}, self._path(state.image_id))
        return state_id
