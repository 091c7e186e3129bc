"""A mask and clicks on the same slice both condition the run (SlicePrompt), through the real tracker.

Random weights: the assertions compare runs that differ by one prompt, never segmentation quality.
"""

import numpy as np
import pytest

from sam2med.geometry import Axis, to_slices
from sam2med.prompts import SlicePrompt, SlicePrompts, SliceRange

from tests.engine.test_propagator import ct  # noqa: F401  (ct: the real CT and its labels, a fixture)

pytestmark = pytest.mark.integration


def test_mask_and_click_on_one_slice_both_condition_the_run(ct, propagator):
    image, truth = ct
    axis = Axis.AXIAL
    slices = to_slices(truth.array, axis)
    s = int(np.argmax((slices == 5).sum(axis=(1, 2))))  # the liver's largest slice
    mask = slices[s] == 5
    rows, cols = np.nonzero(~mask)
    far = np.argmax(np.hypot(rows - np.nonzero(mask)[0].mean(), cols - np.nonzero(mask)[1].mean()))
    click = ((float(rows[far]), float(cols[far])),)  # a positive click far outside the mask
    rng = SliceRange(s - 1, s + 1)

    def run(prompt: SlicePrompt) -> tuple[np.ndarray, dict]:
        result = propagator.propagate(image, SlicePrompts(axis, {5: {s: prompt}}), rng)
        return to_slices(result.label, axis) == 5, result.kept_slices

    mask_only, kept = run(SlicePrompt(mask=mask))
    both, kept_both = run(SlicePrompt(mask=mask, points_rc=click, point_labels=(1,)))
    click_only, _ = run(SlicePrompt(points_rc=click, point_labels=(1,)))
    other_mask = np.zeros_like(mask)
    other_mask[: mask.shape[0] // 3, : mask.shape[1] // 3] = True
    other_and_click, _ = run(SlicePrompt(mask=other_mask, points_rc=click, point_labels=(1,)))

    np.testing.assert_array_equal(mask_only[s], mask)  # a mask alone comes back as drawn ...
    assert kept == {5: [s]} and kept_both == {}  # ... a mask with clicks is SAM2's refinement, not the drawing
    assert (both[s] != mask_only[s]).any(), "the click did not change the slice"
    assert (both[s] != click_only[s]).any(), "the mask did not condition the clicked slice"
    assert (both[s] != other_and_click[s]).any(), "another mask with the same click gave the same slice"
    assert (both[s + 1] != mask_only[s + 1]).any(), "the click did not reach the propagated slices"


def test_clicks_are_kept_on_their_slice_whatever_the_model_predicts(ct, propagator):
    image, truth = ct
    axis = Axis.AXIAL
    slices = to_slices(truth.array, axis)
    s = int(np.argmax((slices == 5).sum(axis=(1, 2))))
    mask = slices[s] == 5
    rows, cols = np.nonzero(mask)
    inside = (float(rows[len(rows) // 2]), float(cols[len(cols) // 2]))  # a pixel of the drawn liver, clicked away
    outside = (2.0, 3.0)  # a corner pixel, clicked in
    prompt = SlicePrompt(mask=mask, points_rc=(inside, outside), point_labels=(0, 1))
    result = propagator.propagate(image, SlicePrompts(axis, {5: {s: prompt}}), SliceRange(s - 1, s + 1))
    label = to_slices(result.label, axis)
    assert label[s][int(inside[0]), int(inside[1])] == 0 and label[s][2, 3] == 5
