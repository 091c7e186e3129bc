"""Seed selection of each protocol and the slice range handed to the propagator."""

from __future__ import annotations

import numpy as np
import pytest

from sam2med.errors import PromptError
from sam2med.evaluation.protocols import Protocol, RangeSpec, make_prompt
from sam2med.geometry import Axis
from sam2med.prompts import ClickSeeds, SeedMasks, SliceRange


def growing_target(shape=(30, 30, 14), present=range(3, 10), largest=7, gap=()) -> np.ndarray:
    """Squares on slices `present` (z), largest on `largest`, absent on `gap`."""
    truth = np.zeros(shape, dtype=bool)
    for z in present:
        if z in gap:
            continue
        half = 8 if z == largest else 2 + (z % 3)
        truth[15 - half : 15 + half, 15 - half : 15 + half, z] = True
    return truth


def prompt(truth, text, axis=Axis.AXIAL, seed=0):
    return make_prompt(truth, 4, axis, Protocol.parse(text), np.random.default_rng(seed))


def test_largest_slice_seeds_the_truth_on_the_largest_slice():
    truth = growing_target()
    p = prompt(truth, "largest-slice")
    assert p.seed_slices == [7] and p.extent == SliceRange(3, 9) and p.slices_with_target == 7
    assert isinstance(p.seeds, SeedMasks) and p.seeds.labels == [4]
    np.testing.assert_array_equal(p.seeds.masks[4][7], truth[:, :, 7].T)  # axial slices are (y, x)


def test_center_slice_and_its_fallback_on_a_gap():
    assert prompt(growing_target(), "center-slice").seed_slices == [6]
    # the centre (6) is empty: the nearest slice holding the target, the lower one on a tie
    assert prompt(growing_target(gap=(6,)), "center-slice").seed_slices == [5]


def test_multi_slice_spreads_seeds_over_the_extent():
    assert prompt(growing_target(), "multi-slice:3").seed_slices == [4, 6, 8]  # centres of thirds of 3..9
    assert prompt(growing_target(), "multi-slice:1").seed_slices == [6]
    assert prompt(growing_target(), "multi-slice:20").seed_slices == list(range(3, 10))  # capped, de-duplicated


def test_clicks_lie_inside_the_target_with_its_box():
    truth = growing_target()
    p = prompt(truth, "clicks:3")
    assert isinstance(p.seeds, ClickSeeds) and p.seed_slices == [7]
    (click,) = p.seeds.prompts[4]
    mask = truth[:, :, 7].T
    assert len(click.points_rc) == 3 and click.point_labels == (1, 1, 1)
    assert all(mask[int(r), int(c)] for r, c in click.points_rc)
    assert click.box_rc == (7.0, 7.0, 23.0, 23.0)  # rows/cols 7..22, end exclusive
    assert prompt(truth, "clicks:3").seeds.prompts[4] == p.seeds.prompts[4]  # same seed, same clicks
    assert prompt(truth, "clicks:3", seed=1).seeds.prompts[4] != p.seeds.prompts[4]


def test_other_axis_uses_that_axis_extent():
    truth = growing_target()
    p = prompt(truth, "largest-slice", axis=Axis.SAGITTAL)
    assert p.extent == SliceRange(7, 22)  # x extent of the largest square
    assert p.seeds.axis == Axis.SAGITTAL


def test_absent_target_is_a_prompt_error():
    with pytest.raises(PromptError, match="absent"):
        prompt(np.zeros((5, 5, 5), dtype=bool), "largest-slice")


@pytest.mark.parametrize("text", ["biggest", "multi-slice:0", "clicks:x", "largest-slice:2", "clicks:-1"])
def test_bad_protocols_are_rejected(text):
    with pytest.raises(PromptError):
        Protocol.parse(text)


def test_protocol_text_round_trips():
    assert str(Protocol.parse("Multi-Slice:4")) == "multi-slice:4"
    assert str(Protocol.parse("clicks")) == "clicks:1"
    assert str(Protocol.parse("largest-slice")) == "largest-slice"


def test_ranges():
    extent = SliceRange(3, 9)
    assert RangeSpec.parse("truth").resolve(extent, 14) == SliceRange(3, 9)
    assert RangeSpec.parse("full").resolve(extent, 14) == SliceRange(0, 13)
    assert RangeSpec.parse("margin:2").resolve(extent, 14) == SliceRange(1, 11)
    assert RangeSpec.parse("margin:5").resolve(extent, 12) == SliceRange(0, 11)  # clipped to the volume
    assert str(RangeSpec.parse("margin:2")) == "margin:2"
    assert RangeSpec.parse("auto").resolve(extent, 14) == SliceRange(0, 13) and str(RangeSpec.parse("Auto")) == "auto"
    for bad in ("half", "margin:-1", "margin:x", "truth:3"):
        with pytest.raises(PromptError):
            RangeSpec.parse(bad)
