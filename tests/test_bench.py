"""`main.py bench` end to end on a tiny case (a few slices, reduced input size): the JSON it writes.

Speed is never asserted here: the numbers live in docs/performance.md.
"""

from __future__ import annotations

import json

import numpy as np

from sam2med.bench import REQUIRED_KEYS, stretch_volume, summary_line
from sam2med.cli import main
from sam2med.geometry import Axis, Grid
from sam2med.io import Volume, load_label, save_label

from conftest import TEST_IMAGE_SIZE


def _seed_file(shared_data, tmp_path):
    seg = load_label(shared_data / "totalsegmentator" / "example_seg.nii.gz")
    seed = np.zeros(seg.array.shape, dtype=np.uint8)
    seed[:, :, 15] = np.where(seg.array[:, :, 15] == 5, 5, 0)  # liver on one axial slice
    return save_label(seed, seg.grid, tmp_path / "seed.nii.gz")


def test_bench_writes_the_required_keys(shared_data, random_checkpoint, tmp_path, capsys):
    seed = _seed_file(shared_data, tmp_path)
    out = tmp_path / "bench.json"
    code = main(["bench", str(shared_data / "totalsegmentator" / "example_ct_sm.nii.gz"), "--seed", str(seed),
                 "--range", "14", "16", "--checkpoint", str(random_checkpoint), "--device", "cpu",
                 "--image-size", str(TEST_IMAGE_SIZE), "--cache-gb", "0.5", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(REQUIRED_KEYS) <= set(report)
    assert report["slices"] == 3 and report["device"] == "cpu" and report["model"] == "tiny"
    for name in ("stock", "first", "cached"):
        assert report[f"{name}_s"] > 0
        assert abs(report[f"{name}_slices_per_s"] - 3 / report[f"{name}_s"]) < 0.05 * report[f"{name}_slices_per_s"] + 1e-3
    assert report["peak_mem_mb"] > 0
    assert report["cache"]["request_hit_slices"] == 3 and report["cache"]["request_miss_slices"] == 0
    assert report["cache"]["budget_bytes"] == int(0.5 * 2**30)
    assert report["cached_equals_first"] is True
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "propagate in video" not in captured.err, "no progress bar of sam2's into a pipe"
    lines = captured.out.strip().splitlines()
    assert lines[-1] == summary_line(report)
    assert "faster than first" in lines[-1]


def test_stretch_volume_repeats_slices_and_keeps_one_seed_slice():
    grid = Grid((3, 4, 5), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    array = np.broadcast_to(np.arange(5, dtype=np.int16), (3, 4, 5)).copy()
    seed = np.zeros((3, 4, 5), dtype=np.uint8)
    seed[1, 1, 2] = 7
    image, label = stretch_volume(Volume(array, grid), Volume(seed, grid), Axis.AXIAL, 12)
    assert image.array.shape == (3, 4, 12) and image.grid.shape == (3, 4, 12)
    assert abs(image.grid.spacing[2] - 2.0 * 5 / 12) < 1e-9
    assert sorted(set(image.array[0, 0].tolist())) == [0, 1, 2, 3, 4]
    seeded = np.flatnonzero(label.array.any(axis=(0, 1)))
    assert len(seeded) == 1 and image.array[0, 0, seeded[0]] == 2
