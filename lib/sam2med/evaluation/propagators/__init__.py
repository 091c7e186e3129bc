"""Propagators under evaluation: `sam2` (the engine) and the weight-free references `copy` and `registration`."""

from __future__ import annotations

from sam2med.errors import InputError, PromptError
from sam2med.evaluation.propagators.base import SlicePropagator
from sam2med.evaluation.propagators.copy import CopyPropagator

NAMES = ("sam2", "registration", "copy")


def make_propagator(name: str, window: str | None = "auto", **sam2_kwargs) -> SlicePropagator:
    """Build propagator `name`; `sam2_kwargs` (model, checkpoint, device, image_size) go to the engine."""
    if name == "copy":
        return CopyPropagator()
    if name == "registration":
        try:
            from sam2med.evaluation.propagators.registration import RegistrationPropagator
        except ModuleNotFoundError as err:  # SimpleITK: not in the engine profile (scripts/bundle.sh)
            raise InputError(f"the registration propagator needs {err.name}, which this install (sam2med's engine "
                             f"profile) leaves out: pip install SimpleITK==2.4.1, or install the server profile") from None
        return RegistrationPropagator(window=window)
    if name == "sam2":
        from sam2med.evaluation.propagators.sam2 import Sam2Propagator

        return Sam2Propagator(window=window, **sam2_kwargs)
    raise PromptError(f"unknown propagator {name!r}: use {', '.join(NAMES)}")


def __getattr__(name: str):
    # imported on first use: it needs SimpleITK, which the engine profile (scripts/bundle.sh) leaves out
    if name == "RegistrationPropagator":
        from sam2med.evaluation.propagators.registration import RegistrationPropagator

        return RegistrationPropagator
    raise AttributeError(name)


__all__ = ["NAMES", "CopyPropagator", "RegistrationPropagator", "SlicePropagator", "make_propagator"]
