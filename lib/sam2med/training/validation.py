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
