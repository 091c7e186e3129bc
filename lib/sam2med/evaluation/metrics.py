"""Overlap and surface metrics of one target, in mm: Dice and IoU through MONAI's metric classes, HD95 and the
symmetric average surface distance computed here the way MONAI defines them (surface = the mask minus its
6-connected erosion; each surface voxel's exact Euclidean distance, in mm, to the nearest surface voxel of the
other mask; HD95 = the larger of the two directions' 95th percentiles; ASD = the mean over both directions), with
numpy and torch only: MONAI's own versions need scipy (35 MiB), which the offline engine profile leaves out
(tests/evaluation/test_eval_metrics.py checks both agree).

Empty masks are handled here rather than left to MONAI's nan/inf:
- empty prediction, non-empty truth: Dice 0, IoU 0, HD95 and ASD infinite (no surface to measure);
- both empty: Dice 1, IoU 1, distances 0 (nothing to find and nothing found).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class TargetMetrics:
    """Agreement of a predicted mask with the truth; distances in mm, `inf` when a surface is missing."""

    dice: float
    iou: float
    hd95_mm: float
    asd_mm: float
    pred_voxels: int
    truth_voxels: int

    def to_dict(self) -> dict:
        return asdict(self)


def _crop_to_union(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to their union's bounding box plus one voxel: distances are unchanged, work shrinks."""
    union = pred | truth
    lows, highs = [], []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        present = np.flatnonzero(union.any(axis=other))
        lows.append(max(int(present[0]) - 1, 0))
        highs.append(min(int(present[-1]) + 2, union.shape[axis]))
    box = tuple(slice(lo, hi) for lo, hi in zip(lows, highs))
    return np.pad(pred[box], 1), np.pad(truth[box], 1)


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]  # (B=1, C=1, ...)


@contextmanager
def _one_torch_thread():
    """torch's float32 reductions (MONAI's mean surface distance) sum in an order that depends on the thread count:
    one thread makes the metrics the same wherever they are computed (a Ray worker, another machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def surface(mask: np.ndarray) -> np.ndarray:
    """The voxels of `mask` with a 6-neighbour outside it (outside the array counts as outside)."""
    padded = np.pad(mask, 1)
    inner = padded.copy()
    for axis in range(mask.ndim):
        for step in (1, -1):
            inner &= np.roll(padded, step, axis=axis)
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    return mask & ~inner[core]


def nearest_distances(points_mm: np.ndarray, targets_mm: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """For each point, the exact Euclidean distance to the nearest target point (float64, chunked)."""
    targets = torch.from_numpy(targets_mm)
    out = np.empty(len(points_mm), dtype=np.float64)
    for start in range(0, len(points_mm), chunk):
        block = torch.from_numpy(points_mm[start:start + chunk])
        out[start:start + chunk] = torch.cdist(block, targets).min(dim=1).values.numpy()
    return out


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(prediction surface -> truth surface, truth surface -> prediction surface) distances in mm."""
    scale = np.asarray(spacing, dtype=np.float64)
    pred_mm = np.argwhere(surface(pred)).astype(np.float64) * scale
    truth_mm = np.argwhere(surface(truth)).astype(np.float64) * scale
    return nearest_distances(pred_mm, truth_mm), nearest_distances(truth_mm, pred_mm)


def compute_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> TargetMetrics:
    """Dice, IoU, HD95 and symmetric average surface distance of two boolean masks on one grid."""
    from monai.metrics import DiceMetric, MeanIoU

    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    pred_voxels, truth_voxels = int(pred.sum()), int(truth.sum())
    if truth_voxels == 0 and pred_voxels == 0:
        return TargetMetrics(1.0, 1.0, 0.0, 0.0, 0, 0)
    if pred_voxels == 0 or truth_voxels == 0:
        return TargetMetrics(0.0, 0.0, math.inf, math.inf, pred_voxels, truth_voxels)
    pred_c, truth_c = _crop_to_union(pred, truth)
    y_pred, y = _as_batch(pred_c), _as_batch(truth_c)
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings(), _one_torch_thread():
        warnings.simplefilter("ignore")  # MONAI deprecation chatter from its own internals
        dice = DiceMetric(include_background=True, reduction="none")(y_pred, y)
        iou = MeanIoU(include_background=True, reduction="none")(y_pred, y)
        forward, backward = surface_distances(pred_c, truth_c, spacing)
    hd95 = max(float(np.quantile(forward, 0.95)), float(np.quantile(backward, 0.95)))
    asd = float(np.concatenate([forward, backward]).mean())
    return TargetMetrics(
        dice=float(dice.item()), iou=float(iou.item()), hd95_mm=hd95, asd_mm=asd,
        pred_voxels=pred_voxels, truth_voxels=truth_voxels,
    )
