"""Propagators under evaluation: `sam2` (the engine) and the weight-free references `copy` and `registration`."""

from __future__ import annotations

from sam2med.errors import PromptError
from sam2med.evaluation.propagators.base import SlicePropagator
from sam2med.evaluation.propagators.copy import CopyPropagator
from sam2med.evaluation.propagators.registration import RegistrationPropagator

NAMES = ("sam2", "registration", "copy")


def make_propagator(name: str, window: str | None = "auto", **sam2_kwargs) -> SlicePropagator:
    """Build propagator `name`; `sam2_kwargs` (model, checkpoint, device, image_size) go to the engine."""
    if name == "copy":
        return CopyPropagator()
    if name == "registration":
        return RegistrationPropagator(window=window)
    if name == "sam2":
        from sam2med.evaluation.propagators.sam2 import Sam2Propagator

        return Sam2Propagator(window=window, **sam2_kwargs)
    raise PromptError(f"unknown propagator {name!r}: use {', '.join(NAMES)}")


__all__ = ["NAMES", "CopyPropagator", "RegistrationPropagator", "SlicePropagator", "make_propagator"]
