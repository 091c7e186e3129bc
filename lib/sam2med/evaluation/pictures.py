"""Pictures: a box plot of Dice per target, and per-case previews (animated GIF, PNG strip) of the slices
with the truth (green) and the prediction (red) outlined over the windowed image.

Slices are flipped (never rotated) towards the radiological convention the grid's direction allows:
axial with anterior up and patient's right on the left; coronal and sagittal with superior up.
They are stretched to the physical aspect.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from sam2med.evaluation.runner import TargetResult
from sam2med.geometry import Axis, to_slices
from sam2med.io import Volume
from sam2med.windowing import Window, guess_modality

TRUTH_RGB = (40, 220, 40)
PRED_RGB = (235, 40, 40)


def _atomic_target(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")


def dice_box_plot(results: list[TargetResult], path: Path, title: str = "") -> Path | None:
    """Box plot of Dice per target (and all targets together); None when no target ran."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = [r for r in results if r.ok]
    if not ok:
        return None
    groups: dict[str, list[float]] = {}
    for result in sorted(ok, key=lambda r: r.label):
        groups.setdefault(f"{result.label} {result.name}", []).append(result.metrics.dice)
    groups["all"] = [r.metrics.dice for r in ok]
    figure = Figure(figsize=(max(6.0, 0.32 * len(groups) + 2), 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.boxplot(list(groups.values()), showmeans=True)
    axes.set_xticks(range(1, len(groups) + 1), list(groups), rotation=90, fontsize=7)
    axes.set_ylim(0, 1)
    axes.set_ylabel("Dice")
    axes.set_title(title, fontsize=9)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    tmp = _atomic_target(path)
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _outline(labels: np.ndarray) -> np.ndarray:
    """Pixels of a label map whose 3x3 neighbourhood holds another value: each structure's own contour."""
    low, high = ndimage.minimum_filter(labels, size=3), ndimage.maximum_filter(labels, size=3)
    return (labels != 0) & ((low != labels) | (high != labels))


def _frame(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, scale: tuple[int, int]) -> np.ndarray:
    """One RGB frame: a [0, 1] slice with the outlines of the truth and prediction label maps, upscaled by `scale`."""
    up = lambda a: np.repeat(np.repeat(a, scale[0], axis=0), scale[1], axis=1)
    gray = (up(image) * 255).astype(np.uint8)
    rgb = np.stack([gray] * 3, axis=-1)
    rgb[_outline(up(truth))] = TRUTH_RGB
    rgb[_outline(up(pred))] = PRED_RGB
    return rgb


def _scale(volume: Volume, axis: Axis, shape: tuple[int, int], target_px: int = 320) -> tuple[int, int]:
    """Integer upscaling (rows, cols) that gives about `target_px` and the physical aspect."""
    row_mm, col_mm = volume.grid.slice_spacing(axis)
    base = max(1, round(target_px / max(shape[0] * row_mm / min(row_mm, col_mm), shape[1] * col_mm / min(row_mm, col_mm))))
    return max(1, round(base * row_mm / min(row_mm, col_mm))), max(1, round(base * col_mm / min(row_mm, col_mm)))


# Wanted LPS direction of increasing (row, column) for each slicing axis.
_DISPLAY = {
    Axis.AXIAL: ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0)),
    Axis.CORONAL: ((0.0, 0.0, -1.0), (1.0, 0.0, 0.0)),
    Axis.SAGITTAL: ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
}


def display_flips(volume: Volume, axis: Axis) -> tuple[bool, bool]:
    """Whether rows and columns of slices along `axis` must be reversed for the radiological view."""
    direction = np.asarray(volume.grid.direction, dtype=float).reshape(3, 3)
    first, second = [a for a in (0, 1, 2) if a != int(axis)]  # columns follow `first`, rows `second`
    want_rows, want_cols = _DISPLAY[axis]
    return bool(direction[:, second] @ want_rows < 0), bool(direction[:, first] @ want_cols < 0)


def _oriented(stack: np.ndarray, flips: tuple[bool, bool]) -> np.ndarray:
    if flips[0]:
        stack = stack[:, ::-1]
    if flips[1]:
        stack = stack[:, :, ::-1]
    return stack


def preview_frames(volume: Volume, truth: np.ndarray, prediction: np.ndarray, axis: Axis,
                   window: str | None = "auto") -> tuple[list[np.ndarray], list[int]]:
    """RGB frames of the slices holding truth or prediction, and their slice indices."""
    win = Window.parse(window, guess_modality(volume.array, volume.modality))
    flips = display_flips(volume, axis)
    images = _oriented(to_slices(volume.array, axis), flips)
    truth_s, pred_s = _oriented(to_slices(truth, axis), flips), _oriented(to_slices(prediction, axis), flips)
    indices = [int(i) for i in np.flatnonzero((truth_s > 0).any(axis=(1, 2)) | (pred_s > 0).any(axis=(1, 2)))]
    bounds = win.bounds(volume.array)
    scale = _scale(volume, axis, images.shape[1:])
    return [_frame(win.apply(images[i], bounds), truth_s[i], pred_s[i], scale) for i in indices], indices


def write_gif(frames: list[np.ndarray], path: Path, ms_per_frame: int = 250) -> Path:
    tmp = _atomic_target(path)
    try:
        pictures = [Image.fromarray(f) for f in frames]
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=ms_per_frame, loop=0)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_strip(frames: list[np.ndarray], path: Path, count: int = 8) -> Path:
    """A PNG of up to `count` evenly spaced frames side by side."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    gap = np.full((frames[0].shape[0], 4, 3), 255, dtype=np.uint8)
    row = np.concatenate([part for i in picks for part in (frames[i], gap)][:-1], axis=1)
    tmp = _atomic_target(path)
    try:
        Image.fromarray(row).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
