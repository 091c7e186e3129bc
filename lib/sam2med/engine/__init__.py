"""The propagation engine: SAM2.1 tracking of seed masks or clicks through a range of slices."""

from sam2med.engine.propagator import PropagationResult, Propagator

__all__ = ["PropagationResult", "Propagator"]
