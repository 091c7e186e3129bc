"""`POST /sam2med/save`: the OHIF panel's Save, written by the server's own DICOM writers (SEG or RTSTRUCT).

The panel sends the segmentation exactly as the page shows it: its labelmap as a NRRD on the labelmap images'
own geometry (patient positions, not list order), and each segment's value, name and colour. The server maps
it voxel for voxel onto the series' grid (the same lattice in another axis order or with flips is re-indexed
exactly; any other grid is refused), writes a DICOM-SEG (or an RTSTRUCT, `format`) with the segments' names, colours and codes and the
algorithm that made them (SEMIAUTOMATIC, the model and its checkpoint hash; MANUAL when nothing was
propagated), stores it on the DICOMweb server and keeps it as the series' `final` label. OHIF's own writer
is not used: it orders frames by distance along the normal while the labelmap stays in InstanceNumber order,
so the saved SEG came out mirrored on series whose InstanceNumbers run along row x column.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from fastapi import Depends, File, Form, HTTPException, UploadFile
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from sam2med.dicom.export import FORMATS
from sam2med.dicom.segment_map import describe_segments
from sam2med.dicom.segments import Algorithm, Segment
from sam2med.errors import InputError
from sam2med.geometry import reorient_to
from sam2med.io import load_label
from sam2med.monailabel.dicomweb import Sam2MedDICOMWebDatastore
from sam2med.monailabel.http import http_errors, parse_request_params
from sam2med.monailabel.safety import check_image_id, upload_suffix

logger = logging.getLogger(__name__)

DEFAULT_DESCRIPTION = "sam2med segmentation"
_VERSION = re.compile(r"^[\w.:+-]{1,64}$")
_MAX_SEGMENTS = 1024


@dataclass(frozen=True)
class SaveRequest:
    """What the panel asks to save, checked: the segments by value, the series description, format and algorithm."""

    segments: Mapping[int, Segment]
    description: str
    format: str
    algorithm: Algorithm

    @classmethod
    def parse(cls, params: Mapping[str, Any], server_version: str | None) -> "SaveRequest":
        fmt = str(params.get("format") or "seg").strip().lower()
        if fmt not in FORMATS:
            raise InputError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
        description = " ".join(str(params.get("description") or DEFAULT_DESCRIPTION).split())
        if not description or len(description) > 64 or not description.isprintable():
            raise InputError("description must be 1 to 64 printable characters (a DICOM series description)")
        items = params.get("segments") or []
        if not isinstance(items, list) or len(items) > _MAX_SEGMENTS:
            raise InputError(f"segments must be a list of at most {_MAX_SEGMENTS} {{value, name, color}} objects")
        segments: dict[int, Segment] = {}
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("value"), int) or isinstance(item.get("value"), bool):
                raise InputError("each segment is an object {value: integer, name: text, color: [r, g, b]}")
            name = " ".join(str(item.get("name") or "").split())[:64]
            color = item.get("color") or (128, 128, 128)
            if not isinstance(color, (list, tuple)) or not all(isinstance(c, (int, float)) for c in color):
                raise InputError(f"segment {item['value']}: color must be [r, g, b] with values 0..255")
            segment = Segment(item["value"], name or f"label {item['value']}", tuple(int(round(c)) for c in color[:3]))
            if segment.value in segments:
                raise InputError(f"segment value {segment.value} is given twice")
            segments[segment.value] = segment
        return cls(segments, description, fmt, _algorithm(params.get("model_version"), server_version))


def _algorithm(model_version: Any, server_version: str | None) -> Algorithm:
    """SEMIAUTOMATIC with the version the panel's last run reported; MANUAL when the panel never propagated."""
    if model_version in (None, ""):
        return Algorithm(name="sam2med (brush only)", version="", kind="MANUAL")
    if not isinstance(model_version, str) or not _VERSION.match(model_version):
        raise InputError("model_version must be the model_version a run reported (MODEL:sha256 prefix)")
    if server_version and model_version != server_version:
        logger.info("saving a segmentation propagated with %s while the server now serves %s", model_version, server_version)
    return Algorithm(name="sam2med SAM2.1", version=model_version, kind="SEMIAUTOMATIC")


def save_labelmap(datastore: Any, image_id: str, label_path: str, request: SaveRequest) -> dict[str, Any]:
    """Map the uploaded labelmap onto the series' grid, write and store it; returns what was stored, per segment."""
    grid = datastore.image_grid(image_id)
    label = load_label(label_path)
    array = reorient_to(label.array, label.grid, grid)
    if array is None:
        raise InputError(f"the segmentation is not on the voxel grid of series {image_id} "
                         f"({label.grid.describe_difference(grid)}): save it from a viewer showing that series")
    found, voxels = np.unique(array[array > 0], return_counts=True)
    values, counts = [int(v) for v in found], {int(v): int(n) for v, n in zip(found, voxels)}
    if not values:
        raise InputError("nothing to save: the segmentation is empty (paint or run first)")
    unnamed = [v for v in values if v not in request.segments]
    if unnamed:
        raise InputError(f"the labelmap holds value(s) {unnamed} that no segment describes")
    segments = {s.value: s for s in describe_segments(values, given=request.segments)}
    seg_uid = datastore.store_segmentation(image_id, array, grid, segments, request.algorithm, request.description,
                                           request.format)
    return {
        "format": request.format,
        "series_uid": seg_uid,
        "description": request.description,
        "algorithm": {"kind": request.algorithm.kind, "name": request.algorithm.name, "version": request.algorithm.version},
        "segments": [{"value": v, "name": segments[v].name, "voxels": counts[v]} for v in values],
    }


@http_errors()  # every error of the request: its HTTP answer
def save_segmentation(
    image: str,
    params: str = Form("{}"),
    label: UploadFile = File(...),
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),
) -> dict[str, Any]:
    parsed = parse_request_params(params)
    instance = app_instance()
    datastore = instance.datastore()
    if not isinstance(datastore, Sam2MedDICOMWebDatastore):
        raise HTTPException(status_code=400, detail="Save stores a DICOM-SEG on the DICOMweb server: this server has local files")
    services = getattr(instance, "services", None)
    engine = getattr(services, "engine", None)
    folder = tempfile.mkdtemp(prefix="sam2med_save_")
    try:
        check_image_id(image)
        request = SaveRequest.parse(parsed, engine.current_version() if engine is not None else None)
        path = os.path.join(folder, "labelmap" + upload_suffix(label.filename))
        with open(path, "wb") as out:
            shutil.copyfileobj(label.file, out)
        return save_labelmap(datastore, image, path, request)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def save_routes() -> list[tuple[str, str, Any, str]]:
    return [("POST", "/sam2med/save", save_segmentation, "Save the OHIF segmentation as shown (DICOM-SEG or RTSTRUCT on the DICOMweb server)")]
