"""Real CT and MR (../shared/data): registration beats copying the seed, on a few organs (fast subset).

The full run over every organ on at least 5 slices is in docs/evaluation.md.
"""

from __future__ import annotations

import csv

import pytest

from sam2med.cli import main

pytestmark = pytest.mark.integration

CASES = {  # case: (image, label, labels.json key)
    "ct": ("example_ct_sm.nii.gz", "example_seg.nii.gz", "total"),
    "mr": ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "total_mr"),
}
ORGANS = ["spleen", "kidney_left", "liver", "stomach"]


def mean_dice(out) -> float:
    rows = [r for r in csv.DictReader(open(out / "results.csv")) if r["status"] == "ok"]
    assert len(rows) == len(ORGANS)
    return sum(float(r["dice"]) for r in rows) / len(rows)


@pytest.mark.parametrize("modality", sorted(CASES))
def test_registration_beats_copy(shared_data, tmp_path, modality):
    image, label, key = CASES[modality]
    source = shared_data / "totalsegmentator"
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "images" / f"{modality}.nii.gz").symlink_to(source / image)  # pairs by name
    (tmp_path / "labels" / f"{modality}.nii.gz").symlink_to(source / label)
    dice = {}
    for method in ("copy", "registration"):
        out = tmp_path / method
        args = ["evaluate", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
                "--labels-map", f"{source / 'labels.json'}:{key}", "--propagator", method, "--previews", "0", "--out", str(out)]
        for organ in ORGANS:
            args += ["--label", organ]
        assert main(args) == 0
        dice[method] = mean_dice(out)
    assert 0.3 < dice["copy"] < dice["registration"], dice
