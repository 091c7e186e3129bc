"""Propagation on the real volumes in ../shared/data with a random-weight SAM2.1-tiny.

Random weights say nothing of quality; these tests check what does not depend on weights: the output
grid, the slice range, label values, and that a conditioning slice comes back exactly as it was drawn.
"""

import numpy as np
import pytest

from sam2med.geometry import Axis, to_slices
from sam2med.io import load_label, load_volume
from sam2med.prompts import ClickPrompt, ClickSeeds, SliceRange, seeds_from_label

pytestmark = pytest.mark.integration


def seed_on_slice(truth: np.ndarray, axis: Axis, slice_index: int, labels: list[int]) -> np.ndarray:
    seed = np.zeros_like(truth)
    seed_slices, truth_slices = to_slices(seed, axis), to_slices(truth, axis)
    seed_slices[slice_index] = np.where(np.isin(truth_slices[slice_index], labels), truth_slices[slice_index], 0)
    return seed


def largest_slice(truth: np.ndarray, axis: Axis, label: int) -> int:
    return int(np.argmax((to_slices(truth, axis) == label).sum(axis=(1, 2))))


@pytest.fixture(scope="module")
def ct(shared_data):
    d = shared_data / "totalsegmentator"
    return load_volume(d / "example_ct_sm.nii.gz"), load_label(d / "example_seg.nii.gz")


def test_ct_two_labels_stay_in_range_and_keep_seed(ct, propagator):
    image, truth = ct
    axis = Axis.AXIAL
    mid = largest_slice(truth.array, axis, 5)  # liver
    rng = SliceRange(mid - 2, mid + 3)
    seed = seed_on_slice(truth.array, axis, mid, [5, 1])  # liver and spleen
    seeds = seeds_from_label(seed, truth.grid, image.grid, axis, rng)
    result = propagator.propagate(image, seeds, rng)

    assert result.label.shape == image.array.shape
    assert result.grid == image.grid
    assert set(np.unique(result.label)) <= {0, 1, 5}
    assert not result.label[..., : rng.start].any() and not result.label[..., rng.end + 1 :].any()
    for value in (1, 5):
        np.testing.assert_array_equal(result.label[..., mid] == value, seed[..., mid] == value)
    assert result.kept_slices == {1: [mid], 5: [mid]}
    assert set(result.scores) == {1, 5}
    assert [s.slice for s in result.scores[5]] == list(rng.indices)
    seed_scores = [s for s in result.scores[5] if s.seed]
    assert [s.slice for s in seed_scores] == [mid] and seed_scores[0].iou is None
    assert all(0.0 <= s.object_score <= 1.0 for s in result.scores[5])
    report = result.to_json()
    assert report["slices_processed"] == len(rng) and report["slice_range"] == [rng.start, rng.end]


def test_second_request_hits_the_cache_and_gives_the_same_label(ct, propagator):
    image, truth = ct
    mid = largest_slice(truth.array, Axis.AXIAL, 5)
    rng = SliceRange(mid - 1, mid + 1)
    seeds = seeds_from_label(seed_on_slice(truth.array, Axis.AXIAL, mid, [5]), truth.grid, image.grid, Axis.AXIAL, rng)
    first = propagator.propagate(image, seeds, rng, window="liver")
    second = propagator.propagate(image, seeds, rng, window="liver")
    assert first.cache["request_miss_slices"] == len(rng)
    assert second.cache["request_hit_slices"] == len(rng) and second.cache["request_miss_slices"] == 0
    np.testing.assert_array_equal(first.label, second.label)


def test_several_seed_slices_and_coronal_axis(ct, propagator):
    image, truth = ct
    axis = Axis.CORONAL
    rows = np.flatnonzero((to_slices(truth.array, axis) == 5).any(axis=(1, 2)))
    a, b = int(rows[len(rows) // 2]), int(rows[len(rows) // 2 + 3])
    seed = seed_on_slice(truth.array, axis, a, [5]) + seed_on_slice(truth.array, axis, b, [5])
    rng = SliceRange(a - 1, b + 1)
    result = propagator.propagate(image, seeds_from_label(seed, truth.grid, image.grid, axis, rng), rng)
    out = to_slices(result.label, axis)
    for s in (a, b):
        np.testing.assert_array_equal(out[s] == 5, to_slices(seed, axis)[s] == 5)
    assert not out[: rng.start].any() and not out[rng.end + 1 :].any()
    assert sum(s.seed for s in result.scores[5]) == 2


def test_lps_mr_comes_back_on_its_grid(shared_data, propagator):
    d = shared_data / "totalsegmentator"
    image, truth = load_volume(d / "example_mr_sm.nii.gz"), load_label(d / "example_seg_mr.nii.gz")
    value = 5 if (truth.array == 5).any() else int(np.unique(truth.array)[1])
    mid = largest_slice(truth.array, Axis.AXIAL, value)
    rng = SliceRange(max(0, mid - 2), min(image.grid.shape[2] - 1, mid + 2))
    seed = seed_on_slice(truth.array, Axis.AXIAL, mid, [value])
    result = propagator.propagate(image, seeds_from_label(seed, truth.grid, image.grid, Axis.AXIAL, rng), rng)
    assert result.grid.matches(image.grid) and result.label.shape == image.array.shape
    np.testing.assert_array_equal(result.label[..., mid] == value, seed[..., mid] == value)


def test_dicom_series_comes_back_on_its_grid(shared_data, propagator):
    d = shared_data / "totalsegmentator"
    image = load_volume(d / "example_ct_dicom")
    truth = load_label(d / "example_seg_dicom.nii.gz")
    assert image.modality == "CT" and image.array.shape == (512, 512, 20)
    assert not truth.grid.matches(image.grid)  # LAS label of an LPS series: same lattice, y flipped
    from sam2med.prompts import seed_on_image_grid

    on_grid = seed_on_image_grid(truth.array, truth.grid, image.grid)
    value = 5
    mid = largest_slice(on_grid, Axis.AXIAL, value)
    rng = SliceRange(max(0, mid - 1), min(19, mid + 1))
    seed = seed_on_slice(on_grid, Axis.AXIAL, mid, [value])
    # the seed in the label file's own (LAS) storage is accepted and re-indexed exactly
    seed_las = seed[:, ::-1, :]
    result = propagator.propagate(image, seeds_from_label(seed_las, truth.grid, image.grid, Axis.AXIAL, rng), rng)
    assert result.label.shape == (512, 512, 20)
    # issue 23: at 512 px the painted seed came back with its edges redrawn through the model's 64 px mask
    np.testing.assert_array_equal(result.label[..., mid] == value, seed[..., mid] == value)


def test_click_prompts_run_through_the_same_engine(ct, propagator):
    image, truth = ct
    mid = largest_slice(truth.array, Axis.AXIAL, 5)
    rows, cols = np.nonzero(to_slices(truth.array, Axis.AXIAL)[mid] == 5)
    prompt = ClickPrompt(mid, ((float(np.median(rows)), float(np.median(cols))),), (1,),
                         box_rc=(float(rows.min()), float(cols.min()), float(rows.max() + 1), float(cols.max() + 1)))
    rng = SliceRange(mid - 1, mid + 1)
    result = propagator.propagate(image, ClickSeeds(Axis.AXIAL, {5: [prompt]}), rng)
    assert result.label.shape == image.array.shape
    assert set(np.unique(result.label)) <= {0, 5}
    assert not result.label[..., : rng.start].any() and not result.label[..., rng.end + 1 :].any()
    click_scores = [s for s in result.scores[5] if s.slice == mid]
    assert len(click_scores) == 1 and click_scores[0].iou is not None  # clicks go through the decoder


def test_warm_up_makes_the_first_propagation_cached(ct, propagator):
    image, truth = ct
    mid = largest_slice(truth.array, Axis.AXIAL, 5)
    rng = SliceRange(mid, mid + 2)
    warm = propagator.warm_up(image, Axis.AXIAL, "bone", rng)
    assert (warm["request_hit_slices"], warm["request_miss_slices"]) == (0, len(rng))
    again = propagator.warm_up(image, Axis.AXIAL, "bone", rng)
    assert (again["request_hit_slices"], again["request_miss_slices"]) == (len(rng), 0)
    seeds = seeds_from_label(seed_on_slice(truth.array, Axis.AXIAL, mid, [5]), truth.grid, image.grid, Axis.AXIAL, rng)
    result = propagator.propagate(image, seeds, rng, window="bone")
    assert result.cache["request_miss_slices"] == 0


def test_no_hole_filling_fallback_without_the_extension(ct, propagator):
    """Without sam2's compiled extension the tracker must not call its hole filling (it raises and warns per frame)."""
    import warnings

    assert propagator.tracker.fill_hole_area == 0
    image, truth = ct
    mid = largest_slice(truth.array, Axis.AXIAL, 5)
    rng = SliceRange(mid, mid + 1)
    seeds = seeds_from_label(seed_on_slice(truth.array, Axis.AXIAL, mid, [5]), truth.grid, image.grid, Axis.AXIAL, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        propagator.propagate(image, seeds, rng)


def test_out_of_memory_is_one_clear_error_the_cache_is_trimmed_and_the_next_request_succeeds(ct, propagator, monkeypatch):
    """A request the device cannot hold (torch's OutOfMemoryError raised where the tracker allocates; a CUDA device is
    not lent here, scripts/gpu_check.sh measures the real one) gives the product's own one-line error, empties the
    feature cache, and the same process answers the next request."""
    import torch

    from sam2med.errors import DeviceError

    image, truth = ct
    mid = largest_slice(truth.array, Axis.AXIAL, 5)
    rng = SliceRange(mid - 1, mid + 1)
    seeds = seeds_from_label(seed_on_slice(truth.array, Axis.AXIAL, mid, [5]), truth.grid, image.grid, Axis.AXIAL, rng)
    before = propagator.propagate(image, seeds, rng, window="liver")
    assert propagator.cache.stats()["bytes"] > 0
    track = propagator._track

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(propagator, "_track", out_of_memory)
    with pytest.raises(DeviceError) as caught:
        propagator.propagate(image, seeds, rng, window="liver")
    message = str(caught.value)
    assert message.startswith(f"out of cpu memory tracking {len(rng)} slices at 256 px") and "\n" not in message
    assert "retry with a shorter slice range" in message
    assert propagator.cache.stats()["bytes"] == 0 and propagator.cache.stats()["entries"] == 0
    monkeypatch.setattr(propagator, "_track", track)
    after = propagator.propagate(image, seeds, rng, window="liver")
    assert after.cache["request_miss_slices"] == len(rng)  # encoded again: the cache had been emptied
    np.testing.assert_array_equal(after.label, before.label)
