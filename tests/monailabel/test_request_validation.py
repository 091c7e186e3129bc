"""Request values a careless or hostile client sends (issue 16): every one parses or is a one-line 4xx, before any work.

Property-based (hypothesis): any JSON value in any request field either parses to something inside the
image or raises the app's own error; nothing else escapes (no TypeError, OverflowError, no huge loops).
"""

from __future__ import annotations

import json
import time

import pytest
from fastapi import HTTPException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sam2med.errors import PromptError, Sam2MedError
from sam2med.geometry import Grid
from sam2med.monailabel.http import status_of
from sam2med.monailabel.params import click_seeds, parse_points, parse_propagate, parse_slice_range
from sam2med.monailabel.http import parse_request_params

NAMES = {"spleen": 1, "liver": 5}
GRID = Grid(shape=(40, 30, 20), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["nan", "inf", "-inf", "1e400", "3,7", "3-7", "all", "\u00b2", "\u0663", "true", "1e6"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=7) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=12)
FIELDS = ["slice_range", "axis", "window", "labels", "seed_tag", "sam2_model", "result_extension", "result_dtype",
          "result_compress", "label_value", "foreground", "background", "roi", "prompts", "crop_to_change"]


@pytest.mark.parametrize("request_, message", [
    ({"slice_range": True}, "two slice indices"),
    ({"slice_range": {"a": 1}}, "two slice indices"),
    ({"slice_range": [0, float("inf")]}, "integer"),
    ({"slice_range": ["\u00b2", "3"]}, "integer"),
    ({"window": "nan,400"}, "unknown window"),
    ({"window": "40,inf"}, "unknown window"),
    ({"window": "percentile:nan,99"}, "unknown window"),
    ({"window": ["x"]}, "unknown window"),
    ({"window": {"level": 40}}, "window must be"),
    ({"axis": "\u00b2"}, "unknown axis"),
    ({"labels": [70000, 2**40]}, "largest supported label value"),
])
def test_values_that_answered_500_are_prompt_errors(request_, message):
    """Issue 16.5: bool/dict slice ranges, non-finite windows, odd digits were TypeErrors/ValueErrors (HTTP 500)."""
    with pytest.raises(PromptError, match=message):
        parse_slice_range(parse_propagate(request_, NAMES).slice_range, 20)


@pytest.mark.parametrize("roi", [
    [0, 0, 5, 5, 0, float("inf")], [0, 0, 5, 5, float("nan"), 3], ["Infinity", 0, 5, 5, 0, 3], [0, 0, 5, 5, True, 3],
])
def test_non_finite_roi_and_points_are_prompt_errors(roi):
    with pytest.raises(PromptError, match="non-finite|non-number"):
        parse_points({"roi": roi}, NAMES)
    with pytest.raises(PromptError, match="non-finite|non-number"):
        parse_points({"foreground": [[roi[0], roi[4], roi[5]]]}, NAMES)


def test_huge_roi_is_refused_before_anything_is_built():
    """Issue 16.6: z1 = 1e6 built a million per-slice entries first (7 s, 0.55 GB); 1e12 now fails at once."""
    start = time.perf_counter()
    for roi in ([0, 0, 5, 5, 0, 1e12], [0, 0, 5, 5, -1e12, 3], [0, 0, 1e9, 5, 0, 3], [0, 0, 5, 5, 0, 21]):
        with pytest.raises(PromptError, match="outside the image"):
            click_seeds(parse_points({"roi": roi}, NAMES), GRID)
    assert time.perf_counter() - start < 0.5
    seeds = click_seeds(parse_points({"roi": [2, 3, 10, 12, 18, 20], "roi_order": "x0,y0,x1,y1,z0,z1"}, NAMES),
                        GRID)  # the last slices, end exclusive
    assert [p.slice_index for p in seeds.prompts[1]] == [18, 19]
    assert seeds.prompts[1][0].box_rc == (3.0, 2.0, 12.0, 10.0)
    with pytest.raises(PromptError, match="at most 1000"):
        parse_points({"foreground": [[1, 1, 1]] * 1001}, NAMES)


@pytest.mark.parametrize("text, status, message", [
    ('{"window": NaN}', 400, "non-finite number NaN"),
    ('{"roi": [0, 0, 5, 5, 0, Infinity]}', 400, "non-finite number Infinity"),
    ('{"roi": [0, 0, 5, 5, 0, 1e400]}', 400, "too large to be finite"),
    pytest.param('{"labels": [' + "9" * 30 + "]}", 400, "too large", id="30-digit-integer"),
    ("[1, 2]", 400, "JSON object"),
    ("{", 400, "not valid JSON"),
    pytest.param("[" * 600_000 + "]" * 600_000, 413, "characters", id="over-1M-characters"),
    pytest.param("[" * 20_000 + "]" * 20_000, 400, "nested too deeply", id="nested-20000-deep"),
])
def test_request_params_are_checked_json(text, status, message):
    with pytest.raises(HTTPException) as caught:
        parse_request_params(text)
    assert caught.value.status_code == status and message in caught.value.detail
    assert "\n" not in caught.value.detail


def test_request_params_drop_what_the_server_sets():
    # a "label" text is 3D Slicer's clicked segment name: kept as `segment`, never read as the seed file
    assert parse_request_params('{"image": "/etc/passwd", "label": "/tmp/x", "session": {}, "axis": "axial"}') == \
        {"axis": "axial", "segment": "/tmp/x"}
    assert parse_request_params("") == {}


def _is_app_error(err: BaseException) -> bool:
    return isinstance(err, Sam2MedError) and 400 <= status_of(err) < 500 and "\n" not in str(err)


@EXAMPLES
@given(value=JSON, num_slices=st.integers(min_value=1, max_value=50))
def test_any_slice_range_parses_inside_the_volume_or_is_a_prompt_error(value, num_slices):
    try:
        rng = parse_slice_range(value, num_slices)
    except Exception as err:  # noqa: BLE001 - the property: nothing but the app's own 4xx error
        assert _is_app_error(err), repr(err)
        return
    assert 0 <= rng.start <= rng.end < num_slices


@EXAMPLES
@given(request_=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6))
def test_any_propagate_request_parses_or_is_a_prompt_error(request_):
    try:
        params = parse_propagate(request_, NAMES)
        parse_slice_range(params.slice_range, 20)
    except Exception as err:  # noqa: BLE001
        assert _is_app_error(err), repr(err)


@EXAMPLES
@given(request_=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6),
       roi=st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**40), 2**40), min_size=6, max_size=6),
       point=st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**40), 2**40), min_size=3, max_size=3))
def test_any_points_request_stays_inside_the_image_or_is_a_prompt_error(request_, roi, point):
    for candidate in (request_, {**request_, "roi": roi}, {**request_, "foreground": [point]}):
        try:
            seeds = click_seeds(parse_points(candidate, NAMES), GRID)
        except Exception as err:  # noqa: BLE001
            assert _is_app_error(err), repr(err)
            continue
        prompts = [p for per_label in seeds.prompts.values() for p in per_label]
        assert prompts and all(0 <= p.slice_index < GRID.shape[2] for p in prompts)
        assert all(0 < label <= 2**32 - 1 for label in seeds.prompts)


@EXAMPLES
@given(value=JSON)
def test_any_params_text_parses_to_an_object_or_is_a_4xx(value):
    text = json.dumps(value) if not isinstance(value, dict) else json.dumps({"slice_range": value, **value})
    try:
        parsed = parse_request_params(text)
    except HTTPException as err:
        assert 400 <= err.status_code < 500 and "\n" not in err.detail
        return
    assert isinstance(parsed, dict) and not {"image", "label", "session"} & set(parsed)


NUMBER = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**40), 2**40) | st.floats(-1, 45)
PROMPT = st.fixed_dictionaries({"label": st.sampled_from([1, 5, "liver", "kidney", 0, -3, None, "2", True]),
                                "kind": st.sampled_from(["click", "box", "scribble", "lasso", "tap", 3]),
                                "positive": st.sampled_from([True, False, "no", None, "maybe"]),
                                "points": st.lists(st.lists(NUMBER, min_size=2, max_size=4), max_size=6) | JSON})


@EXAMPLES
@given(prompts=st.lists(PROMPT, max_size=4), axis=st.sampled_from(["axial", "coronal", "sagittal"]))
def test_any_prompts_become_slice_prompts_inside_the_image_or_a_prompt_error(prompts, axis):
    from sam2med.gestures import gestures_to_prompts

    try:
        params = parse_propagate({"prompts": prompts, "axis": axis}, NAMES)
        result = gestures_to_prompts(params.prompts, params.axis, GRID.shape)
    except Exception as err:  # noqa: BLE001
        assert _is_app_error(err), repr(err)
        return
    assert all(0 <= s < GRID.num_slices(result.axis) for s in result.slices)
