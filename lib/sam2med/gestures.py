"""Annotation gestures (click, box, scribble, lasso; positive or negative) turned into what SAM2 takes well.

SAM2 was trained on clicks, boxes and masks. A scribble or a lasso drawn by hand is none of these, and a thin
stroke given as a mask is out of its training distribution (it reads as a thin object). So each gesture
becomes the prompt that says the same thing in SAM2's terms, per label and per slice (`SlicePrompt`):

- click: one point (foreground when positive, background when negative);
- box: SAM2's box (two opposite corners; positive only); with `slices` (first, last) it is the box-and-z-range
  gesture (a box on the middle slice plus the object's extent along the axis): its label's range (`box_ranges`);
- positive scribble: foreground clicks sampled evenly along the stroke by arc length (`stroke_clicks`, at most 8);
- negative scribble: background clicks sampled the same way, and the stroke, dilated by 1 px, erased from the
  slice's mask when the slice has one (`stroke_pixels`);
- positive lasso: the filled polygon (`polygon_fill`) OR-ed into the slice's mask (a mask is what a closed
  contour means);
- negative lasso: the filled polygon removed from the slice's mask; on a slice without a mask, background
  clicks sampled inside the polygon (`inside_clicks`, at most 8).

Gestures on one label's slice apply in the order given. All functions here are pure: slice pixel coordinates
in, points or masks out. Points are (row, column) of a slice along the axis (`geometry.voxel_to_slice_point`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np

from sam2med.errors import PromptError
from sam2med.geometry import Axis, voxel_to_slice_point
from sam2med.labelnames import require_named
from sam2med.prompts import SlicePrompt, SlicePrompts, SliceRange, named

KINDS = ("click", "box", "scribble", "lasso")
MAX_SAMPLED_CLICKS = 8
CLICK_SPACING_PX = 4.0  # a scribble gets one click per this much stroke length (ends included), up to the cap
STROKE_DILATION_PX = 1
_MIN_POINTS = {"click": 1, "box": 2, "scribble": 2, "lasso": 3}

PointRC = tuple[float, float]


@dataclass(frozen=True)
class Gesture:
    """One prompt as the annotator drew it: voxel points (x, y, z) on one slice along the axis."""

    label: int
    kind: str
    positive: bool
    points: tuple[tuple[float, float, float], ...]
    index: int = 0  # its position in the request, for errors
    slices: tuple[int, int] | None = None  # a box's z-range: its label is propagated over these slices (both included)

    def check(self) -> None:
        where = f"prompt {self.index}"
        if self.kind not in KINDS:
            raise PromptError(f"{where}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        need = _MIN_POINTS[self.kind]
        if self.kind in ("click", "box") and len(self.points) != need:
            raise PromptError(f"{where}: a {self.kind} has {need} point{'s' if need > 1 else ''}, got {len(self.points)}")
        if len(self.points) < need:
            raise PromptError(f"{where}: a {self.kind} needs at least {need} points, got {len(self.points)}")
        if self.kind == "box" and not self.positive:
            raise PromptError(f"{where}: a box is positive only (mark what is not the object with negative clicks, scribbles or a lasso)")
        if self.slices is not None and self.kind != "box":
            raise PromptError(f"{where}: only a box takes slices (its z-range), not a {self.kind}")


def relabel_gestures(gestures: Sequence[Gesture], mapping: Mapping[int, int]) -> tuple[Gesture, ...]:
    """The gestures with each label v replaced by mapping[v] (client -> server values); an unmapped label is a `PromptError`."""
    require_named((g.label for g in gestures), mapping, "prompts for")
    return tuple(replace(g, label=int(mapping[g.label])) for g in gestures)


def box_ranges(gestures: Iterable[Gesture], num_slices: int, names: "Mapping[int, str] | None" = None) -> dict[int, SliceRange]:
    """{label: its range} from the boxes given with `slices`; one range per label (two different ones are an error)."""
    ranges: dict[int, SliceRange] = {}
    for gesture in gestures:
        if gesture.slices is None:
            continue
        first, last = sorted(gesture.slices)
        if first < 0 or last >= num_slices:
            raise PromptError(f"prompt {gesture.index}: slices {first}..{last} lie outside the volume's slices 0..{num_slices - 1}")
        found = SliceRange(first, last)
        if ranges.setdefault(gesture.label, found) != found:
            earlier = ranges[gesture.label]
            raise PromptError(f"prompt {gesture.index}: label {named(gesture.label, names)} has two z-ranges, "
                              f"{earlier.start}..{earlier.end} and {first}..{last} (one box with slices per label)")
    return ranges


def gesture_slice(gesture: Gesture, axis: Axis, shape: Sequence[int]) -> tuple[int, tuple[PointRC, ...]]:
    """(slice index, points (row, column)) of a gesture: every point inside the image and on one slice along `axis`."""
    where = f"prompt {gesture.index}"
    for point in gesture.points:
        if not all(0 <= v < size for v, size in zip(point, shape)):
            raise PromptError(f"{where}: point {[round(v, 3) for v in point]} is outside the image ({'x'.join(map(str, shape))} voxels)")
    on = [voxel_to_slice_point(point, axis) for point in gesture.points]
    slices = sorted({s for s, _, _ in on})
    if len(slices) > 1:
        raise PromptError(f"{where}: its points lie on {axis.name.lower()} slices {slices[0]}..{slices[-1]}, "
                          f"not on one slice (a {gesture.kind} is drawn on one slice along the axis)")
    return slices[0], tuple((r, c) for _, r, c in on)


def box_of(points_rc: Sequence[PointRC]) -> tuple[float, float, float, float]:
    """SAM2's box (row0, col0, row1, col1) from two opposite corners, given in any order."""
    (r0, c0), (r1, c1) = points_rc
    return (min(r0, r1), min(c0, c1), max(r0, r1), max(c0, c1))


def _arc_lengths(points_rc: Sequence[PointRC]) -> np.ndarray:
    pts = np.asarray(points_rc, dtype=float).reshape(-1, 2)
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])


def _at_lengths(points_rc: Sequence[PointRC], lengths: np.ndarray) -> np.ndarray:
    """The points of the polyline at the given arc lengths (N, 2)."""
    pts = np.asarray(points_rc, dtype=float).reshape(-1, 2)
    cumulative = _arc_lengths(pts)
    return np.stack([np.interp(lengths, cumulative, pts[:, 0]), np.interp(lengths, cumulative, pts[:, 1])], axis=1)


def stroke_clicks(points_rc: Sequence[PointRC], cap: int = MAX_SAMPLED_CLICKS,
                  spacing: float = CLICK_SPACING_PX) -> tuple[PointRC, ...]:
    """Clicks spaced evenly by arc length along a polyline, both ends included: one per `spacing` px of stroke,
    at least 1 (the middle of a stroke shorter than `spacing`), at most `cap`."""
    total = float(_arc_lengths(points_rc)[-1])
    count = min(cap, 1 + int(total // spacing))
    lengths = np.array([total / 2]) if count == 1 else np.linspace(0.0, total, count)
    return tuple((float(r), float(c)) for r, c in _at_lengths(points_rc, lengths))


def _round(values: np.ndarray) -> np.ndarray:
    """Continuous pixel coordinates to pixel indices: the pixel whose centre is nearest (halves round up)."""
    return np.floor(np.asarray(values, dtype=float) + 0.5).astype(np.int64)


def stroke_pixels(points_rc: Sequence[PointRC], shape: Sequence[int], dilation: int = STROKE_DILATION_PX) -> np.ndarray:
    """(H, W) bool: the pixels a polyline passes through (sampled every 1/4 px), dilated by `dilation` px
    (a (2 * dilation + 1) square around each)."""
    height, width = int(shape[0]), int(shape[1])
    total = float(_arc_lengths(points_rc)[-1])
    on_line = _round(_at_lengths(points_rc, np.linspace(0.0, total, max(2, int(math.ceil(total * 4)) + 1))))
    mask = np.zeros((height, width), dtype=bool)
    for dr in range(-dilation, dilation + 1):
        for dc in range(-dilation, dilation + 1):
            rows, cols = on_line[:, 0] + dr, on_line[:, 1] + dc
            keep = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
            mask[rows[keep], cols[keep]] = True
    return mask


def polygon_fill(points_rc: Sequence[PointRC], shape: Sequence[int]) -> np.ndarray:
    """(H, W) bool: the pixels whose centre lies inside the polygon (closed from the last point to the first;
    even-odd rule, so a self-crossing lasso leaves its doubly-enclosed parts out)."""
    height, width = int(shape[0]), int(shape[1])
    pts = np.asarray(points_rc, dtype=float).reshape(-1, 2)
    mask = np.zeros((height, width), dtype=bool)
    r_lo, r_hi = max(0, int(math.floor(pts[:, 0].min()))), min(height - 1, int(math.ceil(pts[:, 0].max())))
    c_lo, c_hi = max(0, int(math.floor(pts[:, 1].min()))), min(width - 1, int(math.ceil(pts[:, 1].max())))
    if r_lo > r_hi or c_lo > c_hi:
        return mask
    rows, cols = np.mgrid[r_lo : r_hi + 1, c_lo : c_hi + 1].astype(float)
    inside = np.zeros(rows.shape, dtype=bool)
    for (r0, c0), (r1, c1) in zip(pts, np.roll(pts, -1, axis=0)):
        if r0 == r1:
            continue  # an edge along a row never crosses a ray along that row
        crosses = (r0 > rows) != (r1 > rows)  # the edge spans this row (half-open, so a vertex counts once)
        at_col = c0 + (rows - r0) * (c1 - c0) / (r1 - r0)
        inside ^= crosses & (cols < at_col)
    mask[r_lo : r_hi + 1, c_lo : c_hi + 1] = inside
    return mask


def inside_clicks(mask: np.ndarray, cap: int = MAX_SAMPLED_CLICKS) -> tuple[PointRC, ...]:
    """Up to `cap` pixels of `mask`, spread evenly through its pixels in raster order, the middle of each of `cap`
    equal runs (so neither the first nor the last pixel, on the contour); all of them when fewer."""
    where = np.argwhere(mask)
    if len(where) > cap:
        where = where[((np.arange(cap) + 0.5) * len(where) / cap).astype(int)]
    return tuple((float(r), float(c)) for r, c in where)


def apply_gesture(prompt: SlicePrompt, kind: str, positive: bool, points_rc: Sequence[PointRC],
                  shape: Sequence[int]) -> SlicePrompt:
    """One label's prompt on one slice after one more gesture on it (see the module's docstring)."""
    label = 1 if positive else 0
    if kind == "click":
        return replace(prompt, points_rc=prompt.points_rc + (tuple(points_rc[0]),), point_labels=prompt.point_labels + (label,))
    if kind == "box":
        if prompt.box_rc is not None:
            raise PromptError("a second box for the same label on the same slice (SAM2 takes one box per slice)")
        box = box_of(points_rc)
        if not (box[0] < box[2] and box[1] < box[3]):
            raise PromptError(f"the box {list(box)} is empty (its corners share a row or a column)")
        return replace(prompt, box_rc=box)
    if kind == "scribble":
        clicks = stroke_clicks(points_rc)
        prompt = replace(prompt, points_rc=prompt.points_rc + clicks, point_labels=prompt.point_labels + (label,) * len(clicks))
        if not positive and prompt.mask is not None:
            prompt = replace(prompt, mask=prompt.mask & ~stroke_pixels(points_rc, shape))
        return prompt
    fill = polygon_fill(points_rc, shape)
    if positive:
        return replace(prompt, mask=fill if prompt.mask is None else prompt.mask | fill)
    if prompt.mask is not None:
        return replace(prompt, mask=prompt.mask & ~fill)
    clicks = inside_clicks(fill)
    if not clicks:
        raise PromptError("the lasso encloses no pixel centre")
    return replace(prompt, points_rc=prompt.points_rc + clicks, point_labels=prompt.point_labels + (0,) * len(clicks))


def slice_shape(shape: Sequence[int], axis: Axis) -> tuple[int, int]:
    """(H, W) of a slice along `axis` of a volume of `shape` (x, y, z)."""
    first, second = [int(shape[a]) for a in (0, 1, 2) if a != int(axis)]
    return second, first


def gestures_to_prompts(gestures: Iterable[Gesture], axis: Axis, shape: Sequence[int],
                        base: SlicePrompts | None = None, names: "Mapping[int, str] | None" = None) -> SlicePrompts:
    """The gestures added, in order, to `base` (e.g. the seed's masks; not modified): per label and slice."""
    prompts = {label: dict(per_slice) for label, per_slice in (base.prompts if base is not None else {}).items()}
    height_width = slice_shape(shape, axis)
    for gesture in gestures:
        gesture.check()
        slice_index, points_rc = gesture_slice(gesture, axis, shape)
        per_slice = prompts.setdefault(gesture.label, {})
        try:
            per_slice[slice_index] = apply_gesture(per_slice.get(slice_index, SlicePrompt()), gesture.kind, gesture.positive,
                                                   points_rc, height_width)
        except PromptError as err:
            raise PromptError(f"prompt {gesture.index} (label {named(gesture.label, names)}, slice {slice_index}): {err}") from None
    return SlicePrompts(axis, prompts)
