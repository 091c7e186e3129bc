"""The correction loop: which slices of a re-submitted label are the user's, and which are the last result's.

A viewer (3D Slicer's MONAI Label plugin) always submits the whole label under the same tag: first the
seed, later the propagated result with a few slices corrected. After each run the server keeps, per
image, the conditioning slices it used and a digest of every slice of the result it returned
(`CorrectionState`). When a label comes back, a slice of a label value whose mask differs from the last
result's is a correction; the next run conditions on the corrected slices plus the earlier conditioning
slices, and every slice left as the server returned it is propagated again rather than taken as a seed.

The state is a small JSON file per image (slice indices and 16-byte digests), so it survives a restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sam2med.geometry import Axis, to_slices
from sam2med.io import write_json_atomic
from sam2med.prompts import SeedMasks

logger = logging.getLogger(__name__)

STATE_VERSION = 1


def mask_digest(mask: np.ndarray) -> str:
    """A digest of a 2D boolean mask (its shape and packed bits)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(mask.shape).encode())
    digest.update(np.packbits(np.ascontiguousarray(mask, dtype=bool)).tobytes())
    return digest.hexdigest()


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

    def to_json(self) -> dict:
        return {
            "version": STATE_VERSION, "image_id": self.image_id, "image_fingerprint": self.image_fingerprint,
            "axis": self.axis.name.lower(),
            "seed_slices": {str(k): v for k, v in self.seed_slices.items()},
            "result": {str(k): {str(s): d for s, d in v.items()} for k, v in self.result.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> "CorrectionState":
        return cls(
            image_id=str(data["image_id"]), image_fingerprint=str(data["image_fingerprint"]), axis=Axis.parse(data["axis"]),
            seed_slices={int(k): [int(s) for s in v] for k, v in data["seed_slices"].items()},
            result={int(k): {int(s): str(d) for s, d in v.items()} for k, v in data["result"].items()},
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


class CorrectionStore:
    """Per-image `CorrectionState` files in `folder` (created on first write)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _path(self, image_id: str) -> Path:
        return self.folder / f"{hashlib.sha256(image_id.encode()).hexdigest()[:24]}.json"

    def load(self, image_id: str, image_fingerprint: str, axis: Axis) -> CorrectionState | None:
        """The state of `image_id`, or None when there is none, or it is for other voxels or another axis."""
        path = self._path(image_id)
        try:
            state = CorrectionState.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("ignoring unreadable correction state %s (%s)", path, err)
            return None
        if state.image_id != image_id or state.image_fingerprint != image_fingerprint or state.axis != axis:
            return None
        return state

    def remove(self, image_id: str) -> None:
        """Forget the state of `image_id` (the image was removed)."""
        self._path(image_id).unlink(missing_ok=True)

    def save(self, state: CorrectionState) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        return write_json_atomic(state.to_json(), self._path(state.image_id))
