"""`evaluate --ray local` on the real CT and MR: the same results.csv, predictions and previews as the local run."""

from __future__ import annotations

import csv
import importlib.util
import json

import nibabel as nib
import numpy as np
import pytest

from conftest import CT_MR_CASES, TEST_IMAGE_SIZE
from sam2med.cli import main

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="ray is not installed (requirements.txt pins it): the --ray runs cannot be tested")]


@pytest.fixture(scope="module")
def folders(ct_mr_folders, shared_data):
    return ct_mr_folders, shared_data / "totalsegmentator" / "labels.json"


def rows_without_seconds(out) -> list[dict]:
    rows = list(csv.DictReader(open(out / "results.csv")))
    for row in rows:
        assert row.pop("seconds") != ""
    return rows


def test_ray_evaluation_of_sam2_equals_the_local_one(folders, random_checkpoint, tmp_path):
    """SAM2 (random weights, 256 px) on a worker, with the copy reference: the same rows, predictions, previews
    and summary as in this process, and the model in the summary (one Ray start for the whole guarantee)."""
    import ray

    root, labels_map = folders
    options = ["--propagator", "sam2", "--checkpoint", str(random_checkpoint), "--device", "cpu", "--image-size",
               str(TEST_IMAGE_SIZE), "--previews", "1", "--compare", "copy", "--save-predictions"]
    for run, extra in (("local", []), ("ray", ["--ray", "local", "--workers", "2"])):
        assert main(["evaluate", "--images", str(root / "images"), "--labels", str(root / "labels"), "--labels-map",
                     f"{labels_map}:total", "--label", "spleen", "--range", "margin:0", *options, "--out", str(tmp_path / run),
                     *extra]) == 0
    assert not ray.is_initialized()
    local, remote = rows_without_seconds(tmp_path / "local"), rows_without_seconds(tmp_path / "ray")
    assert [(r["case"], r["propagator"], r["status"]) for r in remote] == [
        (case, method, "ok") for method in ("sam2", "copy") for case in ("ct", "mr")]
    assert remote == local  # every column but seconds: same rows, same order, same values
    for name in CT_MR_CASES:  # the driver wrote the workers' arrays
        np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "ray" / "predictions" / f"{name}.nii.gz")).dataobj),
                                      np.asarray(nib.load(str(tmp_path / "local" / "predictions" / f"{name}.nii.gz")).dataobj))
    assert (tmp_path / "ray" / "previews" / "ct.gif").stat().st_size > 0 and not (tmp_path / "ray" / "previews" / "mr.gif").exists()
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("local", "ray")]
    assert summaries[0]["overall"]["dice"] == summaries[1]["overall"]["dice"]
    assert summaries[0]["references"]["copy"]["overall"]["dice"] == summaries[1]["references"]["copy"]["overall"]["dice"]
    models = [json.loads((tmp_path / run / "summary.json").read_text())["config"]["model"] for run in ("local", "ray")]
    assert models[0] == models[1] and models[1]["input_size"] == TEST_IMAGE_SIZE and models[1]["random_weights"] is True
