"""Slice images for SAM2 and their image-encoder features."""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# SAM2 was trained on ImageNet-normalised RGB frames.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def to_model_input(slices_nhw: np.ndarray, image_size: int, device: torch.device, resize: str = "bilinear") -> torch.Tensor:
    """(N, H, W) slices in [0, 1] -> (N, 3, S, S) normalised model input on `device`.

    `resize` "bicubic" resizes the slices as 8-bit images with PIL's Image.resize (bicubic), the way MedSAM2
    prepares its input; "bilinear" is sam2med's SAM2.1 input.
    """
    if resize == "bicubic":
        images = torch.from_numpy(_pil_bicubic(slices_nhw, image_size)).to(device)[:, None]  # (N, 1, S, S)
    else:
        images = torch.from_numpy(np.ascontiguousarray(slices_nhw, dtype=np.float32)).to(device)[:, None]  # (N, 1, H, W)
        downsampling = images.shape[-2] > image_size or images.shape[-1] > image_size
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=downsampling)
    mean = torch.tensor(IMAGE_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=device).view(1, 3, 1, 1)
    return (images.expand(-1, 3, -1, -1) - mean) / std


def _pil_bicubic(slices_nhw: np.ndarray, image_size: int) -> np.ndarray:
    """(N, H, W) slices in [0, 1] as uint8 images, resized by PIL (bicubic), back in [0, 1] as (N, S, S) float32."""
    from PIL import Image

    pixels = np.clip(np.round(np.asarray(slices_nhw, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    resized = [np.asarray(Image.fromarray(p).resize((image_size, image_size), Image.Resampling.BICUBIC)) for p in pixels]
    return np.stack(resized).astype(np.float32) / np.float32(255.0)


@dataclass
class SliceFeatures:
    """Image-encoder outputs of some slices of one volume, by slice index.

    `levels[s]` holds the feature pyramid of slice s as [(1, C_l, H_l, W_l)] (already projected by the
    mask decoder's high-resolution convolutions, as `forward_image` returns them). Positional encodings
    do not depend on the image and are kept once.
    """

    storage_dtype: torch.dtype
    levels: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    pos_enc: list[torch.Tensor] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Kept up to date by `add`, so that the cache can read an entry's size while another thread fills it
    # (summing over `levels` then could iterate a dict that changes size).
    _nbytes: int = field(default=0, repr=False)

    def missing(self, indices: Sequence[int]) -> list[int]:
        return [i for i in indices if i not in self.levels]

    def add(self, slice_index: int, levels: list[torch.Tensor], pos_enc: list[torch.Tensor]) -> None:
        # A copy, not a view into the encoder's batch output (which would keep the whole batch alive).
        stored = [level.to(self.storage_dtype, copy=True) for level in levels]
        added = sum(t.numel() * t.element_size() for t in stored)
        if self.pos_enc is None:
            self.pos_enc = [p.to(self.storage_dtype, copy=True) for p in pos_enc]
            added += sum(t.numel() * t.element_size() for t in self.pos_enc)
        previous = self.levels.get(slice_index)
        if previous is not None:
            added -= sum(t.numel() * t.element_size() for t in previous)
        self.levels[slice_index] = stored
        self._nbytes += added

    def backbone_out(self, slice_index: int, device: torch.device) -> dict[str, list[torch.Tensor]]:
        """The `forward_image` output of one slice, as float32 tensors on `device`."""
        return {
            "backbone_fpn": [t.to(device=device, dtype=torch.float32) for t in self.levels[slice_index]],
            "vision_pos_enc": [t.to(device=device, dtype=torch.float32) for t in self.pos_enc],
        }

    @property
    def nbytes(self) -> int:
        return self._nbytes


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """bf16 autocast on `device` when `dtype` is bfloat16 (CUDA, or a CPU with AMX / AVX512-BF16), else a no-op."""
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def encode_slices(
    tracker,
    slices_nhw: np.ndarray,
    slice_indices: Sequence[int],
    batch_size: int,
    compute_dtype: torch.dtype | None = None,
    resize: str = "bilinear",
) -> Iterator[tuple[int, list[torch.Tensor], list[torch.Tensor]]]:
    """Run the image encoder on slices in batches; yield (slice index, feature levels, positional encodings).

    `compute_dtype` bfloat16 runs the encoder under bf16 autocast; None means bf16 on CUDA, float32 elsewhere.
    `resize` is the model's resize filter (`to_model_input`).
    """
    device = tracker.device
    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for start in range(0, len(slice_indices), batch_size):
        batch = list(slice_indices[start : start + batch_size])
        with torch.inference_mode(), autocast_context(device, compute_dtype):
            images = to_model_input(slices_nhw[batch], tracker.image_size, device, resize)  # (B, 3, S, S)
            backbone_out = tracker.forward_image(images)
        levels = backbone_out["backbone_fpn"]  # [(B, C_l, H_l, W_l)]
        pos_enc = [p[:1] for p in backbone_out["vision_pos_enc"]]
        for offset, slice_index in enumerate(batch):
            yield slice_index, [level[offset : offset + 1] for level in levels], pos_enc
