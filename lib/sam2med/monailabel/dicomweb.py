"""A MONAI Label DICOMweb datastore that starts offline and writes DICOM-SEG with pydicom-seg.

MONAI Label's own DICOMweb set-up downloads the dcmqi binaries from the internet at start-up (and fails
offline), then converts labels to DICOM-SEG with them. `Sam2MedDICOMWebDatastore` keeps MONAI Label's
series download and caching, and replaces the DICOM-SEG parts:

- a label saved with tag `final` (the seed or an accepted label) and any other saved label (a model
  result, e.g. tag `original`) is written as DICOM-SEG referencing the series and stored on the DICOMweb
  server, so OHIF lists it as a segmentation of the series; a local NIfTI copy serves later requests;
- the `final` label of a series that has none locally is looked up on the server: the newest DICOM-SEG
  referencing the series that is not a sam2med result is fetched and mapped onto the series' grid.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import SimpleITK as sitk
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.convert import binary_to_image
from monailabel.interfaces.datastore import DefaultLabelTag
from pydicom.dataset import Dataset

from sam2med.dicom.rtstruct import write_rtstruct
from sam2med.dicom.seg import read_seg, save_seg, write_seg
from sam2med.dicom.segments import Algorithm, Segment
from sam2med.errors import InputError
from sam2med.geometry import Grid
from sam2med.monailabel.http import call
from sam2med.monailabel.params import parse_seed_tag
from sam2med.monailabel.safety import check_image_id
from sam2med.io import grid_of, load_label, load_volume, save_label
from sam2med.prompts import seed_on_image_grid

logger = logging.getLogger(__name__)

SEED_DESCRIPTION = "sam2med label"
RESULT_DESCRIPTION = "sam2med result"
_SERIES_UID_TAG = "0020000E"


def _names_from_info(label_info: dict[str, Any] | None) -> dict[int, str]:
    """Label names from a MONAI Label label_info: {"label_info": [{"name": ..., "idx": ...}]} or {"labels": {name: idx}}."""
    info = label_info or {}
    names: dict[int, str] = {}
    labels = info.get("labels")
    if isinstance(labels, dict):
        for name, value in labels.items():
            if isinstance(value, (int, float)) or str(value).isdigit():
                names[int(value)] = str(name)
    for i, item in enumerate(info.get("label_info") or [], 1):
        if isinstance(item, dict) and item.get("name"):
            names[int(item.get("idx", item.get("labelID", i)))] = str(item["name"])
    return names


def algorithm_of(label_info: dict[str, Any] | None) -> Algorithm:
    """The algorithm of a saved label: the model version a result reports (a propagation: SEMIAUTOMATIC), else the
    app's own name with no version (a label a client submitted)."""
    report = (label_info or {}).get("params") or {}
    version = report.get("model_version") if isinstance(report, dict) else None
    return Algorithm(name="sam2med SAM2.1", version=str(version)) if isinstance(version, str) and version else Algorithm()


def _serving_version() -> str:
    """The model version of the app serving this process ('' outside a server)."""
    try:
        from monailabel.interfaces.utils.app import app_instance

        engine = getattr(getattr(app_instance(), "services", None), "engine", None)
        return (engine.current_version() or "") if engine is not None else ""
    except Exception:  # no app (a script calling the converter): no version to name
        return ""


def result_description(tag: str, label_info: dict[str, Any] | None, when: float | None = None) -> str:
    """A DICOM SeriesDescription (at most 64 characters) naming a result by its labels, slice range and time."""
    report = (label_info or {}).get("params") or {}
    names = report.get("label_names") if isinstance(report, dict) else None
    labels = " ".join(sorted(names, key=lambda n: names[n])) if isinstance(names, dict) and names else ""
    slice_range = report.get("slice_range") if isinstance(report, dict) else None
    span = f"{slice_range[0]}-{slice_range[1]}" if isinstance(slice_range, list) and len(slice_range) == 2 else ""
    stamp = time.strftime("%H:%M:%S", time.localtime(when))
    head = f"{RESULT_DESCRIPTION} ({tag})" if not labels and not span else RESULT_DESCRIPTION
    tail = " ".join(part for part in (span, stamp) if part)
    room = 64 - len(head) - len(tail) - 2
    if labels and room > 3:
        labels = labels if len(labels) <= room else labels[: room - 1] + "~"
        return f"{head} {labels} {tail}"
    return f"{head} {tail}"[:64]


def download_series(client: Any, series_uid: str, folder: str) -> None:
    """Fetch every instance of a series in its stored transfer syntax (no transcoding asked of the server:
    Orthanc without its GDCM plugin cannot transcode JPEG 2000) into `folder`, atomically."""
    found = client.search_for_series(search_filters={"SeriesInstanceUID": series_uid})
    studies = [Dataset.from_json(item).get("StudyInstanceUID") for item in found
               if item.get(_SERIES_UID_TAG, {}).get("Value") == [series_uid]]
    if not studies:
        raise HTTPException(status_code=404, detail=f"series {series_uid!r} is not on the DICOMweb server")
    parent = Path(folder).parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=parent))
    try:
        instances = client.retrieve_series(str(studies[0]), series_uid, media_types=(("application/dicom", "*"),))
        for instance in instances:
            instance.save_as(tmp / f"{instance.SOPInstanceUID}.dcm", write_like_original=False)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        logger.info("downloaded series %s: %d instances", series_uid, len(instances))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Sam2MedDICOMWebDatastore(DICOMWebDatastore):
    """MONAI Label's DICOMweb datastore with DICOM-SEG written and read by sam2med (no dcmqi)."""

    def __init__(self, *args: Any, label_names: dict[str, int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._label_names = {int(v): str(k) for k, v in (label_names or {}).items()}

    # -- images -------------------------------------------------------------------------------
    def get_image_uri(self, image_id: str) -> str:
        call(check_image_id, image_id)
        series_dir = self._series_dir(image_id)
        if not os.path.isdir(series_dir) or not os.listdir(series_dir):
            download_series(self._client, image_id, series_dir)
        return super().get_image_uri(image_id)

    def _series_dir(self, image_id: str) -> str:
        return os.path.realpath(os.path.join(self._datastore.image_path(), image_id))

    def image_grid(self, image_id: str):
        """The grid of the cached image (NIfTI converted from the series by SimpleITK, or the series folder)."""
        uri = self.get_image_uri(image_id)
        if os.path.isdir(uri):
            return load_volume(uri).grid
        reader = sitk.ImageFileReader()
        reader.SetFileName(uri)
        reader.ReadImageInformation()
        return grid_of(reader)

    # -- saving labels as DICOM-SEG -------------------------------------------------------------
    def store_seg(self, image_id: str, label_file: str, names: dict[int, str] | None = None,
                  description: str = SEED_DESCRIPTION, algorithm: Algorithm | None = None) -> str:
        """Write `label_file` (on the image's grid) as DICOM-SEG, store it on the server; returns its series UID."""
        grid = self.image_grid(image_id)
        label = load_label(label_file)
        array = seed_on_image_grid(label.array, label.grid, grid)
        all_names = {**self._label_names, **(names or {})}
        seg = write_seg(array, grid, self._series_dir(image_id), all_names, series_description=description,
                        algorithm=algorithm)
        self._client.store_instances([seg])
        logger.info("stored DICOM-SEG %s (%s) for series %s", seg.SeriesInstanceUID, description, image_id)
        return str(seg.SeriesInstanceUID)

    def store_segmentation(self, image_id: str, array: np.ndarray, grid: Grid, segments: Mapping[int, Segment],
                           algorithm: Algorithm, description: str, format: str = "seg") -> str:
        """An annotator's saved segmentation (on the series' grid): written as DICOM-SEG or RTSTRUCT with its
        segments and algorithm, stored on the server, and kept as the series' `final` label (a stale local copy
        would hide it). Returns the stored series' UID."""
        writer = write_rtstruct if format == "rtstruct" else write_seg
        dataset = writer(array, grid, self._series_dir(image_id), series_description=description, segments=segments,
                         algorithm=algorithm)
        self._client.store_instances([dataset])
        seg_uid = str(dataset.SeriesInstanceUID)
        with tempfile.TemporaryDirectory() as tmp:
            path = save_label(array, grid, Path(tmp) / f"{image_id}.nii.gz")
            info = {"SeriesInstanceUID": seg_uid, "label_names": {s.name: v for v, s in segments.items()}}
            LocalDatastore.save_label(self, image_id, str(path), DefaultLabelTag.FINAL, info)
        logger.info("stored the saved segmentation %s (%s) for series %s", seg_uid, description, image_id)
        return seg_uid

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any],
                   label_id: str = "") -> str:
        call(parse_seed_tag, label_tag)
        label_info = dict(label_info or {})
        image_uri = self.get_image_uri(image_id)
        converted = ""
        if label_filename.lower().endswith(".bin"):  # OHIF's raw voxels
            converted = label_filename = binary_to_image(image_uri, label_filename)
        try:
            tag = str(getattr(label_tag, "value", label_tag))
            description = SEED_DESCRIPTION if tag == DefaultLabelTag.FINAL.value else result_description(tag, label_info)
            try:
                seg_uid = self.store_seg(image_id, label_filename, _names_from_info(label_info), description,
                                         algorithm_of(label_info))
            except InputError as err:
                if label_tag == DefaultLabelTag.FINAL:
                    raise
                logger.warning("result for %s not stored as DICOM-SEG: %s", image_id, err)
                seg_uid = ""
            if seg_uid:
                image_info = self.get_image_info(image_id)
                label_info.update({
                    "SeriesInstanceUID": seg_uid,
                    "Modality": image_info.get("Modality"),
                    "PatientID": image_info.get("PatientID"),
                    "StudyInstanceUID": image_info.get("StudyInstanceUID"),
                })
            return LocalDatastore.save_label(self, image_id, label_filename, label_tag, label_info)
        finally:
            if converted:
                Path(converted).unlink(missing_ok=True)

    # -- reading labels -------------------------------------------------------------------------
    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """The local copy; for tag `final` without one, the DICOM-SEG `label_id` (or, when `label_id` is the
        image, the newest non-result DICOM-SEG referencing it) fetched from the server."""
        call(parse_seed_tag, label_tag)
        call(check_image_id, label_id)
        image_id = image_id or label_id
        local = LocalDatastore.get_label_uri(self, image_id, label_tag)
        if (local and os.path.exists(local)) or label_tag != DefaultLabelTag.FINAL:
            return local
        seg_uid = label_id if label_id != image_id else self._find_seg_or_none(image_id)
        return self._fetch_seg(seg_uid, image_id) if seg_uid else ""

    def get_labels_by_image_id(self, image_id: str) -> dict[str, str]:
        labels = LocalDatastore.get_labels_by_image_id(self, image_id)
        if DefaultLabelTag.FINAL not in labels and self.get_label_uri(image_id, DefaultLabelTag.FINAL):
            labels = LocalDatastore.get_labels_by_image_id(self, image_id)
        return labels

    def _find_seg_or_none(self, image_id: str) -> str:
        try:
            return self.find_seg(image_id)
        except Exception as err:  # the server may be down: answer "no label" rather than fail
            logger.warning("could not look up a DICOM-SEG for %s on the server: %s", image_id, err)
            return ""

    def find_seg(self, image_id: str) -> str:
        """The newest DICOM-SEG series on the server that references `image_id` and is not a sam2med result."""
        found: list[tuple[str, str]] = []
        for item in self._client.search_for_series(search_filters={"Modality": "SEG"}):
            seg = Dataset.from_json(item)
            description = str(seg.get("SeriesDescription", ""))
            if description.startswith(RESULT_DESCRIPTION):
                continue
            metadata = self._client.retrieve_series_metadata(str(seg.StudyInstanceUID), str(seg.SeriesInstanceUID))
            if not metadata:
                continue
            meta = Dataset.from_json(metadata[0])
            referenced = [str(ref.SeriesInstanceUID) for ref in meta.get("ReferencedSeriesSequence", [])]
            if image_id in referenced:
                stamp = f"{meta.get('SeriesDate', '')}{meta.get('SeriesTime', '')}"
                found.append((stamp, str(seg.SeriesInstanceUID)))
        return max(found)[1] if found else ""

    def _fetch_seg(self, seg_uid: str, image_id: str) -> str:
        """Download DICOM-SEG `seg_uid`, map it onto the grid of `image_id` and save it as its `final` label."""
        label_dir = os.path.realpath(os.path.join(self._datastore.label_path(DefaultLabelTag.FINAL), seg_uid))
        if not os.path.isdir(label_dir) or not os.listdir(label_dir):
            download_series(self._client, seg_uid, label_dir)
        try:
            grid = self.image_grid(image_id)
            array, _ = read_seg(label_dir, grid)
            if not np.any(array):
                logger.warning("DICOM-SEG %s has no voxels on the grid of %s", seg_uid, image_id)
            with tempfile.TemporaryDirectory() as tmp:
                path = save_label(array, grid, Path(tmp) / f"{image_id}.nii.gz")
                LocalDatastore.save_label(self, image_id, str(path), DefaultLabelTag.FINAL, {"SeriesInstanceUID": seg_uid})
        finally:
            shutil.rmtree(label_dir, ignore_errors=True)
        return LocalDatastore.get_label_uri(self, image_id, DefaultLabelTag.FINAL)


def create_dicomweb_datastore(studies: str, label_names: dict[str, int] | None = None) -> Sam2MedDICOMWebDatastore:
    """The datastore for a DICOMweb URL, configured from MONAI Label's settings like its own, minus dcmqi."""
    if "googleapis.com" in studies:
        raise InputError("Google Cloud DICOMweb stores are not supported by sam2med's DICOMweb datastore")
    session = None
    if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
        from dicomweb_client.session_utils import create_session_from_user_pass

        session = create_session_from_user_pass(settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD)
    client = DICOMwebClientX(
        url=studies,
        session=session,
        qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
        wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
        stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
    )
    cache_path = (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip()
    logger.info("DICOMweb datastore at %s (DICOM-SEG by pydicom-seg, no dcmqi)", studies)
    return Sam2MedDICOMWebDatastore(
        client=client,
        search_filter=settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER,
        cache_path=cache_path or None,
        fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME,
        convert_to_nifti=settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI,
        label_names=label_names,
    )


def nifti_to_dicom_seg(series_dir: str, label: str, label_info: Any = None, file_ext: str = "*", use_itk: bool = True) -> str:
    """Drop-in for monailabel's converter of the same name, without dcmqi: a DICOM-SEG temp file path."""
    names = _names_from_info({"label_info": label_info if isinstance(label_info, list) else []})
    grid = load_volume(series_dir).grid
    source = load_label(label)
    seg = write_seg(seed_on_image_grid(source.array, source.grid, grid), grid, series_dir, names,
                    series_description=RESULT_DESCRIPTION,
                    algorithm=algorithm_of({"params": {"model_version": _serving_version()}}))
    fd, path = tempfile.mkstemp(suffix=".dcm")
    os.close(fd)
    return str(save_seg(seg, path))


def use_sam2med_dicom_seg() -> None:
    """Make MONAI Label's `/infer?output=dicom_seg` write DICOM-SEG with sam2med instead of dcmqi."""
    import monailabel.endpoints.infer as infer_endpoint

    infer_endpoint.nifti_to_dicom_seg = nifti_to_dicom_seg
