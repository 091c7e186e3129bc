"""Scores that follow the model: each datastore image's last prompts are kept, and re-run with the current model.

A propagation on a datastore image records its prompts (seed masks or clicks, axis, window, and the
slices each label was tracked through) in `<state_dir>/prompts/`. When the published model changes,
the scores recorded with the old one are stale: `Rescorer` runs the current model on the recorded
prompts and records the new scores (with their model version) in the image's info, as infer does.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable

import numpy as np

from sam2med.geometry import Axis
from sam2med.io import load_volume, write_atomically
from sam2med.prompts import ClickPrompt, ClickSeeds, SeedMasks, SliceRange
from sam2med.monailabel.uncertainty import score_record
from sam2med.provenance import model_version

logger = logging.getLogger(__name__)

SCORES_KEY = "sam2med_scores"  # image info: the last propagation's per-slice scores (sam2med.monailabel.uncertainty.score_record)


def without_non_finite(value: Any) -> Any:
    """`value` with every NaN / inf float replaced by None (JSON cannot carry them: they would read as missing)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: without_non_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_non_finite(v) for v in value]
    return value


def is_finite_record(value: Any) -> bool:
    """Whether every number in a score record is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(is_finite_record(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(is_finite_record(v) for v in value)
    return True


def scores_of(result_json: Dict[str, Any]) -> Dict[str, list]:
    """{label: per-slice scores} of a `PropagationResult.to_json()`."""
    return {label: info["slices"] for label, info in result_json["labels"].items()}


def record_scores(datastore: Any, image_id: str, scores: Dict[str, list], version: str, axis: Axis,
                  source: str = "infer") -> dict | None:
    """Keep an image's scores with their model version in its info (for `uncertain`); a non-finite one is not kept."""
    record = {**score_record(scores, version, axis.name.lower(), int(time.time())), "source": source}
    if not is_finite_record(record):
        logger.warning("not recording the scores of %r: model %s gave non-finite scores", image_id, version)
        return None
    datastore.update_image_info(str(image_id), {SCORES_KEY: record})
    return record


class PromptStore:
    """The last prompts of each datastore image, one compressed .npz file per image (created on first write)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _path(self, image_id: str) -> Path:
        return self.folder / f"{hashlib.sha256(image_id.encode()).hexdigest()[:24]}.npz"

    def save(self, image_id: str, fingerprint: str, seeds: SeedMasks | ClickSeeds, window: str | None,
             ranges: Dict[int, SliceRange]) -> None:
        meta: Dict[str, Any] = {"image_id": image_id, "fingerprint": fingerprint, "axis": seeds.axis.name.lower(),
                                "window": window, "ranges": {str(k): [r.start, r.end] for k, r in ranges.items()}}
        arrays: Dict[str, np.ndarray] = {}
        if isinstance(seeds, ClickSeeds):
            meta["clicks"] = {str(label): [[p.slice_index, [list(x) for x in p.points_rc], list(p.point_labels),
                                            list(p.box_rc) if p.box_rc is not None else None] for p in prompts]
                              for label, prompts in seeds.prompts.items()}
        else:
            meta["masks"] = {str(label): sorted(per_slice) for label, per_slice in seeds.masks.items()}
            arrays = {f"mask_{label}_{s}": np.packbits(mask.astype(bool)) for label, per_slice in seeds.masks.items()
                      for s, mask in per_slice.items()}
            meta["mask_shapes"] = {f"mask_{label}_{s}": list(mask.shape) for label, per_slice in seeds.masks.items()
                                   for s, mask in per_slice.items()}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self._path(image_id), lambda tmp: tmp.write_bytes(buffer.getvalue()))

    def load(self, image_id: str, fingerprint: str) -> tuple[SeedMasks | ClickSeeds, str | None, Dict[int, SliceRange]] | None:
        """(seeds, window, per-label ranges) last used on `image_id`; None when none, or for other voxels."""
        path = self._path(image_id)
        try:
            with np.load(path) as content:
                meta = json.loads(content["meta"].tobytes().decode())
                if meta.get("image_id") != image_id or meta.get("fingerprint") != fingerprint:
                    return None
                axis = Axis[str(meta["axis"]).upper()]
                seeds: SeedMasks | ClickSeeds
                if "clicks" in meta:
                    seeds = ClickSeeds(axis, {int(label): [ClickPrompt(int(s), tuple(tuple(p) for p in points), tuple(labels),
                                                                       tuple(box) if box is not None else None)
                                                           for s, points, labels, box in prompts]
                                              for label, prompts in meta["clicks"].items()})
                else:
                    masks: Dict[int, Dict[int, np.ndarray]] = {}
                    for label, slices in meta["masks"].items():
                        for s in slices:
                            key = f"mask_{label}_{s}"
                            shape = meta["mask_shapes"][key]
                            bits = np.unpackbits(content[key])[: shape[0] * shape[1]]
                            masks.setdefault(int(label), {})[int(s)] = bits.reshape(shape).astype(bool)
                    seeds = SeedMasks(axis, masks)
                ranges = {int(k): SliceRange(int(v[0]), int(v[1])) for k, v in meta["ranges"].items()}
                return seeds, meta.get("window"), ranges
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("ignoring unreadable prompts of %r (%s)", image_id, err)
            return None


class Rescorer:
    """Runs the current model on an image's recorded prompts and records the new scores."""

    def __init__(self, engine, prompts: PromptStore | None):
        self.engine = engine
        self.prompts = prompts

    def current_version(self) -> str | None:
        return self.engine.current_version()

    def rescore(self, image_id: str, datastore: Any) -> dict | None:
        """The image's new score record; None when it has no recorded prompts (or they no longer fit its voxels)."""

        uri = datastore.get_image_uri(image_id) if self.prompts is not None else ""
        if not uri:
            return None
        volume = load_volume(uri)
        found = self.prompts.load(image_id, volume.fingerprint())  # type: ignore[union-attr]
        if found is None:
            return None
        seeds, window, ranges = found
        covered = SliceRange(min(r.start for r in ranges.values()), max(r.end for r in ranges.values()))
        propagator = self.engine.get()
        result = propagator.propagate(volume, seeds, covered, window=window, label_ranges=ranges)
        version = model_version(self.engine.model_name, propagator.checkpoint)
        return record_scores(datastore, image_id, scores_of(result.to_json()), version, seeds.axis, source="rescored")

    def rescore_stale(self, image_ids: Iterable[str], datastore: Any, budget_seconds: float | None,
                      is_stale: Callable[[str], bool]) -> tuple[list[str], list[str]]:
        """Re-score the stale images among `image_ids` until `budget_seconds` are spent: (re-scored, left stale)."""
        start, done, left = time.monotonic(), [], []
        for image_id in image_ids:
            if not is_stale(image_id):
                continue
            if budget_seconds is not None and time.monotonic() - start >= budget_seconds:
                left.append(image_id)
                continue
            try:
                record = self.rescore(image_id, datastore)
            except Exception as err:  # one image's failure (a deleted file) must not stop the others
                logger.warning("cannot re-score %r: %s", image_id, err)
                record = None
            (done if record else left).append(image_id)
        return done, left
