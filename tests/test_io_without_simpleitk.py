"""The engine profile's NIfTI path (nibabel, no SimpleITK: scripts/bundle.sh --profile engine) gives the grid and
voxels that SimpleITK gives, and writes labels that SimpleITK reads back on the same grid. Also the numpy outline
of the evaluation pictures against scipy's filters, which the engine profile leaves out."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from sam2med import io
from sam2med.geometry import Grid

FILES = ["totalsegmentator/example_ct_sm.nii.gz",  # RAS, int16
         "totalsegmentator/example_mr_sm.nii.gz",  # LPS
         "totalsegmentator/example_seg_dicom.nii.gz",  # LAS, labels
         "mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"]  # float


@pytest.mark.parametrize("name", FILES)
def test_nibabel_reads_the_grid_and_voxels_simpleitk_reads(shared_data, name):
    path = shared_data / name
    if not path.exists():
        pytest.skip(f"{path} not in the shared data")
    ours = io._nifti_volume(path)
    theirs = io.load_volume(path)  # SimpleITK, installed here
    assert ours.grid.shape == theirs.grid.shape
    assert np.allclose(ours.grid.spacing, theirs.grid.spacing, atol=1e-5)
    assert np.allclose(ours.grid.origin, theirs.grid.origin, atol=1e-4)
    assert np.allclose(ours.grid.direction, theirs.grid.direction, atol=1e-6)
    assert ours.grid.matches(theirs.grid)
    assert ours.array.dtype == theirs.array.dtype and np.array_equal(ours.array, theirs.array)
    assert io._nifti_grid(io._nifti_image(path), path) == ours.grid  # read_grid's header-only path


def test_a_label_written_by_nibabel_reads_back_in_simpleitk_on_the_grid(tmp_path):
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # an oblique-free but rotated grid
    grid = Grid(shape=(7, 5, 4), spacing=(0.8, 1.5, 3.0), origin=(-12.5, 40.0, 7.25), direction=tuple(direction.ravel()))
    label = np.zeros(grid.shape, dtype=np.uint16)
    label[1, 2, 3], label[6, 0, 0] = 300, 2  # voxel positions and a value over 255
    path = tmp_path / "label.nii.gz"
    io.write_atomically(path, lambda tmp: io._nifti_save(label, grid, tmp))
    image = sitk.ReadImage(str(path))
    assert np.allclose(image.GetSpacing(), grid.spacing) and np.allclose(image.GetOrigin(), grid.origin)
    assert np.allclose(image.GetDirection(), grid.direction)
    back = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    assert back.dtype == np.uint16 and np.array_equal(back, label)
    assert [p.name for p in tmp_path.iterdir()] == ["label.nii.gz"]  # no temporary file left


def test_the_numpy_outline_is_scipys_3x3_min_max_outline():
    ndimage = pytest.importorskip("scipy.ndimage")
    from sam2med.evaluation.pictures import _outline

    rng = np.random.default_rng(3)
    for _ in range(40):
        labels = rng.integers(0, 4, size=(int(rng.integers(1, 25)), int(rng.integers(1, 25)))).astype(np.uint8)
        low, high = ndimage.minimum_filter(labels, size=3), ndimage.maximum_filter(labels, size=3)
        assert np.array_equal(_outline(labels), (labels != 0) & ((low != labels) | (high != labels)))
