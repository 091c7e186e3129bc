"""RTSTRUCT (DICOM RT Structure Set) writing and reading, with pydicom and scikit-image.

A label map on the grid of a DICOM series becomes one RT Structure Set that references the series' frame of
reference and its image instances, with one ROI per label value (the ROI number is the label value, as the
segment number is in a DICOM-SEG): its name, display colour, generation algorithm, RT ROI Interpreted Type
(ORGAN for anatomical structures) and coded meaning (the segment's category and type codes, in the RT ROI
Observations as PS3.3 C.8.8.8 puts them).

Contours: on every slice, each connected region of a label gives one CLOSED_PLANAR contour along its outer
boundary and each hole in it one more contour along the hole's boundary, all in patient coordinates (mm, the
series' LPS frame), with the slice's image referenced. Holes are separate contours of the same ROI on the same
slice, to be combined even-odd (a point inside an odd number of the ROI's contours on a slice is inside the
ROI). The standard allows several contours of one ROI in one plane; nested ones read as holes is the common
convention (rt-utils writes holes so, SlicerRT reads them so; viewers draw each as an outline). No keyhole
(pinhole) cuts are made: they would add a sliver to the region. Boundaries are marching-squares iso-lines at 0.5 through the voxel
centres' grid (skimage.measure.find_contours), with collinear points dropped (exact: the polygon is unchanged),
so that rasterising a contour back (pixel centres inside) gives the voxels it came from.

Reading rasterises every CLOSED_PLANAR contour onto a reference grid (the series') with even-odd filling.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from skimage.draw import polygon as fill_polygon
from skimage.measure import find_contours

from sam2med.dicom.seg import _check_source, source_datasets
from sam2med.dicom.segment_map import describe_segments
from sam2med.dicom.segments import ANATOMICAL_STRUCTURE_CATEGORY, Algorithm, Segment
from sam2med.errors import InputError
from sam2med.geometry import Grid
from sam2med.io import label_dtype, write_atomically

logger = logging.getLogger(__name__)

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # the SOP class RTReferencedStudySequence items name
DEFAULT_SERIES_DESCRIPTION = "sam2med RTSTRUCT"
_PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                      "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription")


def _voxel_to_patient(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix, origin): patient point = matrix @ (i, j, k) + origin."""
    matrix = np.asarray(grid.direction, float).reshape(3, 3) * np.asarray(grid.spacing, float)[None, :]
    return matrix, np.asarray(grid.origin, float)


def slice_instances(datasets: Sequence[Dataset], grid: Grid) -> list[Dataset]:
    """The dataset of each slice k of `grid` (axis 2), matched by ImagePositionPatient; the series must be the grid's
    slices: every file with a position and orientation, the orientation the grid's, one file per slice."""
    missing = [i for i, ds in enumerate(datasets) if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds]
    if missing:
        keyword = "ImagePositionPatient" if "ImagePositionPatient" not in datasets[missing[0]] else "ImageOrientationPatient"
        raise InputError(f"the DICOM series has {len(missing)} file(s) without {keyword}: its slices have no place in patient "
                         "space, so contours cannot be written for it")
    matrix, origin = _voxel_to_patient(grid)
    direction = np.asarray(grid.direction, float).reshape(3, 3)
    by_slice: dict[int, Dataset] = {}
    for ds in datasets:
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient], float)
        if not (np.allclose(orientation[:3], direction[:, 0], atol=1e-3) and np.allclose(orientation[3:], direction[:, 1], atol=1e-3)):
            raise InputError("the DICOM series' ImageOrientationPatient differs from the label's grid (an oblique or mixed series)")
        voxel = np.linalg.solve(matrix, np.asarray([float(v) for v in ds.ImagePositionPatient], float) - origin)
        k = int(np.rint(voxel[2]))
        if not np.allclose(voxel, [0, 0, k], atol=1e-2) or not 0 <= k < grid.shape[2]:
            raise InputError(f"a file of the DICOM series (ImagePositionPatient {list(ds.ImagePositionPatient)}) is not a slice of "
                             "the label's grid")
        if k in by_slice:
            raise InputError(f"two files of the DICOM series lie on slice {k}")
        by_slice[k] = ds
    absent = [k for k in range(grid.shape[2]) if k not in by_slice]
    if absent:
        raise InputError(f"the DICOM series has no file for slice(s) {absent[:5]} of the label's grid")
    return [by_slice[k] for k in range(grid.shape[2])]


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """A closed polygon's vertices (not repeated at the end) without those on a straight run: the same polygon."""
    previous, following = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    a, b = points - previous, following - points
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    keep = np.abs(cross) > 1e-9
    return points[keep] if keep.sum() >= 3 else points


def slice_contours(mask_xy: np.ndarray) -> list[np.ndarray]:
    """Closed contours (each (N, 2) in voxel (i, j), not repeating the first point) of a 2D mask: one per region
    boundary and one per hole boundary; foreground is 8-connected."""
    if not mask_xy.any():
        return []
    rows, cols = np.nonzero(mask_xy)
    r0, c0 = rows.min() - 1, cols.min() - 1  # one voxel of background all around: every contour closes
    crop = np.zeros((rows.max() - r0 + 2, cols.max() - c0 + 2), dtype=np.float32)
    crop[rows - r0, cols - c0] = 1.0
    contours = []
    for contour in find_contours(crop, 0.5, fully_connected="high"):
        points = contour[:-1] if np.allclose(contour[0], contour[-1]) else contour
        if len(points) >= 3:
            contours.append(_drop_collinear(points) + np.array([r0, c0], float))
    return contours


def _code_item(segment: Segment) -> Dataset:
    item = segment.type.to_dataset()
    if segment.modifier is not None:
        item.SegmentedPropertyTypeModifierCodeSequence = [segment.modifier.to_dataset()]
    return item


def _reference(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
    return item


def write_rtstruct(
    label_xyz: np.ndarray,
    grid: Grid,
    series: str | os.PathLike | Sequence[Dataset],
    names: Mapping[int, str] | None = None,
    series_description: str = DEFAULT_SERIES_DESCRIPTION,
    series_number: int = 301,
    segments: Mapping[int, Segment] | None = None,
    algorithm: Algorithm | None = None,
) -> Dataset:
    """An RT Structure Set dataset for `label_xyz` (on `grid`, the series' own grid) referencing `series`.

    `series` is the DICOM folder or its datasets; `segments` describes label values (name, colour, codes),
    `names` names the others; `algorithm` (default: sam2med, SEMIAUTOMATIC) is recorded per ROI.
    """
    datasets = source_datasets(series)
    _check_source(datasets)
    if tuple(label_xyz.shape) != tuple(grid.shape):
        raise InputError(f"label shape {label_xyz.shape} does not match the series grid {grid.shape}")
    values = [int(v) for v in np.unique(label_xyz) if v != 0]
    if not values:
        raise InputError("the label is empty: an RTSTRUCT needs at least one labelled voxel")
    if max(values) > 65535:
        raise InputError(f"label value {max(values)} is too large for an RTSTRUCT ROI number")
    instances = slice_instances(datasets, grid)
    frame_of_reference = str(datasets[0].get("FrameOfReferenceUID") or "").strip()
    if not frame_of_reference:
        raise InputError("the DICOM series has no FrameOfReferenceUID; repair it first (sam2med.dicom.series.repair_series)")
    algorithm = algorithm or Algorithm()
    described = describe_segments(values, names, segments)
    matrix, origin = _voxel_to_patient(grid)
    first = datasets[0]

    now = datetime.datetime.now()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for keyword in _PATIENT_AND_STUDY:
        setattr(ds, keyword, first.get(keyword, ""))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description[:64]
    ds.OperatorsName = ""
    ds.Manufacturer = "sam2med"
    ds.SoftwareVersions = (f"{algorithm.name} {algorithm.version}".strip())[:64]
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "sam2med"
    ds.StructureSetName = series_description[:64]
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime

    contour_images = [_reference(str(inst.SOPClassUID), str(inst.SOPInstanceUID)) for inst in instances]
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = str(first.SeriesInstanceUID)
    referenced_series.ContourImageSequence = contour_images
    referenced_study = _reference(DETACHED_STUDY_MANAGEMENT, str(first.StudyInstanceUID))
    referenced_study.RTReferencedSeriesSequence = [referenced_series]
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_of_reference
    frame.RTReferencedStudySequence = [referenced_study]
    ds.ReferencedFrameOfReferenceSequence = [frame]

    structure_rois, roi_contours, observations = [], [], []
    total = 0
    for segment in described:
        roi = Dataset()
        roi.ROINumber = segment.value
        roi.ReferencedFrameOfReferenceUID = frame_of_reference
        roi.ROIName = segment.name[:64]
        roi.ROIGenerationAlgorithm = algorithm.kind
        roi.ROIGenerationDescription = (f"{algorithm.name} {algorithm.version}".strip())[:64]
        structure_rois.append(roi)

        contours = []
        present = np.flatnonzero((label_xyz == segment.value).any(axis=(0, 1)))
        for k in present:
            for points in slice_contours(label_xyz[:, :, k] == segment.value):
                voxels = np.column_stack([points, np.full(len(points), float(k))])
                patient = voxels @ matrix.T + origin
                contour = Dataset()
                contour.ContourImageSequence = [contour_images[k]]
                contour.ContourGeometricType = "CLOSED_PLANAR"
                contour.NumberOfContourPoints = len(patient)
                contour.ContourNumber = len(contours) + 1
                contour.ContourData = [round(float(v), 4) for v in patient.ravel()]
                contours.append(contour)
        total += len(contours)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(segment.color)
        roi_contour.ReferencedROINumber = segment.value
        roi_contour.ContourSequence = contours
        roi_contours.append(roi_contour)

        observation = Dataset()
        observation.ObservationNumber = segment.value
        observation.ReferencedROINumber = segment.value
        observation.ROIObservationLabel = segment.name[:16]
        observation.RTROIInterpretedType = "ORGAN" if (segment.category.scheme, segment.category.value) == (ANATOMICAL_STRUCTURE_CATEGORY.scheme, ANATOMICAL_STRUCTURE_CATEGORY.value) else ""
        observation.ROIInterpreter = ""
        observation.SegmentedPropertyCategoryCodeSequence = [segment.category.to_dataset()]
        observation.RTROIIdentificationCodeSequence = [_code_item(segment)]
        observations.append(observation)
    ds.StructureSetROISequence = structure_rois
    ds.ROIContourSequence = roi_contours
    ds.RTROIObservationsSequence = observations
    ds.ApprovalStatus = "UNAPPROVED"
    logger.info("RTSTRUCT: %d ROI(s) %s, %d contours on %d slices", len(values), values[:10], total, len(instances))
    return ds


def save_rtstruct(rtstruct: Dataset, path: str | os.PathLike) -> Path:
    """Write an RTSTRUCT dataset atomically."""
    return write_atomically(path, lambda tmp: rtstruct.save_as(tmp, write_like_original=False))


def _as_dataset(rtstruct: str | os.PathLike | Dataset) -> Dataset:
    if isinstance(rtstruct, Dataset):
        dataset = rtstruct
    else:
        try:
            dataset = pydicom.dcmread(rtstruct)
        except Exception as err:  # pydicom raises many kinds for a broken file
            raise InputError(f"{rtstruct}: cannot read it as DICOM ({str(err).splitlines()[0][:120]})") from None
    if str(dataset.get("SOPClassUID", "")) != RT_STRUCTURE_SET_STORAGE:
        raise InputError(f"not an RTSTRUCT (SOP Class {dataset.get('SOPClassUID', 'missing')})")
    return dataset


def roi_names(rtstruct: str | os.PathLike | Dataset) -> dict[int, str]:
    """ROI number -> ROI name of an RTSTRUCT."""
    return {int(item.ROINumber): str(item.get("ROIName", "")) for item in _as_dataset(rtstruct).get("StructureSetROISequence", [])}


def read_rtstruct(rtstruct: str | os.PathLike | Dataset, reference: Grid) -> tuple[np.ndarray, dict[int, str]]:
    """An RTSTRUCT rasterised on `reference` (the series' grid): an (x, y, z) label array whose values are the ROI
    numbers (a later ROI wins where ROIs overlap), and {ROI number: name}. The closed contours of one ROI on one
    slice combine even-odd, so a contour inside another is a hole."""
    dataset = _as_dataset(rtstruct)
    names = roi_names(dataset)
    numbers = [int(item.ReferencedROINumber) for item in dataset.get("ROIContourSequence", [])]
    label = np.zeros(reference.shape, dtype=label_dtype(max(numbers, default=0)))
    matrix, origin = _voxel_to_patient(reference)
    inverse = np.linalg.inv(matrix)
    skipped = 0
    for item in dataset.get("ROIContourSequence", []):
        number = int(item.ReferencedROINumber)
        inside = np.zeros(reference.shape, dtype=bool)
        for contour in item.get("ContourSequence", []):
            if str(contour.get("ContourGeometricType", "")) != "CLOSED_PLANAR":
                skipped += 1
                continue
            points = np.asarray([float(v) for v in contour.ContourData], float).reshape(-1, 3)
            voxels = (points - origin) @ inverse.T
            k = int(np.rint(voxels[:, 2].mean()))
            if not np.allclose(voxels[:, 2], k, atol=0.25) or not 0 <= k < reference.shape[2]:
                skipped += 1  # off the grid's slices: another grid's contour
                continue
            rows, cols = fill_polygon(voxels[:, 0], voxels[:, 1], shape=reference.shape[:2])
            inside[rows, cols, k] ^= True
        label[inside] = number
    if skipped:
        logger.warning("RTSTRUCT: %d contour(s) skipped (not closed planar, or not on a slice of the reference grid)", skipped)
    return label, names
