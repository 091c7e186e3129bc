"""DICOM-SEG writing and reading with pydicom-seg (no dcmqi binaries needed).

A label map on the grid of a DICOM series becomes one binary DICOM-SEG instance that references the
series' instances, with one segment per label value (the segment number is the label value, as MONAI
Label and pydicom-seg do). Reading maps a DICOM-SEG back onto any reference grid in patient space.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pydicom_seg
import SimpleITK as sitk
from pydicom.dataset import Dataset

from sam2med.dicom.segment_map import describe_segments
from sam2med.dicom.segments import Algorithm, Segment
from sam2med.errors import InputError
from sam2med.geometry import Grid
from sam2med.io import grid_of, label_image, write_atomically

logger = logging.getLogger(__name__)

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
DEFAULT_SERIES_DESCRIPTION = "sam2med"

def _segment_attributes(segments: Sequence[Segment], algorithm: Algorithm) -> list[dict]:
    attributes = []
    for segment in segments:
        item = {
            "labelID": int(segment.value),
            "SegmentLabel": segment.name[:64],
            "SegmentDescription": segment.name[:64],
            "SegmentAlgorithmType": algorithm.kind,
            "SegmentedPropertyCategoryCodeSequence": segment.category.to_dcmqi(),
            "SegmentedPropertyTypeCodeSequence": segment.type.to_dcmqi(),
            "recommendedDisplayRGBValue": list(segment.color),
        }
        if algorithm.kind != "MANUAL":
            item["SegmentAlgorithmName"] = algorithm.name[:64]
        attributes.append(item)
    return attributes


def _code_modifiers(seg: Dataset, segments: Sequence[Segment]) -> None:
    """Each segment's type modifier (e.g. Left) inside its type code item, and its anatomic region (with its
    modifier inside), as the Segment Description macro nests them."""
    by_value = {int(segment.value): segment for segment in segments}
    for item in seg.SegmentSequence:
        segment = by_value.get(int(item.SegmentNumber))
        if segment is None:
            continue
        if segment.modifier is not None:
            item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [segment.modifier.to_dataset()]
        if segment.region is not None:
            region = segment.region.to_dataset()
            if segment.region_modifier is not None:
                region.AnatomicRegionModifierSequence = [segment.region_modifier.to_dataset()]
            item.AnatomicRegionSequence = [region]


def _identify_algorithm(seg: Dataset, algorithm: Algorithm) -> None:
    """Each segment's SegmentationAlgorithmIdentificationSequence: family, name and version of the algorithm."""
    if algorithm.kind == "MANUAL":
        return
    for item in seg.SegmentSequence:
        identification = Dataset()
        family = Dataset()
        family.CodeValue, family.CodingSchemeDesignator = algorithm.family.value, algorithm.family.scheme
        family.CodeMeaning = algorithm.family.meaning
        identification.AlgorithmFamilyCodeSequence = [family]
        identification.AlgorithmName = algorithm.name[:64]
        identification.AlgorithmVersion = (algorithm.version or "unknown")[:64]
        item.SegmentationAlgorithmIdentificationSequence = [identification]


def _check_source(datasets: Sequence[Dataset]) -> None:
    if not datasets:
        raise InputError("no source DICOM images to reference in the DICOM-SEG")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if any(not str(ds.get(keyword) or "").strip() for ds in datasets):
            raise InputError(f"the source DICOM series has blank {keyword}s; repair it first "
                             "(sam2med.dicom.series.repair_series, or scripts/orthanc/upload_series.sh when uploading)")


def source_datasets(series: str | os.PathLike | Sequence[Dataset]) -> list[Dataset]:
    """The source series as datasets (header only when read from a folder)."""
    if isinstance(series, (str, os.PathLike)):
        from sam2med.dicom.series import read_series_files

        return [item.dataset for item in read_series_files(series, pixels=False)]
    return list(series)


def write_seg(
    label_xyz: np.ndarray,
    grid: Grid,
    series: str | os.PathLike | Sequence[Dataset],
    names: Mapping[int, str] | None = None,
    series_description: str = DEFAULT_SERIES_DESCRIPTION,
    series_number: int = 300,
    segments: Mapping[int, Segment] | None = None,
    algorithm: Algorithm | None = None,
) -> Dataset:
    """A DICOM-SEG dataset for `label_xyz` (on `grid`, the series' own grid) referencing `series`.

    `series` is the DICOM folder or its datasets; `segments` describes label values (name, colour, codes),
    `names` names the others; `algorithm` (default: sam2med, SEMIAUTOMATIC) is recorded per segment.
    """
    datasets = source_datasets(series)
    _check_source(datasets)
    values = [int(v) for v in np.unique(label_xyz) if v != 0]
    if not values:
        raise InputError("the label is empty: a DICOM-SEG needs at least one labelled voxel")
    if max(values) > 65535:
        raise InputError(f"label value {max(values)} is too large for a DICOM-SEG segment number")
    image = sitk.Cast(label_image(label_xyz, grid), sitk.sitkUInt16)
    described = describe_segments(values, names, segments)
    template = pydicom_seg.template.from_dcmqi_metainfo({
        "ContentCreatorName": "sam2med",
        "ClinicalTrialSeriesID": "Session1",
        "ClinicalTrialTimePointID": "1",
        "SeriesDescription": series_description[:64],
        "SeriesNumber": str(series_number),
        "InstanceNumber": "1",
        "BodyPartExamined": str(datasets[0].get("BodyPartExamined", "") or ""),
        "segmentAttributes": [_segment_attributes(described, algorithm or Algorithm())],
        "ContentLabel": "SEGMENTATION",
        "ContentDescription": "sam2med propagation",
        "ClinicalTrialCoordinatingCenterName": "sam2med",
    })
    writer = pydicom_seg.MultiClassWriter(template=template, inplane_cropping=False, skip_empty_slices=True,
                                          skip_missing_segment=False)
    frame_of_reference = str(datasets[0].get("FrameOfReferenceUID") or "").strip()
    try:
        # copies: pydicom-seg shares data elements with its reference dataset and then overwrites them
        seg = writer.write(image, [copy.deepcopy(ds) for ds in datasets])
    except ValueError as err:
        raise InputError(f"cannot write the DICOM-SEG: {err}") from None
    referenced = sum(len(item.ReferencedInstanceSequence) for item in seg.get("ReferencedSeriesSequence", []))
    if referenced == 0:
        raise InputError("the label's grid does not overlap the DICOM series: no slice of the series is referenced")
    _identify_algorithm(seg, algorithm or Algorithm())
    _code_modifiers(seg, described)
    # pydicom-seg gives the SEG a new frame of reference; it shares the series' one.
    if frame_of_reference:
        seg.FrameOfReferenceUID = frame_of_reference
    logger.info("DICOM-SEG: %d segment(s) %s, %d frames, referencing %d of %d instances",
                len(values), values[:10], int(seg.NumberOfFrames), referenced, len(datasets))
    return seg


def save_seg(seg: Dataset, path: str | os.PathLike) -> Path:
    """Write a DICOM-SEG dataset atomically."""
    return write_atomically(path, lambda tmp: seg.save_as(tmp, write_like_original=False))


def _as_dataset(seg: str | os.PathLike | Dataset) -> Dataset:
    if isinstance(seg, Dataset):
        return seg
    path = Path(seg)
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.is_file())
        if len(candidates) != 1:
            raise InputError(f"{path}: expected one DICOM-SEG file in this folder, found {len(candidates)} files")
        path = candidates[0]
    try:
        return pydicom.dcmread(path)
    except Exception as err:  # pydicom raises many kinds for a broken file
        raise InputError(f"{path}: cannot read it as DICOM ({str(err).splitlines()[0][:120]})") from None


def segment_names(seg: str | os.PathLike | Dataset) -> dict[int, str]:
    """Segment number -> segment label of a DICOM-SEG."""
    dataset = _as_dataset(seg)
    return {int(item.SegmentNumber): str(item.get("SegmentLabel", "")) for item in dataset.get("SegmentSequence", [])}


def read_seg(seg: str | os.PathLike | Dataset, reference: Grid | None = None) -> tuple[np.ndarray, Grid]:
    """A DICOM-SEG as an (x, y, z) label array, values = segment numbers.

    With `reference`, the label is resampled (nearest neighbour, in patient space) onto that grid,
    e.g. the grid of the source series; without it, it is on the SEG's own grid (its frames' extent).
    """
    dataset = _as_dataset(seg)
    if str(dataset.get("SOPClassUID", "")) != SEGMENTATION_STORAGE:
        raise InputError(f"not a DICOM-SEG (SOP Class {dataset.get('SOPClassUID', 'missing')})")
    try:
        image = pydicom_seg.MultiClassReader().read(dataset).image
    except (ValueError, AttributeError, KeyError) as err:
        raise InputError(f"cannot read the DICOM-SEG: {err}") from None
    if reference is not None:
        target = label_image(np.zeros(reference.shape, dtype=np.uint8), reference)
        image = sitk.Resample(image, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    return array, grid_of(image)
