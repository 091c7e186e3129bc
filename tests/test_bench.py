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


def test_bench_latency_writes_cold_warm_and_during_warm_up_figures(shared_data, random_checkpoint, tmp_path, capsys):
    """`bench --latency` on 3 slices: the figures are there, warm requests encode nothing, and the request sent
    during the warm-up waited at most one slice with no warm-up slice started while it ran (from the gate's events)."""
    seed = _seed_file(shared_data, tmp_path)
    out = tmp_path / "latency.json"
    code = main(["bench", str(shared_data / "totalsegmentator" / "example_ct_sm.nii.gz"), "--seed", str(seed), "--latency",
                 "--near", "0", "--range", "14", "16", "--checkpoint", str(random_checkpoint), "--device", "cpu",
                 "--image-size", str(TEST_IMAGE_SIZE), "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert (report["slices"], report["near_slices"], report["near_range"]) == (3, 1, [15, 15])
    for name in ("cold_first_painted", "cold_full_range", "warm_first_painted", "warm_full_range", "near_idle",
                 "near_during_warm_up", "near_during_unyielding_warm_up"):
        assert report[f"{name}_s"] > 0
    assert report["warm_misses"] == {"warm_first_painted": [0], "warm_full_range": [0]}
    assert report["warm_up_slices_started_during_requests"] == 0
    assert report["request_wait_for_warm_up_s"]["max"] <= report["warm_up_slice_encode_s"]["max"]
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("  near request idle")
    assert main(["bench", str(shared_data / "totalsegmentator" / "example_ct_sm.nii.gz"), "--seed", str(seed), "--latency",
                 "--near", "-1", "--checkpoint", str(random_checkpoint), "--json", str(tmp_path / "x.json")]) != 0
    assert not (tmp_path / "x.json").exists()
