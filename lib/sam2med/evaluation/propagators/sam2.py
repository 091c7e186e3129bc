"""`sam2`: the engine itself, through `sam2med.engine.Propagator`, one target at a time."""

from __future__ import annotations

import numpy as np

from sam2med.engine.policies import AutoRange, SelectiveMemory
from sam2med.io import Volume
from sam2med.prompts import ClickSeeds, SeedMasks, SliceRange


class Sam2Propagator:
    """Adapter over the engine; its feature cache makes later targets of the same case track only."""

    name = "sam2"

    def __init__(self, propagator=None, window: str | None = "auto", auto: AutoRange | None = None,
                 memory: SelectiveMemory | str | None = None, **propagator_kwargs):
        if propagator is None:
            from sam2med.engine import Propagator

            propagator = Propagator(**propagator_kwargs)
        self.engine = propagator
        self.window = window
        self.auto, self.memory = auto, memory
        self.tracked_range: SliceRange | None = None  # the last target's tracked slices (with auto: where it stopped)

    def propagate(self, volume: Volume, seeds: SeedMasks | ClickSeeds, slice_range: SliceRange) -> np.ndarray:
        result = self.engine.propagate(volume, seeds, slice_range, window=self.window, auto=self.auto, memory=self.memory)
        self.tracked_range = result.slice_range
        return result.label == seeds.labels[0]
