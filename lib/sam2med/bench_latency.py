"""`main.py bench --latency`: what an annotator waits for after a stroke, with and without warm-up.

One volume, one seed, one checkpoint, one device; each measurement `repeat` times (interleaved), medians reported:

- `first_painted_s`: stroke end -> the first painted slices: a request over the seed's slice +- `near` slices
  (what a live panel runs first);
- `full_range_s`: stroke end -> the whole range painted: that request, then the request over the whole range
  (the rest follows; the near slices are cached by then);
- `single_request_s`: one request over the whole range (no live mode), for comparison;

each `cold` (an empty feature cache: the series was just opened and nothing was encoded) and `warm` (the
series' slices encoded by `Propagator.warm_up` from the seed's slice outwards, as `POST /sam2med/warmup`
does when the series is shown; the warm-up itself is not timed: it ran while the annotator looked and drew).

And whether a warm-up slows requests (`concurrency`): the near request on a cold cache, idle vs while a
warm-up of another, longer volume runs (started first; the request arrives while it encodes a slice), vs
while a warm-up that does not yield runs (its own priority gate and the process's thread count: how a warm-up
that only ran in a background thread would compete, as before). From the gate's events: how long the request waited (at most the one
slice being encoded) and that no warm-up slice started while it ran.

Model loading is not timed. A benchmark, never a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import statistics
import threading
import time
from typing import Callable

import numpy as np
import torch

from sam2med.bench import _load_average, _sync, stretch_volume
from sam2med.engine.priority import BACKGROUND_END, BACKGROUND_START, FOREGROUND_END, FOREGROUND_START, EncoderPriority
from sam2med.geometry import Axis
from sam2med.io import Volume, load_label, load_volume
from sam2med.prompts import SliceRange, parse_labels, seeds_from_label
from sam2med.windowing import Window, guess_modality

logger = logging.getLogger(__name__)


def _median(values: list[float]) -> float | None:
    return round(float(statistics.median(values)), 3) if values else None


def _other_volume(volume: Volume, axis: Axis, slices: int) -> Volume:
    """A longer volume of other content (the image stretched and shifted by one intensity unit): its own cache entry."""
    stretched, _ = stretch_volume(volume, Volume(np.zeros(volume.array.shape, np.uint8), volume.grid), axis, slices)
    return Volume(stretched.array + np.asarray(1, dtype=stretched.array.dtype), stretched.grid, volume.modality,
                  f"{volume.source} (stretched to {slices} slices, +1)")


def run_latency_bench(
    image: str | os.PathLike,
    seed: str | os.PathLike,
    slice_range=None,
    axis: str = "axial",
    labels=None,
    window: str = "auto",
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str = "auto",
    image_size: int | None = None,
    precision: str = "auto",
    repeat: int = 1,
    near: int = 2,
    cache_gb: float | None = None,
    log: Callable[[str], None] = logger.info,
) -> dict:
    """Measure the latencies of the module docstring; returns the report."""
    from sam2med.engine import Propagator

    axis_ = Axis.parse(axis)
    volume = load_volume(image)
    seed_volume = load_label(seed)
    full = SliceRange.parse(slice_range, volume.grid.num_slices(axis_))
    seeds = seeds_from_label(seed_volume.array, seed_volume.grid, volume.grid, axis_, full, parse_labels(labels))
    center = seeds.slices[len(seeds.slices) // 2]
    near_range = SliceRange(max(full.start, min(seeds.slices) - near), min(full.end, max(seeds.slices) + near))
    near_seeds = seeds_from_label(seed_volume.array, seed_volume.grid, volume.grid, axis_, near_range, parse_labels(labels))
    win = Window.parse(window, guess_modality(volume.array, volume.modality))
    other = _other_volume(volume, axis_, 4 * volume.grid.num_slices(axis_))

    load_before = _load_average()
    start = time.perf_counter()
    propagator = Propagator(model=model, checkpoint=checkpoint, device=device, image_size=image_size,
                            cache_bytes=int(cache_gb * 2**30) if cache_gb else None, precision=precision)
    dev = propagator.device
    load_s = time.perf_counter() - start
    log(f"bench --latency: range {full} ({len(full)} slices, {axis_.name.lower()}), near {near_range} ({len(near_range)} "
        f"slices), seed slices {seeds.slices}, {propagator.model_name} at {propagator.image_size} px on {dev} "
        f"({propagator.precision}), {repeat} repeat(s)")

    def timed(run: Callable[[], object]) -> float:
        _sync(dev)
        begin = time.perf_counter()
        run()
        _sync(dev)
        return time.perf_counter() - begin

    def near_request():
        return propagator.propagate(volume, near_seeds, near_range, window=win)

    def full_request():
        return propagator.propagate(volume, seeds, full, window=win)

    times: dict[str, list[float]] = {k: [] for k in (
        "cold_first_painted", "cold_full_range", "cold_single_request", "warm_first_painted", "warm_full_range",
        "warm_single_request", "warm_up", "near_idle", "near_during_warm_up", "near_during_unyielding_warm_up")}
    waits: list[float] = []
    slice_encodes: list[float] = []
    violations = 0
    misses = {"warm_first_painted": [], "warm_full_range": []}
    for run in range(max(1, int(repeat))):
        # cold: the series was just opened, nothing encoded
        propagator.cache.clear()
        first = timed(near_request)
        rest = timed(full_request)
        times["cold_first_painted"].append(first)
        times["cold_full_range"].append(first + rest)
        propagator.cache.clear()
        times["cold_single_request"].append(timed(full_request))
        # warm: the series' slices encoded from the seed's slice outwards before the stroke ended
        propagator.cache.clear()
        times["warm_up"].append(timed(lambda: propagator.warm_up(volume, axis_, win, full, center=center)))
        result = {}
        first = timed(lambda: result.update(near=near_request()))
        rest = timed(lambda: result.update(full=full_request()))
        times["warm_first_painted"].append(first)
        times["warm_full_range"].append(first + rest)
        misses["warm_first_painted"].append(result["near"].cache["request_miss_slices"])
        misses["warm_full_range"].append(result["full"].cache["request_miss_slices"])
        times["warm_single_request"].append(timed(full_request))
        # a warm-up running while a request arrives: idle, yielding (the server's), not yielding (a plain thread)
        propagator.cache.clear()
        times["near_idle"].append(timed(near_request))
        for name, warmer in (("near_during_warm_up", propagator), ("near_during_unyielding_warm_up", _unyielding(propagator))):
            propagator.cache.clear()
            wait, encodes, broken, seconds = _request_during_warm_up(propagator, warmer, other, axis_, win, near_request, timed)
            times[name].append(seconds)
            if warmer is propagator:
                waits.append(wait)
                slice_encodes.extend(encodes)
                violations += broken
        log(f"  run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))

    medians = {f"{k}_s": _median(v) for k, v in times.items()}
    report = {
        **medians,
        "near_slowdown_during_warm_up": round(medians["near_during_warm_up_s"] / medians["near_idle_s"], 3),
        "near_slowdown_during_unyielding_warm_up": round(medians["near_during_unyielding_warm_up_s"] / medians["near_idle_s"], 3),
        "request_wait_for_warm_up_s": {"max": round(max(waits), 3), "median": _median(waits)},
        "warm_up_slice_encode_s": {"max": round(max(slice_encodes), 3), "median": _median(slice_encodes)},
        "warm_up_slices_started_during_requests": violations,
        "warm_misses": misses,
        "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "repeat": max(1, int(repeat)),
        "range": [full.start, full.end], "slices": len(full), "near_range": [near_range.start, near_range.end],
        "near_slices": len(near_range), "seed_slices": seeds.slices, "labels": seeds.labels, "axis": axis_.name.lower(),
        "other_volume_slices": other.grid.num_slices(axis_),
        "image": str(image), "seed": str(seed), "window": win.key, "device": str(dev), "model": propagator.model_name,
        "image_size": propagator.image_size, "precision": propagator.precision, "checkpoint": str(propagator.checkpoint),
        "model_load_s": round(load_s, 2), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "load_avg_1m": [load_before, _load_average()],
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
    }
    return report


def _unyielding(propagator):
    """The same model and cache behind its own priority gate: its warm-up does not see the requests."""
    twin = copy.copy(propagator)
    twin.priority = EncoderPriority()
    return twin


def _request_during_warm_up(propagator, warmer, other: Volume, axis: Axis, window: Window, request, timed
                            ) -> tuple[float, list[float], int, float]:
    """Start a warm-up of `other` on `warmer`, send `request` while it encodes a slice; (gate wait of the request,
    durations of the warm-up's slices, warm-up slices started while the request ran, request seconds)."""
    gate = warmer.priority
    gate.events.clear()
    propagator.priority.events.clear()
    stop = threading.Event()
    threads = None if warmer is propagator else torch.get_num_threads()  # the server's warm-up, or a plain thread's
    worker = threading.Thread(target=lambda: warmer.warm_up(other, axis, window, should_stop=stop.is_set, threads=threads),
                              daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 600
        while not ([e for _, e, _ in list(gate.events)].count(BACKGROUND_END) >= 1
                   and list(gate.events)[-1][1] == BACKGROUND_START):
            if time.monotonic() > deadline or not worker.is_alive():
                raise RuntimeError("the warm-up did not start encoding")
            time.sleep(0.001)
        seconds = timed(request)
    finally:
        stop.set()
        worker.join()
    events = list(gate.events)
    starts = {}
    encodes = []
    for stamp, event, detail in events:
        if event == BACKGROUND_START:
            starts[detail] = stamp
        elif event == BACKGROUND_END and detail in starts:
            encodes.append(stamp - starts.pop(detail))
    if gate is not propagator.priority:
        return 0.0, encodes, 0, seconds
    kinds = [e for _, e, _ in events]
    begin, end = kinds.index(FOREGROUND_START), kinds.index(FOREGROUND_END)
    wait = gate.waits()[0]["wait_s"]
    return wait, encodes, kinds[begin:end].count(BACKGROUND_START), seconds


def summary_lines(report: dict) -> list[str]:
    head = (f"{report['slices']} slices (near: {report['near_slices']}), {report['model']} @{report['image_size']}px on "
            f"{report['device']} ({report['precision']}), median of {report['repeat']}:")
    return [
        head,
        f"  stroke end -> first painted slices: cold {report['cold_first_painted_s']:.2f}s, warm {report['warm_first_painted_s']:.2f}s",
        f"  stroke end -> full range: cold {report['cold_full_range_s']:.2f}s, warm {report['warm_full_range_s']:.2f}s "
        f"(one request over the range: cold {report['cold_single_request_s']:.2f}s, warm {report['warm_single_request_s']:.2f}s; "
        f"warm-up itself {report['warm_up_s']:.2f}s)",
        f"  near request idle {report['near_idle_s']:.2f}s, during a warm-up {report['near_during_warm_up_s']:.2f}s "
        f"(x{report['near_slowdown_during_warm_up']:.2f}), during a warm-up that does not yield "
        f"{report['near_during_unyielding_warm_up_s']:.2f}s (x{report['near_slowdown_during_unyielding_warm_up']:.2f}); "
        f"waited for the warm-up max {report['request_wait_for_warm_up_s']['max']:.3f}s (one slice's encoding: max "
        f"{report['warm_up_slice_encode_s']['max']:.3f}s); warm-up slices started during requests: "
        f"{report['warm_up_slices_started_during_requests']}",
    ]
