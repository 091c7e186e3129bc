"""The uncertainty formula and review slices (sam2med.monailabel.uncertainty) on synthetic per-slice scores."""

from __future__ import annotations

import pytest

from sam2med.monailabel.uncertainty import image_uncertainty, label_uncertainty, review_slices, score_record, slice_confidence


def _s(slice_, obj, iou, area, seed=False):
    return {"slice": slice_, "object_score": obj, "iou": iou, "area": area, "seed": seed}


STEADY = [_s(10, 1.0, None, 100, seed=True), _s(11, 0.9, 0.9, 95), _s(12, 0.9, 0.8, 90)]
# slice 14 loses the object (flip) and its area collapses (jump); slice 15 finds it again (flip, jump)
SHAKY = [_s(12, 1.0, None, 200, seed=True), _s(13, 0.8, 0.5, 190), _s(14, 0.2, 0.3, 10), _s(15, 0.9, 0.6, 180)]


def test_confidence_is_object_score_times_iou():
    assert slice_confidence(_s(1, 0.8, 0.5, 3)) == pytest.approx(0.4)
    assert slice_confidence(_s(1, 0.8, None, 3)) == pytest.approx(0.8)


def test_label_uncertainty_by_the_documented_formula():
    # steady: mean(1 - .81, 1 - .72) = 0.235, no flip, no jump (95 vs 100 and 90 vs 95 change < half)
    assert label_uncertainty(STEADY) == pytest.approx(0.235)
    # shaky: confidences .4, .06, .54 -> mean doubt (0.6 + 0.94 + 0.46) / 3; flips on 14 and 15, jumps on 14 and 15
    expected = (0.6 + 0.94 + 0.46) / 3 + 0.5 * (2 + 2) / 3
    assert label_uncertainty(SHAKY) == pytest.approx(round(expected, 4))
    assert label_uncertainty([_s(3, 1.0, None, 5, seed=True)]) is None  # seeds are given, not predicted


def test_image_uncertainty_is_the_least_certain_label():
    assert image_uncertainty({"1": STEADY, "5": SHAKY}) == label_uncertainty(SHAKY)
    assert image_uncertainty({"1": STEADY}) == label_uncertainty(STEADY)
    assert image_uncertainty({}) is None


def test_review_slices_rank_flips_jumps_and_low_confidence_first():
    slices = review_slices({"1": STEADY, "5": SHAKY}, count=3)
    assert [(r["slice"], r["label"]) for r in slices] == [(14, 5), (15, 5), (13, 5)]
    assert slices[0]["why"] == ["low confidence", "object score flip", "area jump"]
    assert slices[1]["why"] == ["object score flip", "area jump"]
    assert slices[2]["why"] == ["low confidence"] and slices[2]["priority"] == pytest.approx(0.6)
    every = review_slices({"1": STEADY, "5": SHAKY}, count=10)
    assert sorted((r["label"], r["slice"]) for r in every) == [(1, 11), (1, 12), (5, 13), (5, 14), (5, 15)]  # never a seed


def test_score_record_keeps_the_scores_and_model_version():
    record = score_record({5: SHAKY}, "tiny:abc", "axial", 123)
    assert record["model_version"] == "tiny:abc" and record["ts"] == 123 and record["axis"] == "axial"
    assert record["labels"]["5"][2] == _s(14, 0.2, 0.3, 10)
    assert record["uncertainty"] == label_uncertainty(SHAKY) and record["review_slices"][0]["slice"] == 14
