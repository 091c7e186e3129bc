import nibabel as nib
import numpy as np
import pytest

from sam2med.errors import InputError
from sam2med.geometry import Grid
from sam2med.io import load_label, load_volume, save_label

GRID = Grid((6, 5, 4), (1.5, 2.0, 3.0), (10.0, -5.0, 2.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))


def _write_nifti(path, array, affine):
    nib.save(nib.Nifti1Image(array, affine), str(path))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".nii"])
def test_label_round_trip_keeps_grid_and_values(tmp_path, suffix):
    label = np.zeros(GRID.shape, dtype=np.uint8)
    label[1, 2, 3] = 7
    label[5, 0, 0] = 2
    path = save_label(label, GRID, tmp_path / f"out{suffix}")
    back = load_label(path)
    assert back.grid.matches(GRID)
    np.testing.assert_array_equal(back.array, label)
    assert [p.name for p in tmp_path.iterdir()] == [f"out{suffix}"]  # no temporary file left


def test_nifti_affine_survives_load_and_save(tmp_path):
    affine = np.array([[-3.0, 0, 0, 100.0], [0, 2.0, 0, -50.0], [0, 0, 2.5, 20.0], [0, 0, 0, 1]])
    _write_nifti(tmp_path / "img.nii.gz", np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32), affine)
    volume = load_volume(tmp_path / "img.nii.gz")
    assert volume.array.shape == (6, 5, 4)
    np.testing.assert_allclose(volume.grid.affine_ras(), affine, atol=1e-4)
    out = save_label(np.ones((6, 5, 4), np.uint8), volume.grid, tmp_path / "lab.nii.gz")
    np.testing.assert_allclose(nib.load(str(out)).affine, affine, atol=1e-4)


def test_voxel_order_is_xyz(tmp_path):
    array = np.zeros((6, 5, 4), dtype=np.int16)
    array[5, 1, 2] = 9
    _write_nifti(tmp_path / "img.nii.gz", array, np.eye(4))
    assert load_volume(tmp_path / "img.nii.gz").array[5, 1, 2] == 9


def test_unreadable_and_missing_inputs(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read"):
        load_volume(bad)
    with pytest.raises(InputError, match="no such file"):
        load_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        load_volume(tmp_path / "empty_dir")


def test_label_with_fractions_is_rejected(tmp_path):
    _write_nifti(tmp_path / "lab.nii.gz", np.full((3, 3, 3), 0.5, np.float32), np.eye(4))
    with pytest.raises(InputError, match="non-integer"):
        load_label(tmp_path / "lab.nii.gz")


def test_save_rejects_bad_target_and_leaves_nothing(tmp_path):
    label = np.zeros(GRID.shape, np.uint8)
    with pytest.raises(InputError, match="unsupported output format"):
        save_label(label, GRID, tmp_path / "out.png")
    with pytest.raises(InputError, match="does not exist"):
        save_label(label, GRID, tmp_path / "missing" / "out.nii.gz")
    with pytest.raises(InputError, match="does not match"):
        save_label(np.zeros((2, 2, 2), np.uint8), GRID, tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_fingerprint_follows_content():
    from sam2med.io import Volume

    a = Volume(np.zeros(GRID.shape, np.int16), GRID)
    b = Volume(np.zeros(GRID.shape, np.int16), GRID)
    c = Volume(np.ones(GRID.shape, np.int16), GRID)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
