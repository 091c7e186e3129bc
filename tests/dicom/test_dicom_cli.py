"""A DICOM series folder as input of `main.py propagate`: slices by position, rescale applied, and the
result on the series' own grid; bad DICOM input gives one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO, TEST_IMAGE_SIZE
from sam2med.cli import main
from sam2med.io import load_label, load_volume, save_label

pytestmark = pytest.mark.integration
SEED_SLICE = 10


@pytest.fixture(scope="module")
def dicom_case(shared_data, tmp_path_factory):
    """The 20-slice CT series, and a liver seed on one slice in the label's own NIfTI storage (LAS)."""
    d = shared_data / "totalsegmentator"
    organs = load_label(d / "example_seg_dicom.nii.gz")
    seed = np.zeros(organs.grid.shape, dtype=np.uint8)
    seed[:, :, SEED_SLICE] = np.where(organs.array[:, :, SEED_SLICE] == 5, 5, 0)
    folder = tmp_path_factory.mktemp("dicom_cli")
    return d / "example_ct_dicom", save_label(seed, organs.grid, folder / "seed.nii.gz")


def test_series_reads_sorted_rescaled_on_its_own_grid(dicom_case):
    series, _ = dicom_case
    volume = load_volume(series)
    assert volume.grid.shape == (512, 512, 20) and volume.modality == "CT"
    assert np.allclose(volume.grid.spacing, (0.9765625, 0.9765625, 2.0))
    assert volume.array.min() == -1024  # stored 0 + RescaleIntercept -1024
    # slices ascend along z by position, whatever the files' name order
    import pydicom

    z = sorted(float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in series.iterdir())
    assert np.isclose(volume.grid.origin[2], z[0])


def test_propagate_dicom_series_writes_label_on_series_grid(dicom_case, random_checkpoint, tmp_path):
    series, seed = dicom_case
    out = tmp_path / "out.nii.gz"
    cmd = [sys.executable, str(REPO / "main.py"), "propagate", str(series), "--seed", str(seed), "--range", "8", "12",
           "--checkpoint", str(random_checkpoint), "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "5 slices" in done.stdout and "label 5" in done.stdout
    image, written = load_volume(series), sitk.ReadImage(str(out))
    label = load_label(out)
    assert label.grid.matches(image.grid), (label.grid, image.grid)
    assert written.GetSize() == (512, 512, 20)
    assert set(np.unique(label.array)) <= {0, 5}
    assert not label.array[:, :, :8].any() and not label.array[:, :, 13:].any()
    seed_on_series = load_label(seed)
    # the seed slice comes back as drawn, up to the model's mask resolution (the LAS seed re-indexed
    # onto the LPS series grid: a flip would leave almost no overlap)
    from sam2med.prompts import seed_on_image_grid

    expected = seed_on_image_grid(seed_on_series.array, seed_on_series.grid, image.grid)[:, :, SEED_SLICE] > 0
    got = label.array[:, :, SEED_SLICE] > 0
    dice = 2 * (got & expected).sum() / (got.sum() + expected.sum())
    assert dice > 0.9, dice


def test_bad_dicom_input_is_one_line(dicom_case, random_checkpoint, tmp_path, capsys):
    _, seed = dicom_case
    empty = tmp_path / "not_dicom"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    code = main(["propagate", str(empty), "--seed", str(seed), "-o", str(tmp_path / "o.nii.gz"),
                 "--checkpoint", str(random_checkpoint), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no DICOM series" in err, err
    assert not (tmp_path / "o.nii.gz").exists()
