"""Tracking policies (auto range, selective memory): the rules alone, then through the real tracker.

Random weights give no meaningful scores, so the tracker tests drive the scores with the propagator's
test-only `frame_hook`: sam2 really tracks every slice, the hook then sets the object score / IoU
(and the mask) that the policies read.
"""

import math

import numpy as np
import pytest
import torch

from sam2med.engine.policies import (BOUND_REACHED, OBJECT_ABSENT, RANGE_END, VOLUME_END, AutoRange, LabelStops,
                                     MemoryCandidate, SelectiveMemory, parse_memory, select_memory)
from sam2med.errors import PromptError
from sam2med.geometry import Axis, to_slices
from sam2med.io import load_label, load_volume
from sam2med.prompts import SliceRange, seeds_from_label

from tests.engine.test_propagator import largest_slice, seed_on_slice


# --- the rules alone -------------------------------------------------------------------------------

def test_stops_after_k_consecutive_absent_slices_and_an_absent_slice_resets_nothing_kept():
    stops = LabelStops.start([10], 0, 29, 30, AutoRange(absent_slices=2, min_object_score=0.5))
    for s, score, area in [(11, 0.9, 5), (12, 0.2, 5), (13, 0.8, 5), (14, 0.9, 0), (15, 0.1, 9)]:
        assert stops.active(s)
        stops.record(s, score, area)
    assert not stops.active(16) and stops.active(9)
    assert stops.directions["forward"].to_json() == {"reason": OBJECT_ABSENT, "stopped_at": 15, "last_present": 13}
    for s in (9, 8, 7):
        stops.record(s, 0.9, 3)
    assert stops.directions["backward"].reason == "" and stops.active(6)
    assert stops.kept == (7, 13)


def test_range_volume_end_and_bound_reasons():
    rule = AutoRange(absent_slices=3, max_slices=4)
    stops = LabelStops.start([10], 8, 29, 30, rule)
    assert (stops.low, stops.high) == (8, 14)
    for s in (11, 12, 13, 14):
        stops.record(s, 0.9, 1)
    for s in (9, 8):
        stops.record(s, 0.9, 1)
    assert stops.to_json() == {"forward": {"reason": BOUND_REACHED, "stopped_at": 14, "last_present": 14},
                               "backward": {"reason": RANGE_END, "stopped_at": 8, "last_present": 8}}
    at_end = LabelStops.start([29, 27], 0, 29, 30, AutoRange())
    at_end.close()
    assert at_end.directions["forward"].to_json() == {"reason": VOLUME_END, "stopped_at": 29, "last_present": 29}
    assert at_end.active(28) and at_end.direction_of(28) is None  # between seeds: never counted
    # another label's first seed (10) below this label's own range (20..29): its backward end is its range's start
    inside = LabelStops.start([25, 10], 20, 29, 30, AutoRange())
    assert not inside.active(19) and inside.active(20) and inside.direction_of(20) is None
    inside.close()
    assert inside.directions["backward"].to_json() == {"reason": RANGE_END, "stopped_at": 20, "last_present": 20}


def test_auto_range_and_memory_options_are_checked():
    with pytest.raises(PromptError, match="at least 1"):
        AutoRange(absent_slices=0)
    with pytest.raises(PromptError, match="0..1"):
        AutoRange(min_object_score=1.5)
    with pytest.raises(PromptError, match="recent, selective"):
        parse_memory("oldest")
    assert parse_memory("recent") is None and parse_memory(None) is None
    assert parse_memory("Selective") == SelectiveMemory()


def _candidate(frame: int, confidence: float, direction: list[float]) -> MemoryCandidate:
    vector = torch.tensor(direction, dtype=torch.float32)
    return MemoryCandidate(frame, frame, confidence, vector / vector.norm(), {})


def test_selection_by_confidence_then_dissimilarity():
    a, twin, other, weak = (_candidate(1, 0.9, [1, 0]), _candidate(2, 0.85, [1, 0]), _candidate(3, 0.5, [0, 1]),
                            _candidate(4, 0.2, [1, 1]))
    # confidence alone: the two most confident, in pick order
    assert [c.frame for c in select_memory([a, twin, other, weak], 2, 0.0)] == [1, 2]
    # the twin of the first pick loses 1.0 x cosine 1: 0.85 - 1 < 0.5 - 0
    assert [c.frame for c in select_memory([a, twin, other, weak], 2, 1.0)] == [1, 3]
    # third pick: twin 0.85 - 1 = -0.15, weak 0.2 - cos45 = -0.507 -> twin
    assert [c.frame for c in select_memory([a, twin, other, weak], 3, 1.0)] == [1, 3, 2]
    # ties go to the frame tracked later; never more than asked, never a frame twice
    tie = [_candidate(5, 0.5, [1, 0]), _candidate(6, 0.5, [0, 1])]
    assert [c.frame for c in select_memory(tie, 1, 0.0)] == [6]
    assert [c.frame for c in select_memory(tie, 6, 0.0)] == [6, 5]


# --- through the real tracker ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ct(shared_data):
    d = shared_data / "totalsegmentator"
    return load_volume(d / "example_ct_sm.nii.gz"), load_label(d / "example_seg.nii.gz")


@pytest.fixture
def hooked(propagator):
    yield propagator
    propagator.frame_hook = None


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def scripted_hook(plan: dict[tuple[int, int], tuple[float, float | None, bool]]):
    """plan[(slice, label)] = (object score, iou or None to keep sam2's, mask over the whole slice or empty)."""
    def hook(slice_index, label, out, mask):
        score, iou, full = plan[(slice_index, label)]
        out["object_score_logits"] = torch.full_like(out["object_score_logits"], _logit(score))
        if iou is not None:
            out["iou"] = iou
        return torch.full_like(mask, 10.0 if full else -1024.0)
    return hook


@pytest.mark.integration
def test_auto_range_stops_each_direction_and_encodes_nothing_beyond(ct, hooked):
    image, truth = ct
    mid = 12  # the liver spans all 30 axial slices
    seeds = seeds_from_label(seed_on_slice(truth.array, Axis.AXIAL, mid, [5]), truth.grid, image.grid, Axis.AXIAL,
                             SliceRange(0, 29))
    present, absent = (0.9, None, True), (0.2, None, True)  # an absent slice by its score, its mask still full
    plan = {(mid + 1, 5): present, (mid + 2, 5): present, (mid + 3, 5): absent, (mid + 4, 5): present,
            (mid + 5, 5): absent, (mid + 6, 5): absent,
            (mid - 1, 5): present, (mid - 2, 5): absent, (mid - 3, 5): absent}
    hooked.frame_hook = scripted_hook(plan)  # a slice not in the plan raises KeyError: it must not be tracked
    result = hooked.propagate(image, seeds, None, window="40,380", auto=AutoRange(absent_slices=2))

    assert [s.slice for s in result.scores[5]] == list(range(mid - 3, mid + 7))
    written = [int(s) for s in np.flatnonzero((to_slices(result.label, Axis.AXIAL) == 5).any(axis=(1, 2)))]
    assert written == list(range(mid - 1, mid + 5))  # the single absent slice mid+3 is kept, the stopping runs are not
    assert result.cache["request_miss_slices"] == 10 and result.cache["request_hit_slices"] == 0
    report = result.to_json()
    assert report["auto_range"] == {"mode": "auto", "absent_slices": 2, "min_object_score": 0.5, "max_slices": None}
    assert report["labels"]["5"]["auto_range"] == {
        "forward": {"reason": OBJECT_ABSENT, "stopped_at": mid + 6, "last_present": mid + 4},
        "backward": {"reason": OBJECT_ABSENT, "stopped_at": mid - 3, "last_present": mid - 1}}
    assert report["slice_range"] == [mid - 3, mid + 6] and report["slices_processed"] == 10
    assert [s["area"] for s in report["labels"]["5"]["slices"]][-2:] == [0, 0]


@pytest.mark.integration
def test_auto_range_multi_label_each_stops_on_its_own(ct, hooked):
    image, truth = ct
    mid = largest_slice(truth.array, Axis.AXIAL, 5)
    seeds = seeds_from_label(seed_on_slice(truth.array, Axis.AXIAL, mid, [5, 1]), truth.grid, image.grid, Axis.AXIAL,
                             SliceRange(0, 29))
    plan = {}
    for step in range(1, 4):
        for s in (mid + step, mid - step):
            plan[(s, 5)] = (0.95, None, True)
            plan[(s, 1)] = (0.95, None, False)  # an empty mask is absent whatever the score
    hooked.frame_hook = scripted_hook(plan)
    result = hooked.propagate(image, seeds, SliceRange(mid - 2, 29), window="40,380",
                              auto=AutoRange(absent_slices=2, max_slices=3))
    stops = result.to_json()["labels"]
    assert stops["5"]["auto_range"] == {"forward": {"reason": BOUND_REACHED, "stopped_at": mid + 3, "last_present": mid + 3},
                                        "backward": {"reason": RANGE_END, "stopped_at": mid - 2, "last_present": mid - 2}}
    assert stops["1"]["auto_range"] == {"forward": {"reason": OBJECT_ABSENT, "stopped_at": mid + 2, "last_present": mid},
                                        "backward": {"reason": OBJECT_ABSENT, "stopped_at": mid - 2, "last_present": mid}}
    assert [s.slice for s in result.scores[1]] == list(range(mid - 2, mid + 3))
    assert [s.slice for s in result.scores[5]] == list(range(mid - 2, mid + 4))
    out = to_slices(result.label, Axis.AXIAL)
    assert not out[mid + 4:].any() and not out[: mid - 2].any()
    assert (out[mid + 3] == 5).all() and not (out[mid + 1] == 1).any()
    assert result.label_ranges[1] == SliceRange(mid - 2, mid + 2)


@pytest.mark.integration
def test_auto_range_that_never_stops_matches_the_fixed_range_bit_for_bit(ct, propagator):
    image, truth = ct
    mid = largest_slice(truth.array, Axis.AXIAL, 5)
    rng = SliceRange(mid - 2, mid + 2)
    seeds = seeds_from_label(seed_on_slice(truth.array, Axis.AXIAL, mid, [5, 1]), truth.grid, image.grid, Axis.AXIAL, rng)
    fixed = propagator.propagate(image, seeds, rng)
    auto = propagator.propagate(image, seeds, rng, auto=AutoRange(absent_slices=100, min_object_score=0.0))
    np.testing.assert_array_equal(fixed.label, auto.label)
    assert "auto_range" not in fixed.to_json() and "memory" not in fixed.to_json()
    assert all("memory_slices" not in s for s in fixed.to_json()["labels"]["5"]["slices"])


@pytest.mark.integration
def test_default_tracking_is_sams_own_propagation(ct, propagator):
    """Options off, the label is what sam2's own propagate_in_video (forward, then reverse) gives, except on the
    seed slice: there it is the drawing, which sam2 returns resized through its mask input."""
    from sam2med.engine.tracker import new_tracking_state

    image, truth = ct
    mid = largest_slice(truth.array, Axis.AXIAL, 5)
    rng = SliceRange(mid - 2, mid + 3)
    seed = seed_on_slice(truth.array, Axis.AXIAL, mid, [5])
    seeds = seeds_from_label(seed, truth.grid, image.grid, Axis.AXIAL, rng)
    ours = to_slices(propagator.propagate(image, seeds, rng, window="50,390").label, Axis.AXIAL)

    window = propagator._window(image, "50,390")
    with propagator.cache.use(propagator._cache_key(image, Axis.AXIAL, window)) as features:
        height, width = to_slices(image.array, Axis.AXIAL).shape[1:]
        state = new_tracking_state(features, list(rng.indices), height, width, propagator.device)
        theirs = {}
        with torch.inference_mode(), propagator._autocast():
            propagator.tracker.add_new_mask(state, mid - rng.start, 5, torch.from_numpy(to_slices(seed, Axis.AXIAL)[mid] == 5))
            for reverse in (False, True):
                for frame, _, logits in propagator.tracker.propagate_in_video(state, reverse=reverse):
                    theirs[rng.start + frame] = (logits[0, 0] > 0).cpu().numpy()
    for s in rng.indices:
        expected = to_slices(seed, Axis.AXIAL)[s] == 5 if s == mid else theirs[s]
        np.testing.assert_array_equal(ours[s] == 5, expected, err_msg=f"slice {s}")
    assert not np.array_equal(theirs[mid], to_slices(seed, Axis.AXIAL)[mid] == 5), "sam2 alone redraws the seed"


@pytest.mark.integration
def test_selective_memory_keeps_the_most_confident_frames(ct, hooked):
    image, truth = ct
    mid = largest_slice(truth.array, Axis.AXIAL, 5)
    rng = SliceRange(mid - 4, mid + 5)
    seeds = seeds_from_label(seed_on_slice(truth.array, Axis.AXIAL, mid, [5]), truth.grid, image.grid, Axis.AXIAL, rng)
    ious = {mid + 1: 0.6, mid + 2: 0.9, mid + 3: 0.2, mid + 4: 0.7, mid + 5: 0.5,
            mid - 1: 0.95, mid - 2: 0.4, mid - 3: 0.8, mid - 4: 0.65}
    plan = {(s, 5): (0.9, iou, True) for s, iou in ious.items()}
    hook = scripted_hook(plan)
    hooked.frame_hook = lambda s, label, out, mask: hook(s, label, out, mask) if s != mid + 5 else _low_score(out, mask)
    rule = SelectiveMemory(min_object_score=0.5, min_iou=0.3, dissimilarity=0.0)
    result = hooked.propagate(image, seeds, rng, memory=rule)

    order = list(range(mid + 1, mid + 6)) + list(range(mid - 1, mid - 5, -1))  # sam2's: forward, then back
    eligible = {s: ious[s] for s in ious if ious[s] >= 0.3 and s != mid + 5}  # mid+3 by IoU, mid+5 by object score
    by_slice = {s.slice: s for s in result.scores[5]}
    for position, s in enumerate(order):
        seen = [t for t in order[:position] if t in eligible]
        expected = sorted(sorted(seen, key=lambda t: (eligible[t], order.index(t)), reverse=True)[:6])
        assert by_slice[s].memory == tuple(expected), s
    assert by_slice[mid].memory is None  # the seed: its mask is given
    assert by_slice[mid - 4].memory == tuple(sorted([mid + 2, mid + 4, mid + 1, mid - 1, mid - 3, mid - 2]))
    report = result.to_json()
    assert report["memory"] == {"policy": "selective", "min_object_score": 0.5, "min_iou": 0.3, "dissimilarity": 0.0}
    assert report["labels"]["5"]["slices"][-1]["memory_slices"] == list(by_slice[mid + 5].memory)


def _low_score(out, mask):
    out["object_score_logits"] = torch.full_like(out["object_score_logits"], _logit(0.1))
    out["iou"] = 0.99
    return mask


@pytest.mark.integration
def test_selected_frames_are_what_sam2_attends_to(ct, propagator):
    """The tracker's selective path equals sam2's attention over those frames as conditioning frames, and differs
    from its recent-frames path."""
    from sam2med.engine.tracker import SELECTED_MEMORY, new_tracking_state

    image, truth = ct
    mid = largest_slice(truth.array, Axis.AXIAL, 5)
    rng = SliceRange(mid, mid + 3)
    seeds = seeds_from_label(seed_on_slice(truth.array, Axis.AXIAL, mid, [5]), truth.grid, image.grid, Axis.AXIAL, rng)
    propagator.propagate(image, seeds, rng)  # encodes the slices

    window = propagator._window(image, None)
    tracker = propagator.tracker
    with propagator.cache.use(propagator._cache_key(image, Axis.AXIAL, window)) as features, torch.inference_mode():
        height, width = to_slices(image.array, Axis.AXIAL).shape[1:]
        state = new_tracking_state(features, list(rng.indices), height, width, propagator.device)
        tracker.add_new_mask(state, 0, 5, torch.from_numpy(seeds.masks[5][mid]))
        for _ in zip(range(3), tracker.propagate_in_video(state)):
            pass
        outputs = state["output_dict_per_obj"][0]
        _, _, vision_feats, vision_pos, sizes = tracker._get_image_feature(state, 3, 1)

        def conditioned(output_dict):
            return tracker._prepare_memory_conditioned_features(3, False, vision_feats[-1:], vision_pos[-1:], sizes[-1:], output_dict, 4)

        chosen = {1: outputs["non_cond_frame_outputs"][1]}
        selective = conditioned({**outputs, SELECTED_MEMORY: chosen})
        as_cond = conditioned({"cond_frame_outputs": {**chosen, **outputs["cond_frame_outputs"]}, "non_cond_frame_outputs": {}})
        recent = conditioned(outputs)
    torch.testing.assert_close(selective, as_cond, rtol=0, atol=0)
    assert not torch.equal(selective, recent)
