"""Training clips drawn as the product is used: K consecutive slices inside one object's extent.

A clip starts on a slice that holds the object (the frame the user prompts), runs K slices in a random
direction (the engine tracks both ways from the seed) and stays inside the object's extent (its first..last
slice). The prompt on the first frame is the truth mask, or for the click task its box or clicks drawn
from the truth, in model-input pixel coordinates (x, y) as sam2 takes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sam2med.geometry import Axis, to_slices
from sam2med.io import Volume
from sam2med.windowing import PREPROCESSING, Preprocessing, Window, guess_modality

PROMPT_KINDS = ("mask", "box", "clicks")


@dataclass
class TrainingVolume:
    """One (image, label map) pair as slices: windowed image in [0, 1] and labels, both (N, H, W)."""

    name: str
    slices: np.ndarray  # (N, H, W) float32 in [0, 1], windowed exactly as inference windows it
    labels: np.ndarray  # (N, H, W) integer label values
    objects: dict[int, np.ndarray] = field(default_factory=dict)  # label -> sorted slice indices holding it
    resize: str = "bilinear"  # how the model's input is resized (the model's preprocessing)

    @classmethod
    def from_arrays(cls, name: str, volume: Volume, label_xyz: np.ndarray, axis: Axis, wanted: list[int] | None,
                    window: "Window | str | None" = "auto", preprocessing: Preprocessing | None = None) -> "TrainingVolume":
        """Window `volume` as `Propagator` does for the model's `preprocessing` and keep the labels of `wanted`
        (all when None) on 2+ slices."""
        preprocessing = preprocessing or PREPROCESSING["sam2"]
        window = Window.parse(window, guess_modality(volume.array, volume.modality)).for_model(preprocessing)
        bounds = window.bounds(volume.array)
        slices = window.apply(to_slices(volume.array, axis), bounds)
        labels = to_slices(label_xyz, axis)
        objects: dict[int, np.ndarray] = {}
        values = [int(v) for v in np.unique(labels) if v != 0]
        for value in values if wanted is None else [v for v in wanted if v in values]:
            present = np.flatnonzero((labels == value).any(axis=(1, 2)))
            if present.size >= 2:
                objects[value] = present
        return cls(name, np.ascontiguousarray(slices, dtype=np.float32), np.ascontiguousarray(labels), objects, preprocessing.resize)


@dataclass(frozen=True)
class Clip:
    """One training sample: frames `slices` (in tracking order) of volume `volume`, object `label`."""

    volume: int
    label: int
    slices: tuple[int, ...]
    prompt: str  # one of PROMPT_KINDS
    points_xy: tuple[tuple[float, float], ...] = ()  # on the first frame, model-input pixels
    point_labels: tuple[int, ...] = ()  # 1 positive click, 2/3 box corners (sam2's convention)


def clip_starts(present: np.ndarray, length: int) -> list[tuple[int, int]]:
    """(first slice, step) pairs whose `length` slices stay inside the extent of `present`, first slice present."""
    start, end = int(present[0]), int(present[-1])
    pairs = []
    for first in present.tolist():
        if first + length - 1 <= end:
            pairs.append((first, 1))
        if first - length + 1 >= start:
            pairs.append((first, -1))
    return pairs


def prompt_points(mask_hw: np.ndarray, kind: str, image_size: int, rng: np.random.Generator,
                  clicks: int = 1) -> tuple[tuple[tuple[float, float], ...], tuple[int, ...]]:
    """Box corners or positive clicks from a truth mask, scaled from the slice grid to model-input pixels."""
    rows, cols = np.nonzero(mask_hw)
    scale_y, scale_x = image_size / mask_hw.shape[0], image_size / mask_hw.shape[1]
    if kind == "box":
        corners = ((cols.min() * scale_x, rows.min() * scale_y), ((cols.max() + 1) * scale_x, (rows.max() + 1) * scale_y))
        return tuple((float(x), float(y)) for x, y in corners), (2, 3)
    picks = rng.choice(len(rows), size=min(clicks, len(rows)), replace=False)
    points = tuple((float((cols[i] + 0.5) * scale_x), float((rows[i] + 0.5) * scale_y)) for i in sorted(picks))
    return points, tuple(1 for _ in points)


class ClipSampler:
    """Draws clips over several volumes and objects; the same seed gives the same clips."""

    def __init__(self, volumes: list[TrainingVolume], clip_slices: int, image_size: int, seed: int = 0,
                 prompt_kinds: tuple[str, ...] = ("mask",)):
        if clip_slices < 2:
            raise ValueError("a clip needs at least 2 slices")
        unknown = set(prompt_kinds) - set(PROMPT_KINDS)
        if unknown or not prompt_kinds:
            raise ValueError(f"prompt kinds must be among {PROMPT_KINDS}, got {prompt_kinds}")
        self.volumes = volumes
        self.clip_slices = clip_slices
        self.image_size = image_size
        self.prompt_kinds = tuple(prompt_kinds)
        self.rng = np.random.default_rng(seed)
        self.objects = [(v, label) for v, volume in enumerate(volumes) for label in sorted(volume.objects)]
        if not self.objects:
            raise ValueError("no object on 2 or more slices to sample from")

    def sample(self) -> Clip:
        volume_index, label = self.objects[int(self.rng.integers(len(self.objects)))]
        volume = self.volumes[volume_index]
        present = volume.objects[label]
        length = min(self.clip_slices, int(present[-1] - present[0]) + 1)
        first, step = clip_starts(present, length)[int(self.rng.integers(len(clip_starts(present, length))))]
        slices = tuple(first + step * i for i in range(length))
        kind = self.prompt_kinds[int(self.rng.integers(len(self.prompt_kinds)))]
        points, point_labels = (), ()
        if kind != "mask":
            points, point_labels = prompt_points(volume.labels[first] == label, kind, self.image_size, self.rng)
        return Clip(volume_index, label, slices, kind, points, point_labels)
