"""The weight-free references: `copy` is exact where it should be, `registration` follows moving anatomy."""

from __future__ import annotations

import numpy as np
import pytest

from eval_synthetic import moving_disc_case
from sam2med.evaluation.metrics import compute_metrics
from sam2med.evaluation.propagators import CopyPropagator, RegistrationPropagator, make_propagator
from sam2med.evaluation.propagators.base import nearest_seed_segments, seed_masks_2d
from sam2med.evaluation.protocols import Protocol, make_prompt
from sam2med.errors import PromptError
from sam2med.geometry import Axis
from sam2med.prompts import ClickPrompt, ClickSeeds, SliceRange


@pytest.fixture(scope="module")
def disc_case():
    return moving_disc_case()


def disc_prompt(label, protocol="center-slice"):
    return make_prompt(label == 1, 1, Axis.AXIAL, Protocol.parse(protocol), np.random.default_rng(0))


def test_segments_split_between_seeds():
    assert nearest_seed_segments([5], SliceRange(0, 9)) == {5: (0, 9)}
    assert nearest_seed_segments([6, 2], SliceRange(0, 9)) == {2: (0, 4), 6: (5, 9)}  # tie (4) to the lower seed


def test_copy_fills_exactly_the_range(disc_case):
    volume, label = disc_case
    p = disc_prompt(label)
    pred = CopyPropagator().propagate(volume, p.seeds, SliceRange(2, 6))
    seed = label[:, :, p.seed_slices[0]] == 1
    for z in range(volume.grid.shape[2]):
        np.testing.assert_array_equal(pred[:, :, z], seed if 2 <= z <= 6 else np.zeros_like(seed))


def test_copy_uses_the_nearest_seed(disc_case):
    volume, label = disc_case
    p = disc_prompt(label, "multi-slice:2")
    first, second = p.seed_slices
    pred = CopyPropagator().propagate(volume, p.seeds, p.extent)
    np.testing.assert_array_equal(pred[:, :, p.extent.start], label[:, :, first] == 1)
    np.testing.assert_array_equal(pred[:, :, p.extent.end], label[:, :, second] == 1)


def test_registration_tracks_a_moving_disc_better_than_copy(disc_case):
    volume, label = disc_case
    truth = label == 1
    p = disc_prompt(label)
    copy = compute_metrics(CopyPropagator().propagate(volume, p.seeds, p.extent), truth, volume.grid.spacing)
    reg_pred = RegistrationPropagator().propagate(volume, p.seeds, p.extent)
    reg = compute_metrics(reg_pred, truth, volume.grid.spacing)
    assert copy.dice < 0.75  # the disc moves 6 px (most of its radius) each way from the seed: copying is poor
    assert reg.dice > 0.85 and reg.dice > copy.dice + 0.15
    assert not reg_pred[:, :, [0, 8]].any()  # nothing outside the range
    np.testing.assert_array_equal(reg_pred[:, :, p.seed_slices[0]], truth[:, :, p.seed_slices[0]])  # seed kept


def test_references_use_the_box_of_a_click_prompt(disc_case):
    volume, _ = disc_case
    seeds = ClickSeeds(Axis.AXIAL, {3: [ClickPrompt(4, ((10.0, 12.0),), (1,), (8.0, 10.0, 14.0, 20.0))]})
    masks = seed_masks_2d(seeds, volume)
    assert list(masks) == [4] and masks[4].sum() == 6 * 10 and masks[4][8:14, 10:20].all()
    pred = CopyPropagator().propagate(volume, seeds, SliceRange(3, 5))
    assert pred.sum() == 3 * 60


def test_unknown_propagator_is_rejected():
    with pytest.raises(PromptError, match="unknown propagator"):
        make_propagator("magic")
