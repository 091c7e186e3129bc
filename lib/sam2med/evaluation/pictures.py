"""Pictures: a per-organ Dice chart (reference propagators side by side), and per-case previews (animated
GIF, PNG strip) of the slices with the truth (green) and the prediction (red) outlined over the windowed
image, each frame captioned with the case, the slice number and the organs on it, above a legend.

Slices are flipped (never rotated) towards the radiological convention the grid's direction allows:
axial with anterior up and patient's right on the left; coronal and sagittal with superior up.
They are stretched to the physical aspect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sam2med.evaluation.runner import TargetResult
from sam2med.geometry import Axis, to_slices
from sam2med.io import Volume, write_atomically
from sam2med.labelnames import label_name
from sam2med.windowing import Window, guess_modality

TRUTH_RGB = (40, 220, 40)
PRED_RGB = (235, 40, 40)


def _save_figure(figure, path: Path) -> Path:
    return write_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))


def dice_chart(groups: dict[str, list[TargetResult]], path: Path, title: str = "") -> Path | None:
    """Horizontal bars of mean Dice per organ, one bar per propagator side by side (the first is the one
    under evaluation), organs sorted by its Dice; a dot per case when there are several. None when nothing ran."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per_method: dict[str, dict[str, list[float]]] = {}
    for method, results in groups.items():
        for result in (r for r in results if r.scored):
            per_method.setdefault(method, {}).setdefault(result.name, []).append(result.metrics.dice)
    if not per_method:
        return None
    methods = [m for m in groups if m in per_method]
    main = per_method[methods[0]]
    organs = sorted({o for values in per_method.values() for o in values},
                    key=lambda o: (float(np.mean(main[o])) if o in main else -1.0, o))
    height = 0.8 / len(methods)
    figure = Figure(figsize=(7.5, max(2.5, 0.22 * len(organs) * max(1, len(methods) * 0.7) + 1.4)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for j, method in enumerate(methods):
        offset = (j - (len(methods) - 1) / 2) * height
        rows = [i for i, o in enumerate(organs) if o in per_method[method]]
        means = [float(np.mean(per_method[method][organs[i]])) for i in rows]
        axes.barh([i - offset for i in rows], means, height=height, color=colours[j % len(colours)],
                  label=f"{method} (mean {np.mean([d for v in per_method[method].values() for d in v]):.2f})")
        for i in rows:
            values = per_method[method][organs[i]]
            if len(values) > 1:
                axes.plot(values, [i - offset] * len(values), "k.", markersize=2)
    axes.set_yticks(range(len(organs)), organs, fontsize=7)
    axes.set_xlim(0, 1)
    axes.set_xlabel("Dice")
    axes.set_title(title, fontsize=9)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return _save_figure(figure, path)


def _outline(labels: np.ndarray) -> np.ndarray:
    """Pixels of a label map whose 3x3 neighbourhood holds another value: each structure's own contour."""
    # the 3x3 minimum and maximum with the edge repeated (scipy.ndimage's size-3 filters, 'reflect'), in numpy:
    # the engine profile (scripts/bundle.sh) has no scipy
    padded = np.pad(labels, 1, mode="edge")
    rows, cols = labels.shape
    shifted = [padded[i:i + rows, j:j + cols] for i in range(3) for j in range(3)]
    low, high = np.minimum.reduce(shifted), np.maximum.reduce(shifted)
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
    pictures = [Image.fromarray(f) for f in frames]
    return write_atomically(path, lambda tmp: pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:],
                                                                 duration=ms_per_frame, loop=0))


def write_strip(frames: list[np.ndarray], path: Path, count: int = 8) -> Path:
    """A PNG of up to `count` evenly spaced frames side by side."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    gap = np.full((frames[0].shape[0], 4, 3), 255, dtype=np.uint8)
    row = np.concatenate([part for i in picks for part in (frames[i], gap)][:-1], axis=1)
    return write_atomically(path, lambda tmp: Image.fromarray(row).save(tmp, format="PNG"))


CAPTION_PX = 14  # font size of the captions


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def caption_frame(frame: np.ndarray, lines: list[str]) -> np.ndarray:
    """`frame` with `lines` of text above it and a legend (truth green, prediction red) below it."""
    font = ImageFont.load_default(size=CAPTION_PX)
    line_px = CAPTION_PX + 4
    height, width = frame.shape[:2]
    canvas = Image.new("RGB", (width, height + line_px * (len(lines) + 1)), (0, 0, 0))
    canvas.paste(Image.fromarray(frame), (0, line_px * len(lines)))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((3, 2 + k * line_px), _fit(draw, line, font, width - 6), fill=(255, 255, 255), font=font)
    y, x = height + line_px * len(lines) + 2, 3
    for colour, text in ((TRUTH_RGB, "truth"), (PRED_RGB, "prediction")):
        draw.rectangle((x, y + 2, x + CAPTION_PX - 4, y + CAPTION_PX - 2), fill=colour)
        x += CAPTION_PX
        draw.text((x, y), text, fill=colour, font=font)
        x += int(draw.textlength(text, font=font)) + 12
    return np.asarray(canvas)


def frame_captions(case: str, axis: Axis, indices: list[int], num_slices: int, truth: np.ndarray, prediction: np.ndarray,
                   names: dict[int, str], seeds: dict[int, list[str]] | None = None) -> list[list[str]]:
    """Two lines per frame: case, slice number (and the seeded organs); the organs present on the slice."""
    truth_s, pred_s = to_slices(truth, axis), to_slices(prediction, axis)
    captions = []
    for index in indices:
        values = sorted({int(v) for v in np.unique(truth_s[index]) if v} | {int(v) for v in np.unique(pred_s[index]) if v})
        organs = ", ".join(label_name(v, names) for v in values)
        seeded = (seeds or {}).get(index)
        first = f"{case}  {axis.name.lower()} slice {index}/{num_slices - 1}" + (f"  seed: {', '.join(seeded)}" if seeded else "")
        captions.append([first, organs])
    return captions
