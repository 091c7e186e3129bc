import numpy as np
import pytest

from sam2med.errors import PromptError
from sam2med.geometry import Axis, Grid, from_slices, to_slices, voxel_to_slice_point


@pytest.mark.parametrize("axis", list(Axis))
def test_slices_round_trip_and_orientation(axis):
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    slices = to_slices(volume, axis)
    assert slices.shape[0] == volume.shape[int(axis)]
    np.testing.assert_array_equal(from_slices(slices, axis), volume)
    # rows follow the later in-plane voxel axis, columns the earlier one
    others = [a for a in range(3) if a != int(axis)]
    assert slices.shape[1:] == (volume.shape[others[1]], volume.shape[others[0]])


def test_axial_slice_is_y_by_x():
    volume = np.zeros((5, 7, 3))
    volume[4, 1, 2] = 1  # x=4, y=1, z=2
    slices = to_slices(volume, Axis.AXIAL)
    assert slices[2, 1, 4] == 1
    assert voxel_to_slice_point((4, 1, 2), Axis.AXIAL) == (2, 1.0, 4.0)


@pytest.mark.parametrize("text,expected", [("axial", Axis.AXIAL), ("Coronal", Axis.CORONAL), ("0", Axis.SAGITTAL), (2, Axis.AXIAL)])
def test_axis_parse(text, expected):
    assert Axis.parse(text) is expected


def test_axis_parse_rejects_unknown():
    with pytest.raises(PromptError, match="unknown axis"):
        Axis.parse("oblique")


def test_grid_matches_and_names_difference():
    a = Grid((4, 5, 6), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    b = Grid((4, 5, 6), (1.0, 1.0, 2.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert a.matches(a)
    assert not a.matches(b)
    assert "spacing" in a.describe_difference(b)


def test_affine_ras_flips_lps():
    grid = Grid((4, 5, 6), (2.0, 3.0, 4.0), (10.0, 20.0, 30.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    affine = grid.affine_ras()
    np.testing.assert_allclose(np.diag(affine), [-2.0, -3.0, 4.0, 1.0])
    np.testing.assert_allclose(affine[:3, 3], [-10.0, -20.0, 30.0])


def test_reorient_flipped_lattice_exactly():
    from sam2med.geometry import reorient_to

    lps = Grid((4, 3, 2), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    # the same voxels stored with y reversed: origin moves to the last row, direction flips
    las = Grid((4, 3, 2), (1.0, 2.0, 3.0), (0.0, 4.0, 0.0), (1, 0, 0, 0, -1, 0, 0, 0, 1))
    array = np.arange(24).reshape(4, 3, 2)
    flipped = array[:, ::-1, :]
    np.testing.assert_array_equal(reorient_to(flipped, las, lps), array)
    # transposed axes
    swapped = Grid((3, 4, 2), (2.0, 1.0, 3.0), (0.0, 0.0, 0.0), (0, 1, 0, 1, 0, 0, 0, 0, 1))
    np.testing.assert_array_equal(reorient_to(array.transpose(1, 0, 2), swapped, lps), array)
    # half a voxel off: not the same lattice
    shifted = Grid((4, 3, 2), (1.0, 2.0, 3.0), (0.5, 0.0, 0.0), lps.direction)
    assert reorient_to(array, shifted, lps) is None
