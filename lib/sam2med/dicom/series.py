"""Reading a DICOM series folder with pydicom and repairing the identifiers that anonymised exports drop.

Anonymised exports often blank the Study/Series/SOP Instance UIDs and the SOP Class UID; DICOM servers
(Orthanc among them) refuse such files. `repair_series` gives every file of a series consistent UIDs:
one study and one series UID for all, one SOP Instance UID per file, derived deterministically from the
files themselves so that uploading the same folder twice gives the same identifiers.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, generate_uid

from sam2med.errors import InputError

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
PET_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.128")
SOP_CLASS_BY_MODALITY = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE, "PT": PET_IMAGE_STORAGE}


@dataclass
class SeriesFile:
    """One DICOM file of a series and its dataset (pixel data included unless read without it)."""

    path: Path
    dataset: Dataset


@dataclass
class RepairReport:
    """What `repair_series` changed, per attribute: how many files got a new value."""

    changed: dict[str, int] = field(default_factory=dict)

    def add(self, attribute: str) -> None:
        self.changed[attribute] = self.changed.get(attribute, 0) + 1

    def __str__(self) -> str:
        if not self.changed:
            return "nothing to repair"
        return ", ".join(f"{name} ({count} files)" for name, count in sorted(self.changed.items()))


def read_series_files(folder: str | os.PathLike, pixels: bool = True) -> list[SeriesFile]:
    """Every DICOM image file directly in `folder` (other files are skipped), in file-name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of DICOM files")
    files: list[SeriesFile] = []
    skipped = 0
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=not pixels)
        except (InvalidDicomError, OSError, ValueError, TypeError):
            skipped += 1
            continue
        if "ImagePositionPatient" not in dataset and "PixelData" not in dataset and pixels:
            skipped += 1
            continue
        files.append(SeriesFile(path, dataset))
    if skipped:
        logger.info("%s: skipped %d file(s) that are not DICOM images", folder, skipped)
    if not files:
        raise InputError(f"{folder}: no DICOM files found in this folder")
    return files


def _blank(dataset: Dataset, keyword: str) -> bool:
    value = dataset.get(keyword)
    return value is None or str(value).strip() == ""


def _valid_uid(value: object) -> bool:
    text = str(value or "").strip()
    return bool(text) and UID(text).is_valid


def _series_key(files: list[SeriesFile]) -> str:
    """A stable digest of the series: its frame of reference and the slice positions and instance numbers."""
    digest = hashlib.blake2b(digest_size=16)
    for item in files:
        ds = item.dataset
        digest.update(str(ds.get("FrameOfReferenceUID", "")).encode())
        digest.update(str(ds.get("ImagePositionPatient", "")).encode())
        digest.update(str(ds.get("InstanceNumber", "")).encode())
        digest.update(str(ds.file_meta.get("MediaStorageSOPInstanceUID", "") if hasattr(ds, "file_meta") else "").encode())
    return digest.hexdigest()


def repair_series(files: list[SeriesFile]) -> RepairReport:
    """Fill blank or invalid Study/Series/SOP Instance/SOP Class/Frame of Reference UIDs, in place.

    Present valid values are kept. A blank SOP Class comes from the file meta or, failing that, the
    modality (CT, MR, PT). The file meta is made to agree with the dataset.
    """
    if not files:
        raise InputError("no DICOM files to repair")
    report = RepairReport()
    key = _series_key(files)
    datasets = [item.dataset for item in files]

    def shared(keyword: str, purpose: str) -> str:
        values = {str(ds.get(keyword)).strip() for ds in datasets if _valid_uid(ds.get(keyword))}
        if len(values) == 1:
            return values.pop()
        if len(values) > 1:
            raise InputError(f"the files hold {len(values)} different {keyword}s: they are not one series")
        return generate_uid(entropy_srcs=[key, purpose])

    study_uid = shared("StudyInstanceUID", "study")
    series_uid = shared("SeriesInstanceUID", "series")
    frame_uid = shared("FrameOfReferenceUID", "frame-of-reference")
    seen_instances: set[str] = set()
    for index, item in enumerate(files):
        ds = item.dataset
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            meta = ds.file_meta = FileMetaDataset()
        for keyword, value in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid), ("FrameOfReferenceUID", frame_uid)):
            if not _valid_uid(ds.get(keyword)):
                setattr(ds, keyword, value)
                report.add(keyword)
        if not _valid_uid(ds.get("SOPClassUID")):
            sop_class = meta.get("MediaStorageSOPClassUID")
            if not _valid_uid(sop_class):
                modality = str(ds.get("Modality", "")).strip().upper()
                if modality not in SOP_CLASS_BY_MODALITY:
                    raise InputError(f"{item.path}: no SOP Class UID and modality {modality or 'unknown'!r}; "
                                     f"only {', '.join(SOP_CLASS_BY_MODALITY)} can be inferred")
                sop_class = SOP_CLASS_BY_MODALITY[modality]
            ds.SOPClassUID = UID(str(sop_class))
            report.add("SOPClassUID")
        instance_uid = str(ds.get("SOPInstanceUID") or "").strip()
        if not _valid_uid(instance_uid) or instance_uid in seen_instances:
            candidate = str(meta.get("MediaStorageSOPInstanceUID", "")).strip()
            if not _valid_uid(candidate) or candidate in seen_instances:
                candidate = generate_uid(entropy_srcs=[key, "instance", str(index), str(ds.get("ImagePositionPatient", ""))])
            ds.SOPInstanceUID = candidate
            report.add("SOPInstanceUID")
        seen_instances.add(str(ds.SOPInstanceUID))
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "TransferSyntaxUID" not in meta:
            meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian if ds.is_implicit_VR else pydicom.uid.ExplicitVRLittleEndian
            report.add("TransferSyntaxUID")
    if report.changed:
        logger.info("repaired %d DICOM files: %s", len(files), report)
    return report


def decompress(item: SeriesFile) -> bool:
    """Store the pixel data of a compressed single-frame greyscale file uncompressed (Explicit VR Little
    Endian), in place; returns whether it changed. GDCM (in SimpleITK) decodes, JPEG 2000 included, and the
    stored values are recovered exactly from its rescaled output. Servers without a transcoder (Debian's
    Orthanc) can then serve the series in any transfer syntax a viewer asks for."""
    ds = item.dataset
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None or not UID(str(syntax)).is_compressed:
        return False
    if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise InputError(f"{item.path}: only single-frame greyscale compressed files can be decompressed")
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(item.path))
    try:
        values = sitk.GetArrayFromImage(reader.Execute()).astype(np.float64).reshape(int(ds.Rows), int(ds.Columns))
    except RuntimeError as err:
        raise InputError(f"{item.path}: cannot decode its pixel data ({str(err).strip().splitlines()[-1][:120]})") from None
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    stored = np.rint((values - intercept) / slope)
    dtype = np.int16 if int(ds.get("PixelRepresentation", 0)) == 1 else np.uint16
    if int(ds.BitsAllocated) != 16:
        raise InputError(f"{item.path}: {ds.BitsAllocated}-bit compressed pixel data is not supported for decompression")
    ds.PixelData = stored.astype(dtype).tobytes()
    ds["PixelData"].VR = "OW"
    ds["PixelData"].is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.is_implicit_VR = False
    ds.is_little_endian = True
    return True


def write_series(files: list[SeriesFile], folder: str | os.PathLike) -> list[Path]:
    """Write the datasets of `files` into `folder` (created), one file each named by SOP Instance UID."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in files:
        path = folder / f"{item.dataset.SOPInstanceUID}.dcm"
        item.dataset.save_as(path, write_like_original=False)
        paths.append(path)
    return paths


def repaired_copy(source: str | os.PathLike, destination: str | os.PathLike) -> tuple[list[Path], RepairReport]:
    """Copy a DICOM series folder into `destination` with its identifiers repaired."""
    files = read_series_files(source)
    report = repair_series(files)
    return write_series(files, destination), report
