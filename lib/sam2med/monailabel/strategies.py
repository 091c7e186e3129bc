"""Active-learning strategies: MONAI Label's `random` and `first`, and `ordered` and `uncertain` (ours)."""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Dict

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from sam2med.monailabel.rescoring import SCORES_KEY, Rescorer

logger = logging.getLogger(__name__)

REVIEWED_KEY = "sam2med_reviewed"  # image info: set when a `final` label is submitted, cleared when it is deleted
RESCORE_SECONDS = 60.0  # how long one `uncertain` request may spend re-scoring images scored by an older model


def natural_key(name: str) -> list[Any]:
    """Sort key that orders numbers by value: case2 < case10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class Ordered(Strategy):
    """The unlabeled image that follows, in natural name order, the image labeled most recently (wrapping around).

    Deterministic and explainable: annotators walk through a study list in its own order, and a
    skipped image comes back after the end of the list. The answer says why the image was picked.
    """

    def __init__(self) -> None:
        super().__init__("Next unlabeled image in name order, after the one labeled last")

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any] | None:
        tag = request.get("label_tag") or DefaultLabelTag.FINAL.value
        unlabeled = sorted(datastore.get_unlabeled_images(tag, request.get("labels")), key=natural_key)
        if not unlabeled:
            return None
        last, last_ts = None, -1
        for image_id in datastore.get_labeled_images(tag, request.get("labels")):
            label_id = datastore.get_label_by_image_id(image_id, tag)
            ts = int(datastore.get_label_info(label_id, tag).get("ts", 0) or 0) if label_id else 0
            if ts > last_ts or (ts == last_ts and last is not None and natural_key(image_id) > natural_key(last)):
                last, last_ts = image_id, ts
        if last is None:
            chosen, reason = unlabeled[0], "no image is labeled yet: first unlabeled image in name order"
        else:
            after = [i for i in unlabeled if natural_key(i) > natural_key(last)]
            chosen = after[0] if after else unlabeled[0]
            reason = (f"next unlabeled image after {last!r} (labeled last)" if after
                      else f"no unlabeled image after {last!r} (labeled last): wrapped to the first")
        logger.info("ordered: %s -> %s", reason, chosen)
        return {"id": chosen, "reason": reason}


class Uncertain(Strategy):
    """The unreviewed image whose propagation by the current model SAM2 was least sure of (sam2med.monailabel.uncertainty).

    Images with a submitted `final` label are skipped. Only scores of the model the server uses now are
    ranked: an image scored by an older model is re-scored first (the current model on its recorded
    prompts, `rescoring.Rescorer`), for at most `budget_seconds` per request; images left stale are not
    ranked and the answer says how many. When no unreviewed image has current scores, the answer is
    `ordered`'s. The answer carries `reason`, `uncertainty`, `model_version` and `review_slices`.
    """

    def __init__(self, rescorer: Rescorer | None = None, budget_seconds: float | None = RESCORE_SECONDS) -> None:
        super().__init__("Unreviewed image whose SAM2 propagation with the current model was least confident (else: ordered)")
        self.rescorer = rescorer
        self.budget_seconds = budget_seconds

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any] | None:
        tag = request.get("label_tag") or DefaultLabelTag.FINAL.value
        candidates = sorted(datastore.get_unlabeled_images(tag, request.get("labels")), key=natural_key)
        current = self.rescorer.current_version() if self.rescorer is not None else None

        def record_of(image_id: str) -> dict:
            record = datastore.get_image_info(image_id).get(SCORES_KEY)
            return record if isinstance(record, dict) else {}

        def is_stale(image_id: str) -> bool:
            record = record_of(image_id)
            return bool(record) and current is not None and record.get("model_version") != current

        stale: list[str] = []
        if self.rescorer is not None:
            _, stale = self.rescorer.rescore_stale(candidates, datastore, self.budget_seconds, is_stale)
        scored = []
        for image_id in candidates:
            record = record_of(image_id)
            uncertainty = record.get("uncertainty")
            if isinstance(uncertainty, (int, float)) and not is_stale(image_id):
                scored.append((float(uncertainty), image_id, record))
        note = (f"; {len(stale)} image(s) scored by an older model could not be re-scored yet, not ranked"
                if stale else "")
        if not scored:
            answer = Ordered()(request, datastore)
            if answer:
                answer.update(reason=f"no unreviewed image has SAM2 scores of the current model yet{note}; "
                                     f"ordered: {answer['reason']}", uncertainty=None, review_slices=[])
            return answer
        scored.sort(key=lambda item: (-item[0], natural_key(item[1])))
        uncertainty, chosen, record = scored[0]
        reason = (f"least confident of {len(scored)} scored unreviewed image(s): uncertainty {uncertainty:.4f} "
                  f"(model {record.get('model_version') or '?'}){note}")
        logger.info("uncertain: %s -> %s", reason, chosen)
        return {"id": chosen, "reason": reason, "uncertainty": uncertainty, "model_version": record.get("model_version"),
                "review_slices": record.get("review_slices", [])}


STRATEGIES: Dict[str, Callable[[Rescorer | None], Strategy]] = {  # (the app's rescorer)
    "random": lambda _: Random(), "first": lambda _: First(), "ordered": lambda _: Ordered(), "uncertain": Uncertain}
