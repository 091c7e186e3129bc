"""How one slice's label is put together from the objects' masks: drawings kept, locked voxels kept, overlaps.

On a slice where a label was drawn (a mask seed), that label's output is the drawing itself: SAM2
conditions on it, but its own (resized) mask of it is not used. Where the objects overlap, `overlap`
decides:

- `keep` (default): a voxel drawn with any label keeps it; propagated labels fill only the other voxels.
- `overwrite`: a propagated label may overwrite another label's drawing.
- `confidence`: the object with the largest logit wins; a drawing counts at sam2's logit of a mask input.

On a slice where a label was given a box, that label lies inside the box there (`clip_to_box`): a box says
where the object is on its slice, whatever the model's mask of it (SAM2's box prompt does not bound it).
Likewise a click is kept on its slice (`honour_clicks`): the pixel under a positive click is that label's,
the pixel under a negative click is not (SAM2 takes clicks as hints, and may label a pixel clicked away).

Between two propagated labels the more confident wins under every policy. Locked voxels (labels the
caller keeps as they are, see `prompts.locked_voxels`) are never overwritten under any policy.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from sam2med.errors import PromptError

KEEP, OVERWRITE, CONFIDENCE = "keep", "overwrite", "confidence"
OVERLAP_POLICIES = (KEEP, OVERWRITE, CONFIDENCE)
# sam2's logits of a mask given as input (SAM2Base._use_mask_as_output: mask * 20 - 10)
DRAWN_LOGIT = 10.0
_NOT_THIS_OBJECT = -1.0e4  # below any logit sam2 produces (its "no object" logits are -1024)


def parse_overlap(value: object, option: str = "overlap") -> str:
    """keep / overwrite / confidence; empty = keep. `option` names it in the error."""
    text = "" if value is None else str(value).strip().lower()
    if text == "":
        return KEEP
    if text not in OVERLAP_POLICIES:
        raise PromptError(f"{option} must be one of {', '.join(OVERLAP_POLICIES)}, got {str(value)[:40]!r}")
    return text


def _most_confident(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Per voxel, the value of the object with the largest logit where that logit is positive, else 0."""
    best = logits.max(dim=0)
    return torch.where(best.values > 0, values[best.indices], torch.zeros_like(values[best.indices]))


def clip_to_box(logits: torch.Tensor, box_rc: tuple[float, float, float, float]) -> torch.Tensor:
    """One object's logits (H, W) with every pixel whose centre lies outside the box (row0, col0, row1, col1;
    pixel centres at integer coordinates, the box's edges inclusive) set to "not this object"."""
    height, width = logits.shape[-2:]
    r0, c0, r1, c1 = box_rc
    rows = torch.arange(height, device=logits.device, dtype=torch.float32)[:, None]
    cols = torch.arange(width, device=logits.device, dtype=torch.float32)[None, :]
    inside = (rows >= min(r0, r1)) & (rows <= max(r0, r1)) & (cols >= min(c0, c1)) & (cols <= max(c0, c1))
    return torch.where(inside, logits, torch.full_like(logits, _NOT_THIS_OBJECT))


def honour_clicks(logits: torch.Tensor, points_rc: Sequence[tuple[float, float]], point_labels: Sequence[int]) -> torch.Tensor:
    """One object's logits (H, W) with the pixel under each click (the nearest pixel centre) set to "this
    object" (positive, 1) or "not this object" (negative, 0); a later click on the same pixel wins."""
    height, width = logits.shape[-2:]
    out = logits.clone()
    for (row, col), positive in zip(points_rc, point_labels):
        r, c = min(max(int(math.floor(row + 0.5)), 0), height - 1), min(max(int(math.floor(col + 0.5)), 0), width - 1)
        out[..., r, c] = max(float(out[..., r, c]), DRAWN_LOGIT) if positive else _NOT_THIS_OBJECT
    return out


def assemble_slice(logits: torch.Tensor, values: torch.Tensor, drawn: Mapping[int, torch.Tensor],
                   locked: torch.Tensor | None, policy: str) -> torch.Tensor:
    """One slice's label (H, W) from the objects' logits (O, H, W) at the slice's size.

    `values` (O,) are the objects' label values; `drawn` {object index: (H, W) bool} the drawings on this
    slice; `locked` (H, W) the locked label values (0 where none)."""
    logits = logits.clone()
    if policy == CONFIDENCE:
        for obj, mask in drawn.items():
            logits[obj] = torch.where(mask, DRAWN_LOGIT, -DRAWN_LOGIT)
        label = _most_confident(logits, values)
    else:
        drawing = torch.zeros(logits.shape[1:], dtype=values.dtype, device=logits.device)
        for obj, mask in drawn.items():
            logits[obj] = _NOT_THIS_OBJECT  # a drawn label is its drawing here, not sam2's mask of it
            drawing[mask] = values[obj]
        propagated = _most_confident(logits, values)
        label = torch.where(drawing != 0, drawing, propagated) if policy == KEEP else torch.where(propagated != 0, propagated, drawing)
    if locked is not None:
        label = torch.where(locked != 0, locked.to(label.dtype), label)
    return label
