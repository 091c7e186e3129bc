"""SAM2's own uncertainty about a propagation, from the per-slice scores the engine reports.

Per label, over its propagated slices s (seed slices are given, not predicted, and are never candidates):

    confidence  c_s = object_score_s * iou_s          (iou_s missing: c_s = object_score_s)
    flip_s      = 1 when "object present" (object_score > 0.5) differs from the previous slice's
    jump_s      = 1 when the area changes by more than half of the larger of the two areas
    review priority  r_s = (1 - c_s) + 0.5 * flip_s + 0.5 * jump_s
    label uncertainty  U_L = mean_s (1 - c_s) + 0.5 * (flips + jumps) / n

"Previous" is the neighbouring slice in slice order (seeds included as neighbours). An image's
uncertainty is max_L U_L: its least certain object decides whether it is worth a look. The review
slices are the propagated slices with the highest r_s, each with why it was picked.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

PRESENT = 0.5  # object score above which SAM2 says the object is on the slice
AREA_JUMP = 0.5  # relative area change that counts as a jump
FLIP_WEIGHT = 0.5
JUMP_WEIGHT = 0.5
REVIEW_COUNT = 5

SliceScores = Mapping[str, Iterable[Mapping[str, Any]]]  # {label: [{"slice", "object_score", "iou", "area", "seed"}]}


def slice_confidence(score: Mapping[str, Any]) -> float:
    """object score x predicted IoU (the object score alone where no IoU was predicted)."""
    iou = score.get("iou")
    return float(score["object_score"]) * (1.0 if iou is None else float(iou))


def _flags(scores: list[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], bool, bool]]:
    """(score, flip, jump) of each propagated slice, neighbours taken in slice order."""
    ordered = sorted(scores, key=lambda s: int(s["slice"]))
    flagged = []
    for i, score in enumerate(ordered):
        if score.get("seed"):
            continue
        flip = jump = False
        if i > 0:
            previous = ordered[i - 1]
            flip = (float(score["object_score"]) > PRESENT) != (float(previous["object_score"]) > PRESENT)
            larger = max(int(score["area"]), int(previous["area"]))
            jump = larger > 0 and abs(int(score["area"]) - int(previous["area"])) > AREA_JUMP * larger
        flagged.append((score, flip, jump))
    return flagged


def label_uncertainty(scores: Iterable[Mapping[str, Any]]) -> float | None:
    """U_L of one label; None when it has no propagated slice."""
    flagged = _flags(list(scores))
    if not flagged:
        return None
    doubt = sum(1.0 - slice_confidence(s) for s, _, _ in flagged) / len(flagged)
    unstable = (FLIP_WEIGHT * sum(f for _, f, _ in flagged) + JUMP_WEIGHT * sum(j for _, _, j in flagged)) / len(flagged)
    return round(doubt + unstable, 4)


def image_uncertainty(labels: SliceScores) -> float | None:
    """max over labels of U_L; None when no label has a propagated slice."""
    values = [u for u in (label_uncertainty(scores) for scores in labels.values()) if u is not None]
    return max(values) if values else None


def review_slices(labels: SliceScores, count: int = REVIEW_COUNT) -> list[dict[str, Any]]:
    """The `count` propagated slices most worth a look, highest review priority first."""
    candidates = []
    for label, scores in labels.items():
        for score, flip, jump in _flags(list(scores)):
            confidence = slice_confidence(score)
            priority = (1.0 - confidence) + FLIP_WEIGHT * flip + JUMP_WEIGHT * jump
            why = ["low confidence"] if confidence < PRESENT else []
            why += ["object score flip"] if flip else []
            why += ["area jump"] if jump else []
            candidates.append({"slice": int(score["slice"]), "label": int(label), "confidence": round(confidence, 4),
                               "priority": round(priority, 4), "why": why})
    candidates.sort(key=lambda c: (-c["priority"], c["slice"], c["label"]))
    return candidates[:count]


def score_record(labels: SliceScores, model_version: str, axis: str, ts: int) -> dict[str, Any]:
    """What is kept per datastore image after a propagation: the scores, their model version and what follows from them."""
    kept = {str(label): [{k: s.get(k) for k in ("slice", "object_score", "iou", "area", "seed")} for s in scores]
            for label, scores in labels.items()}
    return {"model_version": model_version, "ts": ts, "axis": axis, "labels": kept,
            "uncertainty": image_uncertainty(kept), "review_slices": review_slices(kept)}
