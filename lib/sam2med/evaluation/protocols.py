"""Prompt protocols of the published medical-SAM2 studies: which slices are seeded, how, and over what range.

- `largest-slice`: the truth mask on the slice where the target's area is largest (ties: the lowest slice);
- `center-slice`: the truth mask on the middle slice of the target's extent (the nearest slice holding it
  when the target is absent there);
- `multi-slice:N`: the truth masks on N evenly spaced slices, the centres of N equal parts of the extent;
- `clicks:N`: N positive clicks drawn uniformly at random (seeded) inside the target on the largest slice,
  plus the target's bounding box on that slice, instead of a mask.

Ranges: `truth` (first..last slice holding the target), `full` (the whole volume), `margin:K` (the
truth's extent widened by K slices each way, clipped to the volume).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam2med.errors import PromptError
from sam2med.geometry import Axis, to_slices
from sam2med.prompts import ClickPrompt, ClickSeeds, SeedMasks, SliceRange

PROTOCOL_KINDS = ("largest-slice", "center-slice", "multi-slice", "clicks")


@dataclass(frozen=True)
class Protocol:
    """How a target is prompted: `kind` and its count (slices for multi-slice, clicks for clicks)."""

    kind: str
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Protocol":
        name, _, number = str(text).strip().lower().partition(":")
        if name not in PROTOCOL_KINDS:
            raise PromptError(f"unknown protocol {text!r}: use largest-slice, center-slice, multi-slice:N or clicks:N")
        if name in ("largest-slice", "center-slice"):
            if number:
                raise PromptError(f"protocol {name} takes no count, got {text!r}")
            return cls(name, 1)
        try:
            count = int(number) if number else (3 if name == "multi-slice" else 1)
        except ValueError:
            raise PromptError(f"protocol {text!r}: the count after ':' must be an integer") from None
        if count < 1:
            raise PromptError(f"protocol {text!r}: the count must be at least 1")
        return cls(name, count)

    def __str__(self) -> str:
        return self.kind if self.kind in ("largest-slice", "center-slice") else f"{self.kind}:{self.count}"


@dataclass(frozen=True)
class RangeSpec:
    """Which slice range the propagator is given: the truth's extent, the full volume, or the extent +- margin;
    auto: the full volume, inside which sam2 stops each target where it loses it (`AutoRange`)."""

    kind: str
    margin: int = 0

    @classmethod
    def parse(cls, text: str) -> "RangeSpec":
        name, _, number = str(text).strip().lower().partition(":")
        if name in ("truth", "full", "auto") and not number:
            return cls(name)
        if name == "margin":
            try:
                margin = int(number)
            except ValueError:
                raise PromptError(f"range {text!r}: use margin:K with K a whole number of slices") from None
            if margin < 0:
                raise PromptError(f"range {text!r}: the margin must not be negative")
            return cls(name, margin)
        raise PromptError(f"unknown range {text!r}: use truth, full, margin:K or auto")

    def resolve(self, extent: SliceRange, num_slices: int) -> SliceRange:
        if self.kind in ("full", "auto"):
            return SliceRange(0, num_slices - 1)
        return SliceRange(max(extent.start - self.margin, 0), min(extent.end + self.margin, num_slices - 1))

    def __str__(self) -> str:
        return f"margin:{self.margin}" if self.kind == "margin" else self.kind


@dataclass
class TargetPrompt:
    """The prompt given for one target, with the truth's extent along the axis."""

    seeds: SeedMasks | ClickSeeds
    seed_slices: list[int]
    extent: SliceRange
    slices_with_target: int


def _nearest_present(index: int, present: np.ndarray) -> int:
    """The slice of `present` nearest to `index` (ties: the lower one)."""
    return int(present[np.argmin(np.abs(present - index))])


def _seed_slices(areas: np.ndarray, present: np.ndarray, protocol: Protocol) -> list[int]:
    start, end = int(present[0]), int(present[-1])
    if protocol.kind in ("largest-slice", "clicks"):
        return [int(np.argmax(areas))]
    if protocol.kind == "center-slice":
        return [_nearest_present((start + end) // 2, present)]
    positions = [start + (end - start) * (2 * i + 1) / (2 * protocol.count) for i in range(protocol.count)]
    return sorted({_nearest_present(int(round(p)), present) for p in positions})


def _clicks(mask_hw: np.ndarray, count: int, rng: np.random.Generator) -> tuple[tuple[tuple[float, float], ...], tuple[float, float, float, float]]:
    rows, cols = np.nonzero(mask_hw)
    picks = rng.choice(len(rows), size=min(count, len(rows)), replace=False)
    points = tuple((float(rows[i]), float(cols[i])) for i in sorted(picks))
    box = (float(rows.min()), float(cols.min()), float(rows.max() + 1), float(cols.max() + 1))
    return points, box


def make_prompt(truth_xyz: np.ndarray, label: int, axis: Axis, protocol: Protocol, rng: np.random.Generator) -> TargetPrompt:
    """Seed masks or clicks for target `label` (its voxels in `truth_xyz`, a boolean volume) by `protocol`."""
    slices = to_slices(truth_xyz, axis)
    areas = slices.sum(axis=(1, 2))
    present = np.flatnonzero(areas)
    if present.size == 0:
        raise PromptError(f"label {label} is absent from this case")
    extent = SliceRange(int(present[0]), int(present[-1]))
    chosen = _seed_slices(areas, present, protocol)
    if protocol.kind == "clicks":
        points, box = _clicks(slices[chosen[0]], protocol.count, rng)
        prompt = ClickPrompt(chosen[0], points, tuple(1 for _ in points), box)
        seeds: SeedMasks | ClickSeeds = ClickSeeds(axis=axis, prompts={label: [prompt]})
    else:
        seeds = SeedMasks(axis=axis, masks={label: {s: np.ascontiguousarray(slices[s]) for s in chosen}})
    return TargetPrompt(seeds=seeds, seed_slices=chosen, extent=extent, slices_with_target=int(present.size))
