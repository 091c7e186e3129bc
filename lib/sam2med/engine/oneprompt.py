"""One-prompt segmentation of unordered 2D images (MedSAM-2, Zhu et al. 2024, arXiv:2408.00874).

One prompted image and its seed mask condition SAM2; every other image is segmented as a frame of a
pseudo-video that `Propagator.propagate` tracks with the selective memory, so that no temporal order is
assumed: the prompt is frame 0 (its seed on it), the other images follow in the given order, tracking runs
forward, and each frame attends to the prompt and to the most confident, least alike frames tracked so far.

Images of another size than the prompt are resampled to the prompt's size for tracking (bilinear; SAM2
resizes every frame to its square input anyway) and their masks back to their own size (nearest).
The prompt image gets its seed back as its mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sam2med.engine.policies import SelectiveMemory, parse_memory
from sam2med.engine.propagator import ProgressFn, Propagator
from sam2med.errors import PromptError
from sam2med.geometry import Axis, Grid, from_slices, to_slices
from sam2med.io import Volume, label_dtype
from sam2med.prompts import SeedMasks
from sam2med.windowing import Window

logger = logging.getLogger(__name__)

# The frames are windowed per image before they are stacked: the pseudo-volume is passed through as is.
IDENTITY_WINDOW = Window(level=0.5, width=1.0)


@dataclass
class Frame:
    """One image to segment: a name and its pixels (H, W), already windowed to [0, 1]."""

    name: str
    pixels: np.ndarray


@dataclass
class FrameScore:
    """SAM2's confidence for one object on one image."""

    object_score: float
    iou: float | None  # None on the prompt (its mask is given)
    area: int  # pixels of the object on the image's own grid
    memory: tuple[str, ...] | None  # selective memory: the images (besides the prompt) it attended to

    def to_json(self, pixel_mm2: float | None = None) -> dict:
        return {
            "object_score": round(self.object_score, 4),
            "iou": None if self.iou is None else round(self.iou, 4),
            "area": self.area,
            **({} if pixel_mm2 is None else {"area_mm2": round(self.area * pixel_mm2, 2)}),
            **({} if self.memory is None else {"memory_images": list(self.memory)}),
        }


@dataclass
class FrameResult:
    """The mask of one image on its own grid, and its scores per object (label value)."""

    name: str
    mask: np.ndarray  # (H, W), label values of the seed, 0 elsewhere
    prompt: bool
    tracked_size: tuple[int, int] | None  # the size it was tracked at, when resampled to the prompt's
    scores: dict[int, FrameScore] = field(default_factory=dict)


@dataclass
class OnePromptResult:
    """Every image's result (the prompt first), the memory rule and the timings."""

    frames: list[FrameResult]
    labels: list[int]
    memory: dict | None
    seconds: float
    encode_seconds: float
    track_seconds: float


def resize_pixels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) intensities resampled to `size` (bilinear, antialiased when shrinking)."""
    if tuple(pixels.shape) == tuple(size):
        return np.asarray(pixels, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    shrink = pixels.shape[0] > size[0] or pixels.shape[1] > size[1]
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=shrink)[0, 0].numpy()


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) label values resampled to `size` by the nearest pixel centre (values kept)."""
    if tuple(labels.shape) == tuple(size):
        return labels
    rows = np.minimum(((np.arange(size[0]) + 0.5) * labels.shape[0] / size[0]).astype(np.int64), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * labels.shape[1] / size[1]).astype(np.int64), labels.shape[1] - 1)
    return labels[rows[:, None], cols[None, :]]


def check_seed(prompt: np.ndarray, seed: np.ndarray) -> list[int]:
    """The seed's label values; a seed of another size than the prompt, or an empty one, is a `PromptError`."""
    if tuple(seed.shape) != tuple(prompt.shape):
        raise PromptError(f"the seed is {seed.shape[1]}x{seed.shape[0]} pixels but the prompt image is "
                          f"{prompt.shape[1]}x{prompt.shape[0]}: draw the seed on the prompt image")
    labels = [int(v) for v in np.unique(seed) if v != 0]
    if not labels:
        raise PromptError("the seed mask is empty: draw the structure on the prompt image")
    return labels


def segment_unordered(
    propagator: Propagator,
    prompt: Frame,
    seed: np.ndarray,
    others: Sequence[Frame],
    memory: "str | SelectiveMemory | None" = "selective",
    progress: ProgressFn | None = None,
) -> OnePromptResult:
    """Segment `others` from one prompt image and its seed (each label value its own object), in no order.

    The frames are stacked into a pseudo-volume (prompt first) that `propagator.propagate` tracks forward
    with `memory` ('selective' by default: MedSAM-2's rule, see `SelectiveMemory`)."""
    labels = check_seed(prompt.pixels, seed)
    size = (int(prompt.pixels.shape[0]), int(prompt.pixels.shape[1]))
    names = [prompt.name] + [f.name for f in others]
    stack = np.stack([resize_pixels(prompt.pixels, size)] + [resize_pixels(f.pixels, size) for f in others])  # (N, H, W)
    volume = Volume(array=np.ascontiguousarray(from_slices(stack, Axis.AXIAL)),
                    grid=Grid((size[1], size[0], len(names)), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)),
                    source="one-prompt images")
    seeds = SeedMasks(axis=Axis.AXIAL, masks={value: {0: seed == value} for value in labels})
    rule = parse_memory(memory)
    result = propagator.propagate(volume, seeds, None, window=IDENTITY_WINDOW, progress=progress, memory=rule)
    tracked = to_slices(result.label, Axis.AXIAL)
    by_frame = {label: {s.slice: s for s in result.scores[label]} for label in labels}
    prompt_mask = np.where(seed > 0, seed, 0).astype(label_dtype(max(labels)))
    frames = []
    for index, name in enumerate(names):
        frame_pixels = prompt.pixels if index == 0 else others[index - 1].pixels
        own = (int(frame_pixels.shape[0]), int(frame_pixels.shape[1]))
        mask = prompt_mask if index == 0 else np.ascontiguousarray(resize_labels(tracked[index], own))
        scores = {}
        for label in labels:
            score = by_frame[label].get(index)
            if score is None:
                continue
            memory_names = None if score.memory is None else tuple(names[s] for s in score.memory)
            scores[label] = FrameScore(score.object_score, score.iou, int((mask == label).sum()), memory_names)
        frames.append(FrameResult(name, mask, index == 0, None if own == size else size, scores))
    logger.info("one-prompt: %d image(s) from prompt %s, labels %s, memory %s, in %.2fs",
                len(others), prompt.name, labels, "selective" if rule else "recent", result.seconds)
    return OnePromptResult(frames, labels, result.memory, result.seconds, result.encode_seconds, result.track_seconds)
