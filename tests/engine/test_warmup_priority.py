"""Warm-up yields to requests: a request waits for at most the one slice being encoded (engine/priority.py).

Checked from the order of the events the gate records, never from wall-clock speed: on a shared 2-core
machine times vary, the order does not.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sam2med.bench import stretch_volume
from sam2med.engine.priority import (BACKGROUND_END, BACKGROUND_START, FOREGROUND_ARRIVE, FOREGROUND_END, FOREGROUND_START,
                                     EncoderPriority)
from sam2med.engine.propagator import warm_up_order
from sam2med.geometry import Axis, to_slices
from sam2med.io import Volume, load_label, load_volume
from sam2med.prompts import SliceRange, seeds_from_label


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.002)


def _kinds(priority: EncoderPriority) -> list[str]:
    return [event for _, event, _ in list(priority.events)]


def test_warm_up_order_is_nearest_the_center_first():
    assert warm_up_order(SliceRange(0, 6), 2) == [2, 1, 3, 0, 4, 5, 6]
    assert warm_up_order(SliceRange(0, 4)) == [2, 1, 3, 0, 4]  # default: the middle
    assert warm_up_order(SliceRange(3, 5), 99) == [5, 4, 3]  # clamped into the range


def test_a_request_waits_only_for_the_step_running_and_no_step_starts_until_it_ends():
    """The gate alone, steps held open by events: deterministic."""
    gate = EncoderPriority()
    in_step, release, stop = threading.Event(), threading.Event(), threading.Event()
    steps: list[int] = []

    def background() -> None:
        for n in range(100):
            if stop.is_set():
                return
            with gate.background(n):
                steps.append(n)
                if n == 1:  # the step a request will find running
                    in_step.set()
                    release.wait(30)

    worker = threading.Thread(target=background)
    worker.start()
    assert in_step.wait(30)
    ran = threading.Event()

    def foreground() -> None:
        with gate.foreground("request"):
            ran.set()
            time.sleep(0.05)  # a step starting now would be seen in the events
    request = threading.Thread(target=foreground)
    request.start()
    _wait_for(lambda: FOREGROUND_ARRIVE in _kinds(gate))
    time.sleep(0.05)
    assert not ran.is_set() and FOREGROUND_START not in _kinds(gate), "the request must wait for the running step"
    release.set()
    request.join(30)
    _wait_for(lambda: _kinds(gate).count(BACKGROUND_START) >= 3)  # the background went on after the request
    stop.set()
    worker.join(30)
    kinds = _kinds(gate)
    arrive, start, end = kinds.index(FOREGROUND_ARRIVE), kinds.index(FOREGROUND_START), kinds.index(FOREGROUND_END)
    assert kinds[arrive + 1 : start] == [BACKGROUND_END], "between arrival and start: only the running step's end"
    assert BACKGROUND_START not in kinds[start:end], "no step while the request runs"
    assert kinds[end + 1] == BACKGROUND_START
    (wait,) = gate.waits()
    assert (wait["background_ended"], wait["background_started"]) == (1, 0)


@pytest.mark.integration
def test_infer_during_a_large_warm_up_waits_at_most_one_slice_and_finds_its_slices_cached(shared_data, propagator):
    """The case most likely to break it: a warm-up of a long volume running when a request on that same volume
    arrives (the feature entry's lock used to be held for a whole fill). The warm-up pauses after its slice,
    the request runs alone, the warm-up resumes; the slices it encoded are hits for the request."""
    d = shared_data / "totalsegmentator"
    image, truth = load_volume(d / "example_ct_sm.nii.gz"), load_label(d / "example_seg.nii.gz")
    seed = np.zeros_like(truth.array)
    seed[..., 15] = np.where(truth.array[..., 15] == 5, 5, 0)
    image, seed_volume = stretch_volume(image, Volume(seed, truth.grid), Axis.AXIAL, 240)  # a long volume
    center = int(np.flatnonzero(to_slices(seed_volume.array, Axis.AXIAL).any(axis=(1, 2)))[0])
    rng = SliceRange(center - 1, center + 1)
    seeds = seeds_from_label(seed_volume.array, seed_volume.grid, image.grid, Axis.AXIAL, rng)
    gate = propagator.priority
    gate.events.clear()
    stop = threading.Event()
    warm: dict = {}
    worker = threading.Thread(target=lambda: warm.update(propagator.warm_up(image, Axis.AXIAL, "auto", center=center,
                                                                            should_stop=stop.is_set)))
    worker.start()
    try:
        # at least 3 slices encoded and the next one being encoded: the request arrives in the middle of a slice
        _wait_for(lambda: _kinds(gate).count(BACKGROUND_END) >= 3 and _kinds(gate)[-1] == BACKGROUND_START)
        result = propagator.propagate(image, seeds, rng, window="auto")
        _wait_for(lambda: BACKGROUND_END in _kinds(gate)[_kinds(gate).index(FOREGROUND_END):])  # it resumed
    finally:
        stop.set()
        worker.join(120)
    events = list(gate.events)
    kinds = [e for _, e, _ in events]
    arrive, start, end = kinds.index(FOREGROUND_ARRIVE), kinds.index(FOREGROUND_START), kinds.index(FOREGROUND_END)
    assert kinds[arrive + 1 : start] in ([], [BACKGROUND_END]), kinds[arrive - 2 : start + 2]
    assert BACKGROUND_START not in kinds[start:end], "a warm-up slice started while the request ran"
    (wait,) = gate.waits()
    assert wait["background_ended"] <= 1 and wait["background_started"] == 0
    encoded = [detail[1] for _, event, detail in events if event == BACKGROUND_START]
    distances = [abs(s - center) for s in encoded]
    assert distances == sorted(distances) and len(encoded) >= 4, encoded  # nearest the center first
    assert set(rng.indices) <= set(encoded[:4])
    assert result.cache["request_miss_slices"] == 0 and result.cache["request_hit_slices"] == len(rng)
    assert warm["stopped"] == "asked to stop" and warm["request_miss_slices"] < 240  # a long volume, stopped early
