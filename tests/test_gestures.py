"""Each gesture's conversion into SAM2's prompts (sam2med.gestures), by the positions it yields."""

from __future__ import annotations

import numpy as np
import pytest

from sam2med.errors import PromptError
from sam2med.geometry import Axis
from sam2med.gestures import (Gesture, box_of, gesture_slice, gestures_to_prompts, inside_clicks, polygon_fill,
                              stroke_clicks, stroke_pixels)
from sam2med.prompts import SlicePrompt, SlicePrompts

SHAPE = (40, 30, 20)  # x, y, z: an axial slice is 30 rows (y) x 40 columns (x)


def _distance_to_polyline(point, polyline) -> float:
    p = np.asarray(point, float)
    best = np.inf
    for a, b in zip(np.asarray(polyline, float)[:-1], np.asarray(polyline, float)[1:]):
        t = np.clip(np.dot(p - a, b - a) / max(np.dot(b - a, b - a), 1e-12), 0, 1)
        best = min(best, float(np.linalg.norm(p - (a + t * (b - a)))))
    return best


def test_click_is_one_point_with_its_sign_on_its_slice():
    gestures = [Gesture(3, "click", True, ((12.0, 7.0, 5.2),), 0), Gesture(3, "click", False, ((20.0, 9.0, 4.8),), 1)]
    prompts = gestures_to_prompts(gestures, Axis.AXIAL, SHAPE)
    prompt = prompts.prompts[3][5]
    assert prompt.points_rc == ((7.0, 12.0), (9.0, 20.0)) and prompt.point_labels == (1, 0)
    assert prompt.mask is None and prompt.box_rc is None and prompts.slices == [5]


def test_box_is_sam2s_box_from_corners_in_any_order_on_any_axis():
    assert box_of([(9.0, 30.0), (2.0, 4.0)]) == (2.0, 4.0, 9.0, 30.0)
    # sagittal (x fixed): rows are z, columns are y
    prompts = gestures_to_prompts([Gesture(1, "box", True, ((7.0, 25.0, 3.0), (7.0, 5.0, 15.0)))], Axis.SAGITTAL, SHAPE)
    assert prompts.prompts[1][7].box_rc == (3.0, 5.0, 15.0, 25.0)


def test_positive_scribble_clicks_lie_on_the_stroke_evenly_by_arc_length():
    stroke = [(5.0, 2.0), (5.0, 22.0), (25.0, 22.0)]  # an L, 40 px long
    clicks = stroke_clicks(stroke)
    assert len(clicks) == 8  # capped (40 px would give 11)
    assert clicks[0] == (5.0, 2.0) and clicks[-1] == (25.0, 22.0)  # both ends
    assert all(_distance_to_polyline(c, stroke) < 1e-9 for c in clicks)
    gaps = np.hypot(*np.diff(np.asarray(clicks), axis=0).T)
    # evenly by arc length: 40/7 px apart along the stroke; the straight gap is shorter only across the corner
    assert np.allclose(np.delete(gaps, 3), 40 / 7) and gaps[3] < 40 / 7
    assert stroke_clicks([(3.0, 3.0), (3.0, 5.0)]) == ((3.0, 4.0),)  # shorter than the spacing: its middle
    assert len(stroke_clicks([(0.0, 0.0), (0.0, 8.0)])) == 3  # one per 4 px, ends included


def test_negative_scribble_erases_exactly_the_dilated_stroke_from_the_slice_mask():
    full = np.ones((30, 40), dtype=bool)
    base = SlicePrompts(Axis.AXIAL, {2: {6: SlicePrompt(mask=full)}})
    gesture = Gesture(2, "scribble", False, ((5.0, 10.0, 6.0), (20.0, 10.0, 6.0)))  # row 10, columns 5..20
    prompt = gestures_to_prompts([gesture], Axis.AXIAL, SHAPE, base).prompts[2][6]
    expected = full.copy()
    expected[9:12, 4:22] = False  # the stroke's pixels and 1 px around them
    np.testing.assert_array_equal(prompt.mask, expected)
    assert set(prompt.point_labels) == {0} and all(r == 10.0 and 5 <= c <= 20 for r, c in prompt.points_rc)
    assert base.prompts[2][6].mask.all()  # the seed's prompts are not modified
    diagonal = stroke_pixels([(2.0, 2.0), (5.0, 5.0)], (10, 10), dilation=0)
    assert sorted(map(tuple, np.argwhere(diagonal))) == [(2, 2), (3, 3), (4, 4), (5, 5)]


def test_negative_scribble_on_a_slice_without_mask_is_background_clicks_only():
    prompts = gestures_to_prompts([Gesture(1, "click", True, ((3.0, 3.0, 2.0),)),
                                   Gesture(1, "scribble", False, ((1.0, 1.0, 2.0), (1.0, 9.0, 2.0)))], Axis.AXIAL, SHAPE)
    prompt = prompts.prompts[1][2]
    assert prompt.mask is None and prompt.point_labels == (1, 0, 0, 0)
    assert prompt.points_rc[1:] == ((1.0, 1.0), (5.0, 1.0), (9.0, 1.0))


def test_lasso_fill_is_the_polygon_interior():
    # a right triangle: pixel centres (r, c) with c >= 2, r <= 12 and r - c >= ... strictly inside
    triangle = [(2.0, 2.0), (12.0, 2.0), (12.0, 12.0)]
    fill = polygon_fill(triangle, (16, 16))
    rows, cols = np.mgrid[0:16, 0:16]
    strictly_inside = (cols > 2) & (rows < 12) & (rows > cols)
    on_edges = ((cols == 2) & (rows >= 2) & (rows <= 12)) | ((rows == 12) & (cols >= 2) & (cols <= 12)) | \
               ((rows == cols) & (rows >= 2) & (rows <= 12))
    assert (fill & ~(strictly_inside | on_edges)).sum() == 0  # nothing outside
    assert (strictly_inside & ~fill).sum() == 0  # everything strictly inside
    square = polygon_fill([(1.5, 1.5), (1.5, 5.5), (4.5, 5.5), (4.5, 1.5)], (8, 8))
    expected = np.zeros((8, 8), bool)
    expected[2:5, 2:6] = True
    np.testing.assert_array_equal(square, expected)


def test_positive_lasso_is_or_ed_into_the_mask_and_negative_lasso_removes_its_fill():
    mask = np.zeros((30, 40), bool)
    mask[0:3, 0:3] = True
    base = SlicePrompts(Axis.AXIAL, {1: {4: SlicePrompt(mask=mask)}})
    square = ((10.5, 10.5, 4.0), (20.5, 10.5, 4.0), (20.5, 15.5, 4.0), (10.5, 15.5, 4.0))  # x 11..20, y 11..15
    added = gestures_to_prompts([Gesture(1, "lasso", True, square)], Axis.AXIAL, SHAPE, base).prompts[1][4]
    expected = mask.copy()
    expected[11:16, 11:21] = True
    np.testing.assert_array_equal(added.mask, expected)
    assert added.points_rc == ()  # a mask-only slice: it comes back as drawn
    hole = ((12.5, 12.5, 4.0), (14.5, 12.5, 4.0), (14.5, 14.5, 4.0), (12.5, 14.5, 4.0))
    both = gestures_to_prompts([Gesture(1, "lasso", True, square), Gesture(1, "lasso", False, hole)], Axis.AXIAL, SHAPE,
                               base).prompts[1][4]
    expected[13:15, 13:15] = False
    np.testing.assert_array_equal(both.mask, expected)


def test_negative_lasso_without_a_mask_is_background_clicks_inside_it():
    fill = polygon_fill([(2.0, 2.0), (2.0, 20.0), (14.0, 20.0), (14.0, 2.0)], (30, 40))
    clicks = inside_clicks(fill)
    assert len(clicks) == 8 and len(set(clicks)) == 8 and all(fill[int(r), int(c)] for r, c in clicks)
    assert {int(r) for r, _ in clicks} != {int(clicks[0][0])}  # spread over rows, not one line
    prompts = gestures_to_prompts([Gesture(1, "click", True, ((30.0, 25.0, 0.0),)),
                                   Gesture(1, "lasso", False, ((2.0, 2.0, 0.0), (20.0, 2.0, 0.0), (20.0, 14.0, 0.0), (2.0, 14.0, 0.0)))],
                                  Axis.AXIAL, SHAPE)
    prompt = prompts.prompts[1][0]
    assert prompt.mask is None and prompt.point_labels == (1,) + (0,) * 8
    assert all(2 <= r <= 14 and 2 <= c <= 20 for r, c in prompt.points_rc[1:])
    assert (2.0, 2.0) not in prompt.points_rc  # not the contour's first pixel


@pytest.mark.parametrize("gesture, message", [
    (Gesture(1, "scribble", True, ((1.0, 1.0, 2.0), (5.0, 1.0, 3.4)), 4), "prompt 4: its points lie on axial slices 2..3"),
    (Gesture(1, "box", False, ((1.0, 1.0, 2.0), (5.0, 5.0, 2.0)), 0), "positive only"),
    (Gesture(1, "box", True, ((1.0, 1.0, 2.0), (5.0, 1.0, 2.0)), 2), r"prompt 2 \(label 1, slice 2\): the box .* is empty"),
    (Gesture(1, "lasso", True, ((1.0, 1.0, 2.0), (5.0, 1.0, 2.0)), 1), "prompt 1: a lasso needs at least 3 points"),
    (Gesture(1, "click", True, ((1.0, 1.0, 2.0), (5.0, 1.0, 2.0)), 1), "prompt 1: a click has 1 point"),
    (Gesture(1, "click", True, ((40.0, 1.0, 2.0),), 3), "prompt 3: point .* outside the image"),
    (Gesture(1, "tap", True, ((4.0, 1.0, 2.0),), 3), "prompt 3: kind must be"),
])
def test_bad_gestures_are_one_line_errors_naming_the_prompt(gesture, message):
    with pytest.raises(PromptError, match=message):
        gestures_to_prompts([gesture], Axis.AXIAL, SHAPE)


def test_a_slice_is_where_the_points_round_to():
    assert gesture_slice(Gesture(1, "scribble", True, ((1.0, 1.0, 2.6), (5.0, 1.0, 3.4))), Axis.AXIAL, SHAPE)[0] == 3
