"""Metric values against hand-computed ones (MONAI's classes, spacing honoured, empty masks explicit)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sam2med.evaluation.metrics import compute_metrics

SPACING = (2.0, 1.0, 1.0)  # x is 2 mm: a one-voxel shift along x is 2 mm


def cube(shape, start, size) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def test_identical_masks_are_perfect():
    truth = cube((10, 10, 10), (2, 2, 2), 4)
    m = compute_metrics(truth, truth, SPACING)
    assert (m.dice, m.iou, m.hd95_mm, m.asd_mm) == (1.0, 1.0, 0.0, 0.0)


def test_cube_shifted_by_one_voxel():
    # 4^3 cubes shifted by one voxel along x: overlap 3*4*4 = 48 of 64 each.
    truth, pred = cube((12, 12, 12), (2, 2, 2), 4), cube((12, 12, 12), (3, 2, 2), 4)
    m = compute_metrics(pred, truth, SPACING)
    assert m.dice == pytest.approx(2 * 48 / 128)
    assert m.iou == pytest.approx(48 / 80)
    assert m.hd95_mm == pytest.approx(2.0)  # the far faces are one 2 mm voxel apart
    # 56 surface voxels per cube; per direction: 16 at 2 mm (far face), 4 at 1 mm (near face's centre), rest 0.
    assert m.asd_mm == pytest.approx(36 / 56, rel=1e-5)


def test_small_cubes_overlap_and_apart():
    truth = cube((10, 10, 10), (2, 2, 2), 2)  # 2^3: every voxel is on the surface
    overlap = compute_metrics(cube((10, 10, 10), (3, 2, 2), 2), truth, SPACING)
    assert (overlap.dice, overlap.iou) == (pytest.approx(0.5), pytest.approx(1 / 3))
    assert overlap.hd95_mm == pytest.approx(2.0) and overlap.asd_mm == pytest.approx(1.0)  # distances 0,0,0,0,2,2,2,2
    apart = compute_metrics(cube((10, 10, 10), (5, 2, 2), 2), truth, SPACING)
    assert apart.dice == 0.0 and apart.iou == 0.0
    assert apart.hd95_mm == pytest.approx(6.0) and apart.asd_mm == pytest.approx(5.0)  # distances 4 and 6 mm


def test_spacing_scales_distances_only():
    truth, pred = cube((12, 12, 12), (2, 2, 2), 4), cube((12, 12, 12), (3, 2, 2), 4)
    iso = compute_metrics(pred, truth, (1.0, 1.0, 1.0))
    aniso = compute_metrics(pred, truth, (3.0, 1.0, 1.0))
    assert iso.dice == aniso.dice
    assert iso.hd95_mm == pytest.approx(1.0) and aniso.hd95_mm == pytest.approx(3.0)


def test_empty_prediction_is_explicit():
    truth = cube((10, 10, 10), (2, 2, 2), 3)
    m = compute_metrics(np.zeros_like(truth), truth, SPACING)
    assert m.dice == 0.0 and m.iou == 0.0
    assert math.isinf(m.hd95_mm) and math.isinf(m.asd_mm)
    assert m.pred_voxels == 0 and m.truth_voxels == 27


def test_both_empty_is_perfect():
    empty = np.zeros((5, 5, 5), dtype=bool)
    m = compute_metrics(empty, empty, SPACING)
    assert (m.dice, m.iou, m.hd95_mm, m.asd_mm) == (1.0, 1.0, 0.0, 0.0)


def test_masks_touching_the_border_keep_their_surface():
    # Cropping pads by a voxel: a mask filling a face of the volume still has a surface there.
    truth = np.zeros((6, 6, 6), dtype=bool)
    truth[0:3] = True
    pred = np.zeros_like(truth)
    pred[0:2] = True
    m = compute_metrics(pred, truth, (1.0, 1.0, 1.0))
    assert m.dice == pytest.approx(2 * 72 / (108 + 72))
    assert m.hd95_mm == pytest.approx(1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool), SPACING)


def test_metrics_do_not_depend_on_torch_threads():
    """A Ray worker runs torch on fewer threads than this process: the surface distances must not change
    (MONAI's float32 mean over ~10^4 surface points sums in a thread-dependent order)."""
    import torch

    x, y, z = np.mgrid[:120, :120, :60]
    pred = (x - 60) ** 2 + (y - 60) ** 2 + ((z - 30) * 2) ** 2 < 45**2
    truth = ((x - 55) ** 2 / 1.2 + (y - 63) ** 2 + ((z - 28) * 2.2) ** 2 < 40**2) ^ (np.random.default_rng(0).random(pred.shape) < 0.02)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 3):  # the extremes: one summation order against the most split one
            torch.set_num_threads(threads)
            results.append(compute_metrics(pred, truth, (0.7, 0.9, 2.5)))
            assert torch.get_num_threads() == threads  # restored after the metrics
    finally:
        torch.set_num_threads(before)
    assert results[0] == results[1]
    assert 8.5 < results[0].asd_mm < 9.5 and 0.7 < results[0].dice < 0.8


@pytest.mark.integration
def test_surface_distances_equal_monais_on_real_organs(shared_data):
    """HD95 and ASD here (numpy + torch) are MONAI's (which need scipy): shifted and mismatched CT organs."""
    from monai.metrics import HausdorffDistanceMetric, SurfaceDistanceMetric

    from sam2med.evaluation.metrics import _as_batch, _crop_to_union
    from sam2med.io import load_label

    organs = load_label(shared_data / "totalsegmentator/example_seg.nii.gz")
    spacing = [float(s) for s in organs.grid.spacing]
    for pred_value, truth_value, shift in ((5, 5, 2), (1, 2, 0), (5, 6, 1), (3, 2, 3)):
        pred, truth = organs.array == pred_value, np.roll(organs.array == truth_value, shift, axis=0)
        ours = compute_metrics(pred, truth, spacing)
        y_pred, y = (_as_batch(m) for m in _crop_to_union(pred, truth))
        hd95 = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(y_pred, y, spacing=spacing)
        asd = SurfaceDistanceMetric(include_background=True, symmetric=True, reduction="none")(y_pred, y, spacing=spacing)
        assert ours.hd95_mm == pytest.approx(hd95.item(), rel=1e-6), (pred_value, truth_value)
        assert ours.asd_mm == pytest.approx(asd.item(), rel=1e-6), (pred_value, truth_value)


def test_metrics_need_no_scipy():
    """The engine profile has no scipy: the metrics still compute (scipy's import is refused in a subprocess)."""
    import subprocess
    import sys

    code = """
import sys
class NoScipy:
    def find_spec(self, name, path=None, target=None):
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError("no scipy here")
sys.meta_path.insert(0, NoScipy())
import numpy as np
from sam2med.evaluation.metrics import compute_metrics
a = np.zeros((12, 12, 12), bool); a[2:8, 2:8, 2:8] = True
b = np.zeros_like(a); b[4:10, 2:8, 2:8] = True
m = compute_metrics(a, b, (1.0, 1.0, 2.0))
print(m.hd95_mm, round(m.asd_mm, 6), "scipy" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    hd95, asd, loaded = run.stdout.split()
    assert float(hd95) == 2.0 and loaded == "False"
