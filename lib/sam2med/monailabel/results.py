"""Seed files in and result files out, both on the image's own grid."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sam2med.errors import InputError, PromptError
from sam2med.geometry import Grid
from sam2med.io import Volume, label_image, load_label
from sam2med.monailabel.params import OutputFormat

logger = logging.getLogger(__name__)


def load_seed(path: str | os.PathLike, image: Volume) -> Volume:
    """A seed label file: NIfTI/NRRD/MetaImage, or OHIF's raw `.bin` (uint8 voxels of the image, x fastest)."""
    path = Path(path)
    if path.name.lower().endswith(".bin"):
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size != int(np.prod(image.grid.shape)):
            raise PromptError(f"the raw seed holds {raw.size} voxels, the image {'x'.join(map(str, image.grid.shape))} "
                              f"= {int(np.prod(image.grid.shape))}")
        return Volume(array=raw.reshape(image.grid.shape, order="F"), grid=image.grid, source=str(path))
    try:
        return load_label(path)
    except InputError as err:
        raise PromptError(f"the seed label cannot be used: {err}") from None


def write_result(label_xyz: np.ndarray, grid: Grid, output: OutputFormat) -> str:
    """Write the result label to a new temp file in the requested format; the caller's endpoint removes it."""
    image = label_image(label_xyz, grid)
    if output.dtype is not None:
        max_value = int(label_xyz.max()) if label_xyz.size else 0
        if max_value > np.iinfo(np.dtype(output.dtype)).max:
            raise PromptError(f"result_dtype {output.dtype} cannot hold label value {max_value}")
        image = sitk.Cast(image, {"uint8": sitk.sitkUInt8, "uint16": sitk.sitkUInt16, "uint32": sitk.sitkUInt32}[output.dtype])
    fd, path = tempfile.mkstemp(prefix="sam2med_", suffix=output.extension)
    os.close(fd)
    try:
        sitk.WriteImage(image, path, useCompression=output.compress and output.extension != ".nii")
    except RuntimeError:
        Path(path).unlink(missing_ok=True)
        raise
    return path


def image_grid(path: str | os.PathLike) -> Grid:
    """The grid of an image file, read from its header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"{path}: cannot read it as an image") from None
    return Grid(
        shape=tuple(int(s) for s in reader.GetSize()[:3]),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in reader.GetSpacing()[:3]),  # type: ignore[arg-type]
        origin=tuple(float(o) for o in reader.GetOrigin()[:3]),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in reader.GetDirection()),
    )


def raw_label_to_nifti(raw_path: str | os.PathLike, image_path: str | os.PathLike) -> str:
    """OHIF's raw `.bin` label of an image as a temp NIfTI on the image's grid."""
    grid = image_grid(image_path)
    if len(grid.direction) != 9:
        raise InputError(f"{image_path}: is not a 3D image")
    array = np.zeros(grid.shape, dtype=np.uint8)
    seed = load_seed(raw_path, Volume(array=array, grid=grid))
    return write_result(seed.array, grid, OutputFormat(".nii.gz", None, True))
