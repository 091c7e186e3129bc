"""`registration`: the seed mask carried slice by slice, outwards from the seed, by deformable registration.

For each step from slice k to its neighbour k+-1, SimpleITK's symmetric-forces demons registers the
neighbour (fixed) to slice k (moving) on a region around the current mask; the mask, kept as a soft
[0, 1] map, is resampled through the resulting displacement field and thresholded at 0.5 for the label.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from sam2med.evaluation.propagators.base import nearest_seed_segments, seed_masks_2d
from sam2med.geometry import from_slices, to_slices
from sam2med.io import Volume
from sam2med.prompts import ClickSeeds, SeedMasks, SliceRange
from sam2med.windowing import Window, guess_modality


class RegistrationPropagator:
    """Slice-to-slice demons registration carrying a soft mask away from each seed slice."""

    name = "registration"

    def __init__(self, iterations: int = 30, smoothing: float = 1.0, margin_px: int = 12, window: str | None = "auto"):
        self.iterations = iterations
        self.smoothing = smoothing  # standard deviation of the displacement field smoothing, in pixels
        self.margin_px = margin_px
        self.window = window

    def propagate(self, volume: Volume, seeds: SeedMasks | ClickSeeds, slice_range: SliceRange) -> np.ndarray:
        axis = seeds.axis
        masks = seed_masks_2d(seeds, volume)
        window = Window.parse(self.window, guess_modality(volume.array, volume.modality))
        images = window.apply(to_slices(volume.array, axis), window.bounds(volume.array))  # (N, H, W) in [0, 1]
        soft = np.zeros(images.shape, dtype=np.float32)
        for seed, (first, last) in nearest_seed_segments(list(masks), slice_range).items():
            soft[seed] = masks[seed]
            for step, stop in ((1, last), (-1, first)):
                for k in range(seed, stop, step):
                    soft[k + step] = self._carry(images[k], images[k + step], soft[k])
        return np.ascontiguousarray(from_slices(soft >= 0.5, axis))

    def _roi(self, mask: np.ndarray) -> tuple[slice, slice]:
        """The mask's bounding box widened by a margin (a quarter of its size, at least `margin_px`)."""
        rows, cols = np.nonzero(mask > 0.01)
        bounds = []
        for idx, size in ((rows, mask.shape[0]), (cols, mask.shape[1])):
            margin = max(self.margin_px, (int(idx.max()) - int(idx.min())) // 4)
            bounds.append(slice(max(int(idx.min()) - margin, 0), min(int(idx.max()) + margin + 1, size)))
        return bounds[0], bounds[1]

    def _carry(self, source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The soft `mask` of `source` moved onto `target` through their demons displacement field."""
        out = np.zeros_like(mask)
        if not (mask >= 0.5).any():
            return out
        roi = self._roi(mask)
        fixed = sitk.GetImageFromArray(np.ascontiguousarray(target[roi], dtype=np.float32))
        moving = sitk.GetImageFromArray(np.ascontiguousarray(source[roi], dtype=np.float32))
        demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        demons.SetNumberOfIterations(self.iterations)
        demons.SetStandardDeviations(self.smoothing)
        field = demons.Execute(fixed, moving)
        transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
        moved = sitk.Resample(sitk.GetImageFromArray(np.ascontiguousarray(mask[roi])), fixed, transform, sitk.sitkLinear, 0.0)
        out[roi] = sitk.GetArrayFromImage(moved)
        return out
