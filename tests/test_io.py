import nibabel as nib
import numpy as np
import pytest

from sam2med.errors import InputError
from sam2med.geometry import Grid
from sam2med.io import load_label, load_volume, save_label, write_atomically

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


def test_label_values_over_65535_keep_their_value(tmp_path):
    """Issue 16.7: 70000 was stored as uint16 and came back as 4464."""
    label = np.zeros(GRID.shape, np.uint32)
    label[1, 2, 3], label[0, 0, 0] = 70000, 4_000_000_000
    save_label(label, GRID, tmp_path / "big.nii.gz")
    back = load_label(tmp_path / "big.nii.gz").array
    assert back.dtype == np.uint32 and back[1, 2, 3] == 70000 and back[0, 0, 0] == 4_000_000_000
    assert int(back.sum()) == 70000 + 4_000_000_000
    from sam2med.io import label_dtype

    with pytest.raises(InputError, match="largest supported label value"):
        label_dtype(2**32)


def _nifti_bytes(tmp_path, array) -> bytes:
    _write_nifti(tmp_path / "full.nii", array, np.eye(4))
    return (tmp_path / "full.nii").read_bytes()


def test_truncated_and_corrupt_files_are_refused(tmp_path):
    """Issue 16.8: SimpleITK reads a cut .nii.gz with zeros in place of the missing voxels."""
    import gzip

    array = np.arange(20 * 20 * 20, dtype=np.int16).reshape(20, 20, 20)
    raw = _nifti_bytes(tmp_path, array)
    cases = {
        "cut.nii.gz": (gzip.compress(raw)[:-2000], "gzip stream is cut"),
        "short.nii.gz": (gzip.compress(raw[:-3000]), "holds 13352 bytes of the 16352"),
        "short.nii": (raw[:-3000], "holds 13352 bytes of the 16352"),
        "damaged.nii.gz": (gzip.compress(raw)[:40] + b"\xff" * 200 + gzip.compress(raw)[240:], "truncated or corrupt"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=message):
            load_volume(tmp_path / name)
        with pytest.raises(InputError, match=message):
            load_label(tmp_path / name)
    (tmp_path / "whole.nii.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(load_volume(tmp_path / "whole.nii.gz").array, array)


def test_non_finite_voxels_are_refused(tmp_path):
    """Issue 16.9: NaN/inf voxels went into the windowing and the model silently."""
    array = np.ones((8, 8, 8), np.float32)
    array[1, 2, 3], array[4, 4, 4] = np.nan, np.inf
    _write_nifti(tmp_path / "nan.nii.gz", array, np.eye(4))  # ITK's NIfTI reader would hand these back as 0
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "nan.mha"))
    for name in ("nan.nii.gz", "nan.mha"):
        with pytest.raises(InputError, match="2 voxels are NaN or infinite"):
            load_volume(tmp_path / name)
    array[1, 2, 3], array[4, 4, 4] = 0, 0
    _write_nifti(tmp_path / "finite.nii.gz", array, np.eye(4))
    assert load_volume(tmp_path / "finite.nii.gz").array.sum() == 510


def test_output_path_is_checked_before_any_work(tmp_path):
    """Issue 16.10: a folder or an unwritable place as output failed only after the whole propagation."""
    from sam2med.io import check_output_path

    (tmp_path / "folder.nii.gz").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        check_output_path(tmp_path / "folder.nii.gz")
    with pytest.raises(InputError, match="cannot write there"):
        check_output_path("/proc/sam2med_out.nii.gz")
    with pytest.raises(InputError, match="unsupported output format"):
        check_output_path(tmp_path / "out.png")
    assert check_output_path(tmp_path / "scores.json", suffixes=None) == tmp_path / "scores.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.nii.gz"], "the write probe is removed"


def test_write_atomically_replaces_whole_files_and_a_failed_write_leaves_the_old_one(tmp_path):
    target = tmp_path / "out.nii.gz"
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_bytes(b"new")

    assert write_atomically(target, write) == target and target.read_bytes() == b"new"
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".out.nii.gz.") and seen[0].name.endswith(".partial.nii.gz")

    def fail(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, fail)
    assert target.read_bytes() == b"new"  # the earlier file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]  # no temporary file left
