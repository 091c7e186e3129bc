"""`sam2_confidence`: MONAI Label scoring that runs the current model on each image's recorded prompts."""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from sam2med.errors import InputError
from sam2med.monailabel.lifetime import die_with_server
from sam2med.monailabel.rescoring import SCORES_KEY, Rescorer

logger = logging.getLogger(__name__)

MAX_SECONDS = 600.0  # default time budget of one scoring run; images left are re-scored by the next one


class Sam2Confidence(ScoringMethod):
    """Re-scores every image whose recorded scores are not the current model's (or that has none but has prompts),
    writing the new scores where `uncertain` ranks them; answers {image: {"uncertainty", "model_version"}}."""

    def __init__(self, rescorer: Rescorer | None = None) -> None:
        super().__init__("SAM2's uncertainty on each image's recorded prompts, with the current model "
                         "(object score x predicted IoU, flips, area jumps)")
        self.rescorer = rescorer

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        die_with_server()
        budget = request.get("max_seconds", MAX_SECONDS)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
            raise InputError(f"sam2_confidence: max_seconds must be a positive number, got {str(budget)[:40]!r}")
        current = self.rescorer.current_version() if self.rescorer is not None else None

        def is_stale(image_id: str) -> bool:
            record = datastore.get_image_info(image_id).get(SCORES_KEY) or {}
            return not record or current is None or record.get("model_version") != current

        images = list(datastore.list_images())
        left: list[str] = []
        if self.rescorer is not None:
            _, left = self.rescorer.rescore_stale(images, datastore, float(budget), is_stale)
        result: Dict[str, Any] = {}
        for image_id in images:
            record = datastore.get_image_info(image_id).get(SCORES_KEY)
            if isinstance(record, dict) and image_id not in left:
                result[image_id] = {"uncertainty": record.get("uncertainty"), "model_version": record.get("model_version")}
        logger.info("sam2_confidence: %d image(s) with current scores, %d left stale", len(result), len(left))
        return result


SCORING_METHODS: Dict[str, Callable[[Rescorer | None], ScoringMethod]] = {"sam2_confidence": Sam2Confidence}
