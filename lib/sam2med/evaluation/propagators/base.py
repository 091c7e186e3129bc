"""What every evaluated propagator offers, and the seed handling the two references share."""

from __future__ import annotations

from typing import Protocol as TypingProtocol

import numpy as np

from sam2med.geometry import to_slices
from sam2med.io import Volume
from sam2med.prompts import ClickSeeds, SeedMasks, SliceRange


class SlicePropagator(TypingProtocol):
    """Turns the prompt of one target into a 3D boolean mask, zero outside `slice_range`."""

    name: str

    def propagate(self, volume: Volume, seeds: SeedMasks | ClickSeeds, slice_range: SliceRange) -> np.ndarray: ...


def seed_masks_2d(seeds: SeedMasks | ClickSeeds, volume: Volume) -> dict[int, np.ndarray]:
    """{slice: (H, W) bool} of a single-target prompt; a click prompt becomes its box (references have no segmenter)."""
    if len(seeds.labels) != 1:
        raise ValueError(f"reference propagators take one target at a time, got labels {seeds.labels}")
    label = seeds.labels[0]
    if isinstance(seeds, SeedMasks):
        return {s: np.asarray(m, dtype=bool) for s, m in seeds.masks[label].items()}
    height, width = to_slices(volume.array, seeds.axis).shape[1:]
    masks: dict[int, np.ndarray] = {}
    for prompt in seeds.prompts[label]:
        mask = masks.setdefault(prompt.slice_index, np.zeros((height, width), dtype=bool))
        if prompt.box_rc is not None:
            r0, c0, r1, c1 = (int(round(v)) for v in prompt.box_rc)
            mask[r0:r1, c0:c1] = True
        for (r, c), positive in zip(prompt.points_rc, prompt.point_labels):
            if positive:
                mask[int(r), int(c)] = True
    return masks


def nearest_seed_segments(seed_slices: list[int], slice_range: SliceRange) -> dict[int, tuple[int, int]]:
    """{seed: (first, last)}: the slices of the range closest to each seed (ties go to the lower seed)."""
    seeds = sorted(seed_slices)
    segments: dict[int, tuple[int, int]] = {}
    for i, seed in enumerate(seeds):
        first = slice_range.start if i == 0 else (seeds[i - 1] + seed) // 2 + 1
        last = slice_range.end if i == len(seeds) - 1 else (seed + seeds[i + 1]) // 2
        segments[seed] = (first, last)
    return segments
