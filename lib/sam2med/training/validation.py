"""Held-out validation through the real inference path: `Propagator`, largest-slice seed, truth range."""

from __future__ import annotations

import logging

import numpy as np

from sam2med.evaluation.pairing import Case
from sam2med.evaluation.propagators import CopyPropagator
from sam2med.evaluation.propagators.sam2 import Sam2Propagator
from sam2med.evaluation.runner import EvaluationConfig, evaluate_case
from sam2med.geometry import Axis

logger = logging.getLogger(__name__)


def mean_dice(cases: list[Case], method, labels: list[int] | None, axis: Axis) -> float | None:
    """Mean Dice over the targets of `cases` (each present on 2+ slices) propagated by `method`; None when none ran."""
    config = EvaluationConfig(labels=labels, axis=axis, min_slices=2)
    dice = [t.metrics.dice for case in cases for t in evaluate_case(case, method, config).targets if t.ok]
    return round(float(np.mean(dice)), 4) if dice else None


def validate(propagator, state_dict: dict, cases: list[Case], labels: list[int] | None, axis: Axis,
             window: str | None = "auto") -> float | None:
    """Mean held-out Dice of the weights `state_dict`, loaded strictly into `propagator`'s tracker."""
    propagator.tracker.load_state_dict(state_dict, strict=True)
    propagator.cache.clear()  # cached features came from the previous weights (the decoder's projections are in them)
    return mean_dice(cases, Sam2Propagator(propagator, window=window), labels, axis)


def copy_dice(cases: list[Case], labels: list[int] | None, axis: Axis) -> float | None:
    """The copy-the-seed reference on the same targets and prompts."""
    return mean_dice(cases, CopyPropagator(), labels, axis)


def smoke_inference(checkpoint, model: str, image_size: int, device: str, volume, truth_xyz: np.ndarray, label: int,
                    axis: Axis = Axis.AXIAL, half_width: int = 2) -> str | None:
    """Load `checkpoint` as the server will and propagate `label` of `truth_xyz` from its middle slice over a few
    slices; the reason it is unusable (does not load, non-finite scores), or None when it works."""
    import math

    from sam2med.engine import Propagator
    from sam2med.geometry import to_slices
    from sam2med.prompts import SeedMasks, SliceRange

    truth = to_slices(truth_xyz, axis) == label
    present = np.flatnonzero(truth.any(axis=(1, 2)))
    if present.size == 0:
        return f"smoke inference: label {label} is on no slice"
    seed = int(present[len(present) // 2])
    slice_range = SliceRange(max(0, seed - half_width), min(len(truth) - 1, seed + half_width))
    try:
        propagator = Propagator(model=model, checkpoint=checkpoint, device=device, image_size=image_size, download=False)
        result = propagator.propagate(volume, SeedMasks(axis, {label: {seed: truth[seed]}}), slice_range)
    except Exception as err:  # any failure to load or run means: not servable
        return f"smoke inference failed: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    values = [v for scores in result.scores.values() for s in scores for v in (s.object_score, s.iou) if v is not None]
    if not all(math.isfinite(float(v)) for v in values):
        return "smoke inference gave non-finite scores"
    logger.info("smoke inference on slices %s: %d finite scores", slice_range, len(values))
    return None
