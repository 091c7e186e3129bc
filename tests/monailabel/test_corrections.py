"""The correction loop's bookkeeping: which slices of a re-submitted label are the user's."""

import numpy as np

from sam2med.monailabel.corrections import CorrectionState, CorrectionStore, select_corrected_seeds, slice_digests
from sam2med.geometry import Axis, Grid
from sam2med.prompts import SliceRange, seeds_from_label

GRID = Grid(shape=(12, 10, 8), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


def _result() -> np.ndarray:
    label = np.zeros(GRID.shape, np.uint8)
    label[2:6, 2:6, 1:7] = 3  # label 3 on slices 1..6
    label[8:10, 6:9, 2:5] = 7  # label 7 on slices 2..4
    return label


def _all_seeds(label):
    return seeds_from_label(label, GRID, GRID, Axis.AXIAL, SliceRange(0, 7))


def test_changed_slices_and_earlier_seeds_are_kept_the_rest_is_propagated(tmp_path):
    result = _result()
    state = CorrectionState("img", "fp", Axis.AXIAL, {3: [3], 7: [3]}, slice_digests(result, Axis.AXIAL, [3, 7]))
    submitted = result.copy()
    submitted[2:7, 2:7, 5] = 3  # label 3 grown on slice 5
    submitted[8:10, 6:9, 2] = 0  # label 7 erased on slice 2: not a prompt (no voxels of it there)
    submitted[0:2, 0:2, 6] = 9  # a new label: all its slices are seeds
    seeds, correction = select_corrected_seeds(_all_seeds(submitted), state)
    assert {k: sorted(v) for k, v in seeds.masks.items()} == {3: [3, 5], 7: [3], 9: [6]}
    assert correction.changed == {3: [5], 7: [], 9: [6]} and correction.kept == {3: [3], 7: [3]}
    np.testing.assert_array_equal(seeds.masks[3][5], submitted[..., 5].T == 3)


def test_state_survives_a_new_store_and_is_dropped_for_other_voxels_or_axis(tmp_path):
    result = _result()
    state = CorrectionState("case 1", "fp1", Axis.AXIAL, {3: [3]}, slice_digests(result, Axis.AXIAL, [3]))
    CorrectionStore(tmp_path).save(state)
    again = CorrectionStore(tmp_path).load("case 1", "fp1", Axis.AXIAL)
    assert again is not None and again.seed_slices == {3: [3]} and again.result == state.result
    assert CorrectionStore(tmp_path).load("case 1", "fp2", Axis.AXIAL) is None
    assert CorrectionStore(tmp_path).load("case 1", "fp1", Axis.CORONAL) is None
    assert CorrectionStore(tmp_path).load("case 2", "fp1", Axis.AXIAL) is None


def test_unchanged_resubmission_without_its_seeds_falls_back_to_every_slice():
    result = _result()
    state = CorrectionState("img", "fp", Axis.AXIAL, {3: [1]}, slice_digests(result, Axis.AXIAL, [3]))
    submitted = result.copy()
    submitted[..., 1] = 0  # the seed slice erased, the rest as returned
    seeds, _ = select_corrected_seeds(_all_seeds(submitted), state)
    assert sorted(seeds.masks[3]) == [2, 3, 4, 5, 6]
