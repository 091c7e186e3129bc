"""The correction loop's bookkeeping: which slices of a re-submitted label are the user's."""

import json

import numpy as np
import pytest

from sam2med.monailabel.corrections import (CorrectionState, CorrectionStore, parse_state_id, select_corrected_seeds,
                                            slice_digests)
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


def _state(k: int, image_id: str = "img") -> CorrectionState:
    label = np.zeros(GRID.shape, np.uint8)
    label[2:6, 2 : 3 + k % 7, 1 + k // 7 % 6] = 3  # 42 different results, then 9 more with one extra voxel
    label[0, 0, k // 42] = 3 if k >= 42 else 0
    return CorrectionState(image_id, "fp", Axis.AXIAL, {3: [1 + k // 7 % 6]}, slice_digests(label, Axis.AXIAL, [3]))


def test_state_ids_are_content_addresses_and_the_last_50_are_kept(tmp_path):
    from sam2med.errors import InputError

    store = CorrectionStore(tmp_path)
    states = [_state(k) for k in range(51)]
    assert len({s.state_id for s in states}) == 51
    assert _state(3).state_id == states[3].state_id and len(states[3].state_id) == 32  # same content, same id
    ids = [store.save(s) for s in states]
    assert ids == [s.state_id for s in states]
    for k in (1, 25, 50):  # kept: each comes back as it was saved
        assert CorrectionStore(tmp_path).load_id("img", ids[k], "fp", Axis.AXIAL).to_json() == states[k].to_json()
    assert store.load("img", "fp", Axis.AXIAL).state_id == ids[50]  # the newest is the loop's default
    with pytest.raises(InputError, match="is not a state of image 'img' this server keeps"):
        store.load_id("img", ids[0], "fp", Axis.AXIAL)  # the 51st-oldest is gone
    with pytest.raises(InputError, match="other voxels"):
        store.load_id("img", ids[7], "fp2", Axis.AXIAL)
    with pytest.raises(InputError, match="axial axis"):
        store.load_id("img", ids[7], "fp", Axis.CORONAL)
    with pytest.raises(InputError):
        store.load_id("other", ids[7], "fp", Axis.AXIAL)  # states are per image
    store.save(states[10])  # saved again: it moves to newest, nothing is duplicated
    assert store.load("img", "fp", Axis.AXIAL).state_id == ids[10]
    assert len(json.loads(store._path("img").read_text())["states"]) == 50


def test_a_version_1_state_file_is_read_as_one_kept_state(tmp_path):
    state = _state(0)
    store = CorrectionStore(tmp_path)
    store.folder.mkdir(exist_ok=True)
    store._path("img").write_text(json.dumps(state.to_json()))
    assert store.load_id("img", state.state_id, "fp", Axis.AXIAL).to_json() == state.to_json()


@pytest.mark.parametrize("value", ["abc", 5, "G" * 32, "A" * 32])
def test_parent_state_that_is_no_state_id_is_refused(value):
    from sam2med.errors import InputError

    with pytest.raises(InputError, match="parent_state must be a state_id"):
        parse_state_id(value)
    assert parse_state_id(None) is None and parse_state_id("ab" * 16) == "ab" * 16


def test_refine_bands_run_from_the_kept_seed_below_to_the_one_above_the_changes():
    from sam2med.monailabel.corrections import Correction, keep_outside_bands, refine_bands

    state = CorrectionState("img", "fp", Axis.AXIAL, {5: [10, 20, 30], 1: [4]}, {5: {10: "a"}, 1: {4: "b"}})
    ranges = {5: SliceRange(0, 40), 1: SliceRange(0, 40), 2: SliceRange(3, 8)}
    correction = Correction(changed={5: [22, 24], 1: []}, kept={5: [10, 20, 30], 1: [4]})
    plan = refine_bands(state, correction, {}, ranges)
    # 5: between its kept seeds 20 and 30; 1: nothing changed; 2: new to the last result, its whole range
    assert plan.bands == {5: SliceRange(20, 30), 2: SliceRange(3, 8)} and plan.unchanged == (1,)
    # a prompt on slice 35 of label 5 widens its band to the range's end (no kept seed above it)
    assert refine_bands(state, correction, {5: {35}}, ranges).bands[5] == SliceRange(20, 40)
    # a change below every kept seed: from the range's start
    assert refine_bands(state, Correction({5: [3]}, {5: [10]}), {}, {5: SliceRange(2, 40)}).bands == {5: SliceRange(2, 10)}
    assert refine_bands(state, Correction({5: [], 1: []}, {5: [10], 1: [4]}), {}, {5: SliceRange(0, 40), 1: SliceRange(0, 40)}) is None

    label = np.zeros((2, 2, 6), np.uint8)
    label[..., 2] = 5  # the run's output inside the band 2..3
    submitted = np.full((2, 2, 6), 5, np.uint8)
    submitted[0, 0, :] = 1
    keep_outside_bands(label, submitted, {5: SliceRange(2, 3)}, Axis.AXIAL)
    expected = np.where(submitted == 5, 5, 0).astype(np.uint8)
    expected[..., 2] = 5
    expected[..., 3] = 0  # inside the band: what the run gave
    np.testing.assert_array_equal(label, expected)
