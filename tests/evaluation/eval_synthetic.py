"""Synthetic cases for the evaluation tests: small volumes whose answers are known by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sam2med.geometry import Grid
from sam2med.io import Volume, save_label

SHAPE = (48, 40, 9)


def make_grid(shape=SHAPE, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)) -> Grid:
    return Grid(shape=tuple(shape), spacing=tuple(spacing), origin=tuple(origin), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


def moving_disc_case(shape=SHAPE, step_px: float = 2.0, slices: tuple[int, int] = (1, 7)) -> tuple[Volume, np.ndarray]:
    """A bright disc (label 1, radius 7) moving `step_px` along x per slice on slices `slices`, and a fixed
    square (label 2) on every slice, over a textured background."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    image = np.zeros(shape, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    for z in range(shape[2]):
        image[..., z] = 100 + 20 * np.sin(x / 3.0) * np.cos(y / 4.0) + rng.normal(0, 2, shape[:2])
        label[30:38, 28:36, z] = 2
        image[30:38, 28:36, z] = 500
        if slices[0] <= z <= slices[1]:
            disc = (x - (14 + step_px * (z - slices[0]))) ** 2 + (y - 14) ** 2 <= 49
            label[..., z][disc] = 1
            image[..., z][disc] = 900
    return Volume(array=image, grid=make_grid(shape)), label


def write_image(volume: Volume, path: Path) -> Path:
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    image.SetSpacing(volume.grid.spacing)
    image.SetOrigin(volume.grid.origin)
    image.SetDirection(volume.grid.direction)
    sitk.WriteImage(image, str(path))
    return path


def write_case(images: Path, labels: Path, name: str, volume: Volume, label: np.ndarray, label_grid: Grid | None = None,
               image_name: str | None = None) -> None:
    """Write `name`'s image and label map into the two folders (the label on `label_grid` when given)."""
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    write_image(volume, images / f"{image_name or name}.nii.gz")
    save_label(label, label_grid or volume.grid, labels / f"{name}.nii.gz")
