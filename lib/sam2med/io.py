"""Reading images and label maps (NIfTI, NRRD, MetaImage, DICOM series) and writing labels atomically."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sam2med.errors import InputError
from sam2med.geometry import Grid

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass
class Volume:
    """A 3D scalar image: voxels in (x, y, z) order, its grid, and what is known of its modality."""

    array: np.ndarray
    grid: Grid
    modality: str | None = None  # "CT", "MR", ... when the file says so (DICOM)
    source: str = ""
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.array.ndim != 3 or tuple(self.array.shape) != tuple(self.grid.shape):
            raise InputError(f"{self.source or 'volume'}: array shape {self.array.shape} does not match grid {self.grid.shape}")

    def fingerprint(self) -> str:
        """A content hash of voxels and grid: two volumes with the same fingerprint give the same features."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=16)
            digest.update(repr(self.grid).encode())
            digest.update(str(self.array.dtype).encode())
            digest.update(np.ascontiguousarray(self.array).data)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def grid_of(image: sitk.Image) -> Grid:
    return Grid(
        shape=tuple(int(s) for s in image.GetSize()),
        spacing=tuple(float(s) for s in image.GetSpacing()),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
    )


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.name.lower().endswith(suffixes)


def _read_dicom_series(folder: Path) -> tuple[sitk.Image, str | None]:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(f"{folder}: no DICOM series found in this folder")
    # Several series in one folder: take the one with most slices and say so.
    files_per_series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    series_id = max(files_per_series, key=lambda sid: len(files_per_series[sid]))
    if len(series_ids) > 1:
        logger.warning("%s holds %d DICOM series; reading %r (%d files)", folder, len(series_ids), series_id, len(files_per_series[series_id]))
    files = files_per_series[series_id]  # sorted by slice position by GDCM
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    image = reader.Execute()  # rescale slope/intercept applied
    modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else None
    return image, (modality or None)


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read an image file or DICOM series folder as a 3D scalar SimpleITK image."""
    image, _ = _read_any(Path(path))
    return image


def _read_any(path: Path) -> tuple[sitk.Image, str | None]:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    modality = None
    try:
        if path.is_dir():
            image, modality = _read_dicom_series(path)
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first_line = next((line.strip() for line in str(err).splitlines() if line.strip() and "Exception" not in line), "unreadable")
        raise InputError(f"{path}: cannot read it as an image ({first_line[:160]})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar image is needed")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise InputError(f"{path}: is {image.GetDimension()}D; a 3D volume is needed")
    return image, modality


def load_volume(path: str | os.PathLike) -> Volume:
    """Load an image (NIfTI, NRRD, MetaImage) or a DICOM series folder as a `Volume`."""
    image, modality = _read_any(Path(path))
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    return Volume(array=np.ascontiguousarray(array), grid=grid_of(image), modality=modality, source=str(path))


def load_label(path: str | os.PathLike) -> Volume:
    """Load a label map; values must be non-negative integers."""
    volume = load_volume(path)
    array = volume.array
    if np.issubdtype(array.dtype, np.floating):
        rounded = np.rint(array)
        if not np.allclose(rounded, array, atol=1e-3):
            raise InputError(f"{path}: label map holds non-integer values")
        array = rounded
    if array.size and array.min() < 0:
        raise InputError(f"{path}: label map holds negative values")
    volume.array = array.astype(label_dtype(int(array.max()) if array.size else 0), copy=False)
    return volume


def label_dtype(max_value: int) -> np.dtype:
    return np.dtype(np.uint8) if max_value <= 255 else np.dtype(np.uint16)


def label_image(label_xyz: np.ndarray, grid: Grid) -> sitk.Image:
    """A SimpleITK image of a (x, y, z) label array on `grid`."""
    if tuple(label_xyz.shape) != tuple(grid.shape):
        raise InputError(f"label shape {label_xyz.shape} does not match the image grid {grid.shape}")
    max_value = int(label_xyz.max()) if label_xyz.size else 0
    image = sitk.GetImageFromArray(np.ascontiguousarray(label_xyz.transpose(2, 1, 0).astype(label_dtype(max_value))))
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return image


def _output_suffix(path: Path) -> str:
    for suffix in LABEL_SUFFIXES:
        if path.name.lower().endswith(suffix):
            return suffix
    raise InputError(f"{path}: unsupported output format; use one of {', '.join(LABEL_SUFFIXES)}")


def save_label(label_xyz: np.ndarray, grid: Grid, path: str | os.PathLike) -> Path:
    """Write a label map on `grid` to `path` atomically: a reader never sees a half-written file."""
    path = Path(path)
    suffix = _output_suffix(path)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: output folder does not exist")
    image = label_image(label_xyz, grid)
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.{uuid.uuid4().hex[:8]}.partial{suffix}")
    try:
        sitk.WriteImage(image, str(tmp), useCompression=suffix in (".nii.gz", ".nrrd", ".mha"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(data: object, path: str | os.PathLike) -> Path:
    """Write JSON to `path` through a temporary file in the same folder."""
    import json

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
