"""DICOM series for the OHIF save matrix, written from volumes of ../shared/data: the same voxels in other slice
orders and orientations (every voxel at its patient position), an MR series and a sagittal acquisition."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sam2med.geometry import Grid


@dataclass(frozen=True)
class Variant:
    """How a series is written: the volume file, axes (new axis a = old axis perm[a], flipped where flips[a]) and
    whether InstanceNumber runs along the stored slice order or against it."""

    name: str
    volume: str  # relative to ../shared/data/totalsegmentator
    perm: tuple[int, int, int] = (0, 1, 2)
    flips: tuple[bool, bool, bool] = (False, False, False)
    numbers_along: bool = True
    modality: str = "CT"
    crop: tuple[int, int, int, int] | None = None  # x0, x1, y0, y1 of the source voxels kept (smaller pages, same positions)


def crop_xy(array: np.ndarray, grid: Grid, crop: tuple[int, int, int, int]) -> tuple[np.ndarray, Grid]:
    """Voxels [x0:x1, y0:y1, :] at their own patient positions."""
    x0, x1, y0, y1 = crop
    direction = np.asarray(grid.direction, float).reshape(3, 3)
    origin = np.asarray(grid.origin) + x0 * grid.spacing[0] * direction[:, 0] + y0 * grid.spacing[1] * direction[:, 1]
    out = np.ascontiguousarray(array[x0:x1, y0:y1, :])
    return out, Grid(tuple(out.shape), grid.spacing, tuple(float(v) for v in origin), grid.direction)


def relattice(array: np.ndarray, grid: Grid, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> tuple[np.ndarray, Grid]:
    """The same voxels at the same patient positions, indexed along other axes (a permutation and flips)."""
    direction = np.asarray(grid.direction, float).reshape(3, 3)
    spacing = np.asarray(grid.spacing, float)
    origin = np.asarray(grid.origin, float)
    out = np.transpose(array, perm)
    columns, new_spacing = [], []
    for axis, (old, flip) in enumerate(zip(perm, flips)):
        step = direction[:, old] * spacing[old]
        if flip:
            out = np.flip(out, axis=axis)
            origin = origin + (grid.shape[old] - 1) * step
            step = -step
        columns.append(step / spacing[old])
        new_spacing.append(float(spacing[old]))
    new_direction = np.stack(columns, axis=1)
    return np.ascontiguousarray(out), Grid(tuple(out.shape), tuple(new_spacing), tuple(float(v) for v in origin),
                                           tuple(float(v) for v in new_direction.ravel()))


def write_series(array: np.ndarray, grid: Grid, template: pydicom.Dataset, folder: Path, description: str,
                 series_number: int, modality: str, numbers_along: bool, same_frame: bool) -> str:
    """One uncompressed file per slice k of `grid` (axis 2) into `folder`; returns the new SeriesInstanceUID."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    frame_uid = template.FrameOfReferenceUID if same_frame else generate_uid()
    direction = np.asarray(grid.direction, float).reshape(3, 3)
    nx, ny, nz = grid.shape
    low, high = float(array.min()), float(array.max())
    for k in range(nz):
        ds = pydicom.Dataset()
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                        "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription"):
            if keyword in template:
                setattr(ds, keyword, getattr(template, keyword))
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4" if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series_uid, frame_uid
        ds.Modality, ds.SeriesDescription, ds.SeriesNumber = modality, description, series_number
        ds.InstanceNumber = k + 1 if numbers_along else nz - k
        position = np.asarray(grid.origin) + k * grid.spacing[2] * direction[:, 2]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [f"{grid.spacing[1]:.6f}", f"{grid.spacing[0]:.6f}"]  # row spacing (along columns), column spacing
        ds.SliceThickness = f"{grid.spacing[2]:.6f}"
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.WindowCenter, ds.WindowWidth = f"{(low + high) / 2:.1f}", f"{max(1.0, high - low):.1f}"
        ds.PixelData = np.ascontiguousarray(array[:, :, k].T.astype("<i2")).tobytes()  # rows = y, columns = x
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", write_like_original=False)
    return series_uid
