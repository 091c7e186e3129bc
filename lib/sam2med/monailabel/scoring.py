"""`sam2_confidence`: MONAI Label scoring from the per-slice scores SAM2 reported on each datastore image."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from sam2med.monailabel.strategies import SCORES_KEY
from sam2med.uncertainty import image_uncertainty

logger = logging.getLogger(__name__)

CONFIDENCE_KEY = "sam2_confidence"  # image info written by the scoring: {"uncertainty", "model_version"}


class Sam2Confidence(ScoringMethod):
    """Writes each scored image's uncertainty (sam2med.uncertainty) into its info, where /datastore/ lists it."""

    def __init__(self) -> None:
        super().__init__("Uncertainty of SAM2's last propagation on each image: object score x predicted IoU, flips, area jumps")

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        result: Dict[str, Any] = {}
        for image_id in datastore.list_images():
            info = datastore.get_image_info(image_id)
            record = info.get(SCORES_KEY)
            if not record:
                continue
            value = {"uncertainty": image_uncertainty(record.get("labels", {})), "model_version": record.get("model_version")}
            result[image_id] = value
            if info.get(CONFIDENCE_KEY) != value:  # write only changes: the server writes scores into the same file
                datastore.update_image_info(image_id, {CONFIDENCE_KEY: value})
        logger.info("sam2_confidence: %d scored image(s)", len(result))
        return result


SCORING_METHODS: Dict[str, Callable[[], ScoringMethod]] = {"sam2_confidence": Sam2Confidence}
