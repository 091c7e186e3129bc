"""`GuardedLocalDatastore`: MONAI Label's local datastore with ids and tags that cannot leave its folder, and no NaN."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from sam2med.labelnames import parse_label_info
from sam2med.monailabel.http import call
from sam2med.monailabel.params import parse_seed_tag
from sam2med.monailabel.rescoring import without_non_finite
from sam2med.monailabel.results import raw_label_to_nifti
from sam2med.monailabel.safety import check_image_id
from sam2med.monailabel.strategies import REVIEWED_KEY

logger = logging.getLogger(__name__)


class GuardedLocalDatastore(LocalDatastore):
    """Rejects image ids and label tags that are paths (HTTP 4xx) and stores OHIF's raw `.bin` labels as NIfTI."""

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        call(check_image_id, image_id)
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        call(parse_seed_tag, label_tag)
        if not self.get_image_uri(image_id):
            raise HTTPException(status_code=404, detail=f"image {image_id!r} is not in the datastore")
        if isinstance(label_info, dict):  # 3D Slicer names its segments' values; the infer and train tasks read them back
            call(parse_label_info, label_info.get("label_info"))
        if label_tag == DefaultLabelTag.FINAL.value:  # a submitted label: the image has been reviewed
            self.update_image_info(image_id, {REVIEWED_KEY: {"ts": int(time.time())}})
        if label_filename.lower().endswith(".bin"):
            converted = call(raw_label_to_nifti, label_filename, self.get_image_uri(image_id))
            try:
                return super().save_label(image_id, converted, label_tag, label_info)
            finally:
                os.unlink(converted)
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_image(self, image_id: str) -> None:
        if not self.get_image_uri(image_id):
            raise HTTPException(status_code=404, detail=f"image {image_id[:255]!r} is not in the datastore")
        super().remove_image(image_id)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        call(parse_seed_tag, label_tag)
        if not self.get_label_uri(label_id, label_tag):
            raise HTTPException(status_code=404, detail=f"image {label_id[:255]!r} has no label tagged {label_tag!r}")
        obj = self._datastore.objects.get(label_id)
        if label_tag == DefaultLabelTag.FINAL.value and obj is not None and REVIEWED_KEY in obj.image.info:
            obj.image.info.pop(REVIEWED_KEY)  # no submitted label any more: not reviewed
            self._update_datastore_file()
        super().remove_label(label_id, label_tag)

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        super().update_image_info(image_id, without_non_finite(info))  # NaN / inf never reach the JSON file

    def _init_from_datastore_file(self, throw_exception=False):
        super()._init_from_datastore_file(throw_exception)
        for obj in getattr(getattr(self, "_datastore", None), "objects", {}).values():  # NaN / inf already in the file: missing
            obj.image.info = without_non_finite(obj.image.info)
            for label in obj.labels.values():
                label.info = without_non_finite(label.info)
