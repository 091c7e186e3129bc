"""`copy`: the seed mask copied unchanged to every slice of the range, the lower bound of propagation."""

from __future__ import annotations

import numpy as np

from sam2med.evaluation.propagators.base import nearest_seed_segments, seed_masks_2d
from sam2med.geometry import from_slices, to_slices
from sam2med.io import Volume
from sam2med.prompts import ClickSeeds, SeedMasks, SliceRange


class CopyPropagator:
    """Each slice of the range gets the mask of its nearest seed slice."""

    name = "copy"

    def propagate(self, volume: Volume, seeds: SeedMasks | ClickSeeds, slice_range: SliceRange) -> np.ndarray:
        masks = seed_masks_2d(seeds, volume)
        out = np.zeros(to_slices(volume.array, seeds.axis).shape, dtype=bool)
        for seed, (first, last) in nearest_seed_segments(list(masks), slice_range).items():
            out[first : last + 1] = masks[seed]
        return np.ascontiguousarray(from_slices(out, seeds.axis))
