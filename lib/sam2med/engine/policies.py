"""Tracking policies from the medical SAM2 papers: where a label stops, and which frames it remembers.

- `AutoRange`: each label stops, per direction, after K consecutive slices where it is absent (SAM2's
  object score below a threshold, or nothing of it written), so that the user needs no slice range.
- `SelectiveMemory`: the memory frames that condition each new slice are chosen by confidence and by
  dissimilarity to the frames already chosen, not by recency: the self-sorting memory bank of MedSAM-2
  (Zhu et al. 2024, "Medical SAM 2: Segment medical images as video via Segment Anything Model 2",
  arXiv:2408.00874). The exact rule is `select_memory`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from sam2med.errors import PromptError

FORWARD, BACKWARD = "forward", "backward"  # increasing / decreasing slice index
# Why a label stopped in a direction.
OBJECT_ABSENT, VOLUME_END, RANGE_END, BOUND_REACHED = "object_absent", "volume_end", "range_end", "bound_reached"
MEMORY_POLICIES = ("recent", "selective")


@dataclass(frozen=True)
class AutoRange:
    """Stop a label in a direction after `absent_slices` consecutive slices without it.

    A slice counts as absent when SAM2's object score (sigmoid of its object logit) is below
    `min_object_score` or when nothing of the label is written on it. Counting starts beyond the label's
    outermost seed in that direction (backward: below the first seed slice of all labels too, since sam2
    tracks every label forward from there). `max_slices` bounds how many slices are tracked per direction
    beyond that seed. The absent slices that end a label are not written.
    """

    absent_slices: int = 3
    min_object_score: float = 0.5
    max_slices: int | None = None

    def __post_init__(self) -> None:
        if int(self.absent_slices) < 1:
            raise PromptError(f"auto range: the number of absent slices that stops a label must be at least 1, got {self.absent_slices}")
        if not 0.0 <= float(self.min_object_score) <= 1.0:
            raise PromptError(f"auto range: the object score threshold must lie in 0..1, got {self.min_object_score}")
        if self.max_slices is not None and int(self.max_slices) < 1:
            raise PromptError(f"auto range: the slice bound must be at least 1, got {self.max_slices}")

    def to_json(self) -> dict:
        return {"absent_slices": self.absent_slices, "min_object_score": self.min_object_score, "max_slices": self.max_slices}


@dataclass
class DirectionStop:
    """Where one label's tracking in one direction ended, and why."""

    reason: str = ""
    stopped_at: int | None = None  # the last slice tracked in this direction
    last_present: int | None = None  # the last slice kept (written) in this direction
    absent_run: int = 0

    def to_json(self) -> dict:
        return {"reason": self.reason, "stopped_at": self.stopped_at, "last_present": self.last_present}


@dataclass
class LabelStops:
    """The auto-range state of one label: its seed span, its range bounds and both directions."""

    seed_low: int
    seed_high: int
    low: int  # the first slice this label may be tracked on (its range, the bound)
    high: int
    low_reason: str
    high_reason: str
    rule: AutoRange
    directions: dict[str, DirectionStop] = field(default_factory=lambda: {FORWARD: DirectionStop(), BACKWARD: DirectionStop()})

    @classmethod
    def start(cls, seed_slices: Sequence[int], low: int, high: int, num_slices: int, rule: AutoRange) -> "LabelStops":
        seed_low, seed_high = max(min(seed_slices), low), max(seed_slices)  # seed_slices may hold another label's first seed
        low_reason = VOLUME_END if low == 0 else RANGE_END
        high_reason = VOLUME_END if high == num_slices - 1 else RANGE_END
        if rule.max_slices is not None:
            if seed_low - rule.max_slices > low:
                low, low_reason = seed_low - rule.max_slices, BOUND_REACHED
            if seed_high + rule.max_slices < high:
                high, high_reason = seed_high + rule.max_slices, BOUND_REACHED
        stops = cls(seed_low, seed_high, low, high, low_reason, high_reason, rule)
        stops.directions[FORWARD].last_present = seed_high
        stops.directions[BACKWARD].last_present = seed_low
        return stops

    def direction_of(self, slice_index: int) -> str | None:
        """The direction in which `slice_index` lies beyond this label's seeds; None inside the seed span."""
        if slice_index > self.seed_high:
            return FORWARD
        if slice_index < self.seed_low:
            return BACKWARD
        return None

    def active(self, slice_index: int) -> bool:
        """Whether this label is still tracked on `slice_index`."""
        if not self.low <= slice_index <= self.high:
            return False
        direction = self.direction_of(slice_index)
        return direction is None or not self.directions[direction].reason

    def record(self, slice_index: int, object_score: float, area: int) -> None:
        """Count `slice_index` (just tracked) as present or absent; stop its direction after K absent ones or at its end."""
        direction = self.direction_of(slice_index)
        if direction is None:
            return
        stop = self.directions[direction]
        stop.stopped_at = slice_index
        if object_score < self.rule.min_object_score or area == 0:
            stop.absent_run += 1
            if stop.absent_run >= self.rule.absent_slices:
                stop.reason = OBJECT_ABSENT
                return
        else:
            stop.absent_run = 0
            stop.last_present = slice_index
        end, reason = (self.high, self.high_reason) if direction == FORWARD else (self.low, self.low_reason)
        if slice_index == end:
            stop.reason = reason

    def close(self) -> None:
        """Directions that had no slice to track (the seed on the volume's or range's end) end there."""
        for direction, end, reason in ((FORWARD, self.high, self.high_reason), (BACKWARD, self.low, self.low_reason)):
            stop = self.directions[direction]
            if not stop.reason:
                stop.reason = reason
                if stop.stopped_at is None:
                    stop.stopped_at = self.seed_high if direction == FORWARD else self.seed_low

    @property
    def kept(self) -> tuple[int, int]:
        """The slices written for this label: from the last present slice backward to the last present one forward."""
        return int(self.directions[BACKWARD].last_present), int(self.directions[FORWARD].last_present)

    @property
    def tracked(self) -> tuple[int, int]:
        back, fwd = self.directions[BACKWARD].stopped_at, self.directions[FORWARD].stopped_at
        return int(self.seed_low if back is None else back), int(self.seed_high if fwd is None else fwd)

    def to_json(self) -> dict:
        return {direction: stop.to_json() for direction, stop in self.directions.items()}


@dataclass(frozen=True)
class SelectiveMemory:
    """MedSAM-2's self-sorting memory, as `select_memory` applies it after every tracked slice.

    A tracked slice can enter the memory bank only if its object score is at least `min_object_score`
    and its predicted IoU at least `min_iou`. `dissimilarity` weighs the penalty for looking like a frame
    already chosen (0: confidence alone).
    """

    min_object_score: float = 0.5
    min_iou: float = 0.0
    dissimilarity: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_object_score", "min_iou"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise PromptError(f"selective memory: {name} must lie in 0..1, got {getattr(self, name)}")
        if float(self.dissimilarity) < 0:
            raise PromptError(f"selective memory: the dissimilarity weight must not be negative, got {self.dissimilarity}")

    def to_json(self) -> dict:
        return {"policy": "selective", "min_object_score": self.min_object_score, "min_iou": self.min_iou,
                "dissimilarity": self.dissimilarity}


def parse_memory(value: "str | SelectiveMemory | None") -> SelectiveMemory | None:
    """'recent' (SAM2's own: the last frames) -> None; 'selective' -> the default `SelectiveMemory`."""
    if value is None or isinstance(value, SelectiveMemory):
        return value
    text = str(value).strip().lower()
    if text in ("", "recent"):
        return None
    if text == "selective":
        return SelectiveMemory()
    raise PromptError(f"memory must be one of {', '.join(MEMORY_POLICIES)}, got {value!r}")


@dataclass
class MemoryCandidate:
    """A tracked frame that may condition later frames: its confidence and a descriptor of its memory features."""

    frame: int
    order: int  # when it was tracked (ties go to the later one)
    confidence: float  # predicted IoU x object score
    descriptor: torch.Tensor  # unit vector
    output: dict  # sam2's per-frame output (memory features, object pointer)


def memory_descriptor(output: dict) -> torch.Tensor:
    """A frame's memory features, pooled to 8x8 and flattened to a unit vector (for cosine similarity)."""
    features = output["maskmem_features"].float()
    pooled = F.adaptive_avg_pool2d(features, (8, 8)).flatten()
    return pooled / pooled.norm().clamp_min(1e-12)


def select_memory(candidates: Sequence[MemoryCandidate], size: int, dissimilarity: float) -> list[MemoryCandidate]:
    """Greedy choice of up to `size` frames: each pick maximises confidence - dissimilarity x (largest cosine
    similarity to the frames already picked); the first pick is the most confident frame. Ties go to the
    frame tracked later. Returned in pick order."""
    chosen: list[MemoryCandidate] = []
    remaining = list(candidates)
    while remaining and len(chosen) < size:
        def value(c: MemoryCandidate) -> tuple[float, int]:
            penalty = max((float(c.descriptor @ p.descriptor) for p in chosen), default=0.0)
            return c.confidence - dissimilarity * penalty, c.order

        best = max(remaining, key=value)
        chosen.append(best)
        remaining.remove(best)
    return chosen
