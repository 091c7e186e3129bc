"""`Propagator`: masks, clicks and boxes on a few slices (`SlicePrompts`) -> a 3D label through a slice range."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sam2med.checkpoints import choose_model, resolve_checkpoint
from sam2med.engine.cache import CacheKey, FeatureCache, default_budget_bytes
from sam2med.engine.features import SliceFeatures, autocast_context, encode_slices
from sam2med.engine.model import load_tracker, resolve_device
from sam2med.engine.overlap import KEEP, assemble_slice, clip_to_box, honour_clicks, parse_overlap
from sam2med.engine.priority import EncoderPriority
from sam2med.engine.policies import (AutoRange, LabelStops, MemoryCandidate, SelectiveMemory, memory_descriptor, parse_memory,
                                     select_memory)
from sam2med.engine.tracker import SELECTED_MEMORY, new_tracking_state
from sam2med.errors import DeviceError
from sam2med.geometry import Axis, Grid, from_slices, to_slices
from sam2med.io import Volume, label_dtype
from sam2med.prompts import ClickSeeds, SeedMasks, SlicePrompts, SliceRange, as_slice_prompts
from sam2med.windowing import PREPROCESSING, Window, guess_modality

logger = logging.getLogger(__name__)

# progress(done, total, stage) with stage "encode" or "track". A callback that also has a method
# `slice_done(slice_index, frame_label, labels)` gets each slice as soon as it is tracked: its (H, W) label
# (as `geometry.to_slices` lays a slice out) and the propagated label values (locked ones are not among them).
# Slices are tracked forward from the first prompted slice, then backward from it. The final result may
# still clear a label on a finished slice (beyond an auto-range stop).
ProgressFn = Callable[[int, int, str], None]
# Test-only: frame_hook(slice, label, sam2's frame output, mask logits) -> mask logits, called on every
# propagated (not seed) slice; it may rewrite the output's "object_score_logits" and "iou" to drive the
# tracking policies with controlled scores through the real tracker.
FrameHook = Callable[[int, int, dict, torch.Tensor], torch.Tensor]


@dataclass
class SliceScore:
    """SAM2's confidence for one label on one slice."""

    slice: int
    object_score: float  # sigmoid of the object-presence logit
    iou: float | None  # the mask decoder's predicted IoU; None on seed slices (the mask is given)
    area: int  # voxels of this label on the slice
    seed: bool
    memory: tuple[int, ...] | None = None  # selective memory: the tracked slices (besides the seeds) it attended to

    def to_json(self, pixel_mm2: float | None = None) -> dict:
        return {
            "slice": self.slice,
            "object_score": round(self.object_score, 4),
            "iou": None if self.iou is None else round(self.iou, 4),
            "area": self.area,
            **({} if pixel_mm2 is None else {"area_mm2": round(self.area * pixel_mm2, 2)}),
            "seed": self.seed,
            **({} if self.memory is None else {"memory_slices": list(self.memory)}),
        }


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


@dataclass
class PropagationResult:
    """A propagated label volume on the input grid, with per-slice scores and timings."""

    label: np.ndarray  # (x, y, z), label values of the seeds, 0 elsewhere and outside the range
    grid: Grid
    axis: Axis
    slice_range: SliceRange
    scores: dict[int, list[SliceScore]]
    seconds: float
    encode_seconds: float
    track_seconds: float
    cache: dict = field(default_factory=dict)
    window: str = ""  # the resolved intensity window (Window.key)
    label_ranges: dict[int, SliceRange] = field(default_factory=dict)  # labels tracked through less than slice_range
    auto_range: dict | None = None  # auto range: its rule and, per label and direction, where and why it stopped
    memory: dict | None = None  # selective memory: its rule (None: sam2's recent frames)
    overlap: str = KEEP  # the overlap policy (engine.overlap)
    kept_slices: dict[int, list[int]] = field(default_factory=dict)  # drawn slices whose output is the drawing, per label
    locked_voxels: dict[int, int] = field(default_factory=dict)  # locked label value -> voxels kept as they were

    @property
    def slices_processed(self) -> int:
        return len(self.slice_range)

    def to_json(self) -> dict:
        """Scores per label and slice; means are over the propagated slices (a seed slice's mask is given)."""
        report = self._report()
        if self.memory is not None:
            report["memory"] = self.memory
        if self.auto_range is not None:
            report["auto_range"] = self.auto_range["rule"]
            for label, stops in self.auto_range["labels"].items():
                report["labels"][str(label)]["auto_range"] = stops
        return report

    def _report(self) -> dict:
        row_mm, col_mm = self.grid.slice_spacing(self.axis)
        voxel_mm3 = float(np.prod(self.grid.spacing))
        return {
            "axis": self.axis.name.lower(),
            "slice_range": [self.slice_range.start, self.slice_range.end],
            "slices_processed": self.slices_processed,
            "seconds": round(self.seconds, 3),
            "encode_seconds": round(self.encode_seconds, 3),
            "track_seconds": round(self.track_seconds, 3),
            "cache": self.cache,
            "overlap": self.overlap,
            "kept_slices": {str(label): slices for label, slices in self.kept_slices.items()},
            "locked_labels": {str(value): voxels for value, voxels in self.locked_voxels.items()},
            "labels": {
                str(label): {
                    "mean_object_score": _mean([s.object_score for s in scores if not s.seed]),
                    "mean_iou": _mean([s.iou for s in scores if not s.seed and s.iou is not None]),
                    "means_exclude_seed_slices": True,
                    "seed_slices": [s.slice for s in scores if s.seed],
                    "voxels": int(sum(s.area for s in scores)),
                    "volume_mm3": round(sum(s.area for s in scores) * voxel_mm3, 1),
                    "slice_range": [self.label_ranges.get(label, self.slice_range).start, self.label_ranges.get(label, self.slice_range).end],
                    "slices": [s.to_json(row_mm * col_mm) for s in scores],
                }
                for label, scores in self.scores.items()
            },
        }


@dataclass
class TrackedObject:
    """One label being tracked: sam2's output dict for it, its own range, its selective-memory bank."""

    label: int
    index: int  # sam2's object index (the label's position in seeds.labels)
    output: dict  # sam2's per-object output dict (prompted and tracked frames)
    label_range: SliceRange | None = None  # None: the whole tracked range
    bank: list[MemoryCandidate] = field(default_factory=list)  # selective memory: the frames it attends to


@dataclass
class ObjectFrame:
    """One label on one frame: its low-res mask logits and, where it was tracked or prompted, sam2's output."""

    mask: torch.Tensor
    out: dict | None = None  # None: outside the label's range or past its stop (mask: the empty logits)
    seed: bool = False  # a prompted frame
    memory: tuple[int, ...] | None = None  # selective memory: the slices it attended to


@dataclass
class _TrackingRun:
    """What the steps of one `Propagator._track` share."""

    state: dict  # sam2's inference state
    seeds: SlicePrompts
    indices: list[int]  # frame -> slice
    objects: list[TrackedObject]
    absent: torch.Tensor  # the low-res logits of an object outside its own range
    label_values: torch.Tensor
    label_frames: np.ndarray  # (frames, H, W) the assembled label
    scores: dict[int, list[SliceScore]]
    stops: dict[int, LabelStops] | None
    memory: SelectiveMemory | None
    overlap: str
    locked_slices: np.ndarray | None


PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX512-BF16, where oneDNN runs bf16 matrix products several times faster than fp32."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype for 'auto' / 'bf16' / 'fp32'.

    'auto' is bf16 autocast on CUDA (as SAM2's own demos run it) and on CPUs with AMX / AVX512-BF16;
    float32 elsewhere. Features are stored in the cache in the same dtype.
    """
    text = str(precision or "auto").strip().lower()
    if text not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if text == "fp32":
        return torch.float32
    if text == "bf16" or device.type == "cuda" or cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def object_score_of(out: dict) -> float:
    """SAM2's object presence (sigmoid of its object logit) in a frame's output."""
    return float(torch.sigmoid(out["object_score_logits"].float()).mean())


def seed_slices_of(seeds: SeedMasks | ClickSeeds | SlicePrompts, label: int) -> list[int]:
    """The conditioning slices of one label."""
    return as_slice_prompts(seeds).slices_of(label)


def memory_reach(tracker) -> int:
    """How many frames back a tracked frame can look: its memory frames and its object pointers."""
    stride = max(1, int(getattr(tracker, "memory_temporal_stride_for_eval", 1)))
    return max(int(tracker.num_maskmem) * stride, int(tracker.max_obj_ptrs_in_encoder)) + 1


def _in_foreground(method):
    """A `Propagator` method run as a request of its `priority`: a warm-up running meanwhile pauses after its slice."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.priority.foreground(method.__name__):
            return method(self, *args, **kwargs)
    return run


def warm_up_order(slice_range: SliceRange, center: int | None = None) -> list[int]:
    """The range's slices nearest `center` first (ties: the lower slice first); `center` defaults to the middle and
    is clamped into the range."""
    indices = list(slice_range.indices)
    if center is None:
        center = (slice_range.start + slice_range.end) // 2
    center = min(max(int(center), slice_range.start), slice_range.end)
    return sorted(indices, key=lambda s: (abs(s - center), s))


def kept_as_drawn(label_slices: np.ndarray, seeds: SeedMasks | SlicePrompts) -> dict[int, list[int]]:
    """Per label with drawn slices (a mask and no clicks nor box), those on which the output (N, H, W) holds that
    label exactly where it was drawn."""
    drawn = as_slice_prompts(seeds).drawn()
    return {label: [s for s, mask in sorted(per_slice.items()) if np.array_equal(label_slices[s] == label, mask)]
            for label, per_slice in drawn.items() if per_slice}


def _voxels_per_value(label: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(label[label != 0], return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


class Propagator:
    """SAM2.1 propagation through the slices of a volume; one instance serves many requests.

    The model is loaded once; image features go through a shared `FeatureCache`, so a later request
    on the same volume, axis and window only runs the tracking.
    """

    def __init__(
        self,
        model: str | None = None,
        checkpoint: str | Path | None = None,
        device: str = "auto",
        image_size: int | None = None,
        cache: FeatureCache | None = None,
        cache_bytes: int | None = None,
        batch_size: int | None = None,
        download: bool = True,
        precision: str = "auto",
        priority: EncoderPriority | None = None,
    ):
        choice = choose_model(model, checkpoint, image_size)
        self.model_name = choice.model
        self.model_title = choice.spec.title
        self.preprocessing = PREPROCESSING[choice.spec.preprocessing]
        self.device = resolve_device(device)
        self.checkpoint = resolve_checkpoint(self.model_name, checkpoint, download=download)
        self.tracker = load_tracker(self.model_name, self.checkpoint, self.device, choice.image_size)
        self.image_size = int(self.tracker.image_size)
        self.compute_dtype = resolve_precision(precision, self.device)
        self.cache = cache or FeatureCache(cache_bytes or default_budget_bytes(self.device), self.compute_dtype)
        self.batch_size = batch_size or self._default_batch_size()
        self.frame_hook: FrameHook | None = None  # test-only, see FrameHook
        # requests (`propagate`) before warm-up slices (`warm_up`); shared with the server's infer requests
        self.priority = priority or EncoderPriority()
        stat = self.checkpoint.stat()
        self._model_key = f"{self.model_name}:{self.checkpoint.resolve()}:{stat.st_size}:{int(stat.st_mtime)}:{self.image_size}"

    def _default_batch_size(self) -> int:
        if self.device.type != "cuda":
            return 1  # on CPU a batch only adds memory: measured the same time per slice at 1 and 2
        free, _ = torch.cuda.mem_get_info(self.device)
        per_image = 0.6e9 * (self.image_size / 1024) ** 2  # activations of one 1024 px tiny/small image, bf16
        return int(max(1, min(32, free * 0.5 // per_image)))

    def _autocast(self):
        return autocast_context(self.device, self.compute_dtype)

    @property
    def precision(self) -> str:
        return "bf16" if self.compute_dtype == torch.bfloat16 else "fp32"

    def _cache_key(self, volume: Volume, axis: Axis, window: Window) -> CacheKey:
        return CacheKey(volume=volume.fingerprint(), axis=int(axis), window=window.key, model=self._model_key)

    def _window(self, volume: Volume, window: "Window | str | None") -> Window:
        return Window.parse(window, guess_modality(volume.array, volume.modality)).for_model(self.preprocessing)

    def _fill(self, features: SliceFeatures, volume: Volume, axis: Axis, window: Window, indices: list[int],
              progress: ProgressFn | None, bounds: tuple[float, float] | None = None) -> tuple[int, int]:
        """Encode the slices of `indices` that `features` lacks; returns (hits, misses). `bounds`: the window's
        bounds on this volume when already known (`Window.bounds` reads the whole volume)."""
        with features.lock:  # one request encodes; concurrent ones on the same volume wait, then hit
            missing = features.missing(indices)
            if missing:
                bounds = window.bounds(volume.array) if bounds is None else bounds
                slices = to_slices(volume.array, axis)
                stack = np.stack([window.apply(slices[i], bounds) for i in missing])  # (M, H, W)
                encoded = encode_slices(self.tracker, stack, list(range(len(missing))), self.batch_size, self.compute_dtype,
                                        self.preprocessing.resize)
                for done, (slice_index, levels, pos_enc) in enumerate(encoded, 1):
                    features.add(missing[slice_index], levels, pos_enc)
                    if progress:
                        progress(done, len(missing), "encode")
        hits, misses = len(indices) - len(missing), len(missing)
        self.cache.record(hits, misses)
        return hits, misses

    def warm_up(self, volume: Volume, axis: "Axis | str" = Axis.AXIAL, window: "Window | str | None" = None,
                slice_range: "SliceRange | None" = None, progress: ProgressFn | None = None, center: int | None = None,
                should_stop: Callable[[], bool] | None = None, max_bytes: int | None = None,
                threads: int | None = None) -> dict:
        """Encode a volume's slices ahead of the first seed, so that the first propagation is cached.

        The slices nearest `center` go first (default: the middle of the range; `warm_up_order`), one slice at a
        time, each as a background step of `self.priority`: a request waits for at most the slice being encoded.
        Stops early when `should_stop()` is true between slices, or before the entry would grow past `max_bytes`
        (default: half the cache budget, so that a warm-up never pushes the cache past half its budget on its own).

        `threads`: the CPU threads this thread computes with during the warm-up (restored after); default 1 on a
        CPU device. Measured (docs/performance.md, "Warm-up"): once a thread has computed with torch's 2 OpenMP
        threads, merely being blocked it made every request computed in another thread 2-3x slower on this 2-core
        CPU; a warm-up thread that computes with 1 thread leaves requests at their idle speed.
        """
        if threads is None:
            threads = 1 if self.device.type == "cpu" else 0
        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            return self._warm_up(volume, axis, window, slice_range, progress, center, should_stop, max_bytes)
        finally:
            if threads:
                torch.set_num_threads(previous)

    def _warm_up(self, volume, axis, window, slice_range, progress, center, should_stop, max_bytes) -> dict:
        axis = Axis.parse(axis)
        window = self._window(volume, window)
        slice_range = SliceRange.parse(slice_range, volume.grid.num_slices(axis))
        order = warm_up_order(slice_range, center)
        limit = self.cache.budget_bytes // 2 if max_bytes is None else int(max_bytes)
        start = time.perf_counter()
        hits = misses = 0
        stopped = None
        bounds = window.bounds(volume.array)
        with self.cache.use(self._cache_key(volume, axis, window)) as features:
            per_slice = 0
            for done, slice_index in enumerate(order, 1):
                if should_stop is not None and should_stop():
                    stopped = "asked to stop"
                    break
                if features.missing([slice_index]) and per_slice and features.nbytes + per_slice > limit:
                    stopped = f"feature budget ({limit / 1e6:.0f} MB) reached"
                    break
                with self.priority.background(("warm-up", slice_index)):
                    before = features.nbytes
                    hit, miss = self._fill(features, volume, axis, window, [slice_index], None, bounds)
                    if miss:
                        per_slice = max(per_slice, features.nbytes - before)
                hits, misses = hits + hit, misses + miss
                if progress:
                    progress(done, len(order), "encode")
        return {"request_hit_slices": hits, "request_miss_slices": misses, "slices": len(order), "stopped": stopped,
                "seconds": round(time.perf_counter() - start, 3), **self.cache.stats()}

    @_in_foreground
    def propagate(
        self,
        volume: Volume,
        seeds: SeedMasks | ClickSeeds | SlicePrompts,
        slice_range: SliceRange | None = None,
        window: "Window | str | None" = None,
        progress: ProgressFn | None = None,
        label_ranges: "dict[int, SliceRange] | None" = None,
        auto: AutoRange | None = None,
        memory: "str | SelectiveMemory | None" = None,
        overlap: str = KEEP,
        locked: np.ndarray | None = None,
    ) -> PropagationResult:
        """Propagate `seeds` (masks, clicks, boxes: `SlicePrompts`, each label its own object) through `slice_range`,
        both ways.

        `label_ranges` narrows some labels to their own ranges inside `slice_range`: they are neither
        tracked nor written outside them. `auto` stops each label where it ends (see `AutoRange`); slices
        are then encoded as tracking reaches them, none beyond the stops. `memory` 'selective' chooses the
        memory frames by confidence and dissimilarity (see `SelectiveMemory`); 'recent' / None is sam2's.
        A label drawn on a slice (a mask, no clicks nor box there) comes back as drawn there; `overlap` says what wins where
        labels meet (`engine.overlap`). `locked` (x, y, z), non-zero where a locked label lies (none of the
        propagated values), is kept as it is everywhere and never overwritten."""
        start_time = time.perf_counter()
        axis = seeds.axis
        num_slices = volume.grid.num_slices(axis)
        slice_range = SliceRange.parse(slice_range, num_slices)
        if isinstance(seeds, ClickSeeds):
            seeds.check(volume.grid, slice_range)
        elif isinstance(seeds, SeedMasks) and any(s not in slice_range for s in seeds.slices):
            raise ValueError("seed slices outside the range must be rejected by prompts.seeds_from_label")
        seeds = as_slice_prompts(seeds)
        seeds.check(volume.grid, slice_range)
        label_ranges = {int(k): v for k, v in (label_ranges or {}).items()}
        if any(r.start < slice_range.start or r.end > slice_range.end for r in label_ranges.values()):
            raise ValueError("a label's range must lie inside slice_range")
        window = self._window(volume, window)
        memory_rule = parse_memory(memory)
        overlap = parse_overlap(overlap)
        locked_voxels = {} if locked is None else _voxels_per_value(locked)
        if set(locked_voxels) & set(seeds.labels):
            raise ValueError("a locked label cannot be propagated: prompts.locked_voxels keeps them apart")
        locked_slices = None if locked is None else to_slices(locked, axis)
        indices = list(slice_range.indices)
        # sam2 tracks forward from the first seed slice of all labels: a label's backward direction starts there
        stops = None if auto is None else {
            label: LabelStops.start([*seed_slices_of(seeds, label), min(seeds.slices)], label_ranges.get(label, slice_range).start,
                                    label_ranges.get(label, slice_range).end, num_slices, auto)
            for label in seeds.labels
        }
        try:
            return self._propagate_in_cache(volume, seeds, slice_range, window, progress, label_ranges, auto, stops,
                                            memory_rule, overlap, locked_voxels, locked_slices, indices, start_time)
        except torch.OutOfMemoryError:
            raise self._out_of_memory(len(indices)) from None

    def _out_of_memory(self, slices: int) -> DeviceError:
        """Give the memory back (the feature cache's entries no request is using, the allocator's cached blocks) and
        say what to do: the next request in this process starts from a trimmed cache."""
        self.cache.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return DeviceError(f"out of {self.device.type} memory tracking {slices} slices at {self.image_size} px: the feature "
                           "cache was emptied; retry with a shorter slice range or a smaller image size, or on a larger device")

    def _propagate_in_cache(self, volume, seeds, slice_range, window, progress, label_ranges, auto, stops, memory_rule,
                            overlap, locked_voxels, locked_slices, indices, start_time) -> PropagationResult:
        axis = seeds.axis
        num_slices = volume.grid.num_slices(axis)
        with self.cache.use(self._cache_key(volume, axis, window)) as features:
            lazy = {"hits": 0, "misses": 0, "seconds": 0.0}

            def encode(slice_index: int) -> None:
                if slice_index in seeds.slices:
                    return
                started = time.perf_counter()
                hit, miss = self._fill(features, volume, axis, window, [slice_index], None)
                lazy["hits"], lazy["misses"] = lazy["hits"] + hit, lazy["misses"] + miss
                lazy["seconds"] += time.perf_counter() - started

            hits, misses = self._fill(features, volume, axis, window, indices if stops is None else seeds.slices, progress)
            encode_seconds = time.perf_counter() - start_time
            height, width = to_slices(volume.array, axis).shape[1:]
            label_frames, scores = self._track(features, seeds, indices, height, width, progress, label_ranges,
                                               stops=stops, memory=memory_rule, encode=None if stops is None else encode,
                                               overlap=overlap, locked_slices=locked_slices)
            hits, misses = hits + lazy["hits"], misses + lazy["misses"]
            encode_seconds += lazy["seconds"]
        track_seconds = time.perf_counter() - start_time - encode_seconds
        auto_report = None
        if stops is not None:
            label_frames, slice_range, label_ranges = self._clear_beyond_stops(label_frames, scores, indices, stops)
            auto_report = {"rule": {"mode": "auto", **auto.to_json()},
                           "labels": {label: stop.to_json() for label, stop in stops.items()}}

        full = np.zeros((num_slices, height, width), dtype=label_dtype(max([*seeds.labels, *locked_voxels])))
        full[indices[0] : indices[-1] + 1] = label_frames
        if locked_slices is not None:  # outside the range too: a locked label is returned as it came
            np.copyto(full, locked_slices, where=locked_slices != 0)
        kept = kept_as_drawn(full, seeds)
        label = np.ascontiguousarray(from_slices(full, axis))
        seconds = time.perf_counter() - start_time
        cache_stats = {"request_hit_slices": hits, "request_miss_slices": misses, **self.cache.stats()}
        logger.info("propagated labels %s over slices %s (%s) in %.2fs: encode %.2fs (%d cached, %d encoded), track %.2fs; "
                    "feature cache %d entries, %.1f/%.1f MB, %d hit / %d miss slices in total",
                    seeds.labels, slice_range, axis.name.lower(), seconds, encode_seconds, hits, misses, track_seconds,
                    cache_stats["entries"], cache_stats["bytes"] / 1e6, cache_stats["budget_bytes"] / 1e6,
                    cache_stats["hit_slices"], cache_stats["miss_slices"])
        return PropagationResult(label, volume.grid, axis, slice_range, scores, seconds, encode_seconds, track_seconds, cache_stats,
                                 window.key, label_ranges, auto_report, None if memory_rule is None else memory_rule.to_json(),
                                 overlap, kept, locked_voxels)

    @staticmethod
    def _clear_beyond_stops(label_frames: np.ndarray, scores: dict[int, list[SliceScore]], indices: list[int],
                            stops: dict[int, LabelStops]) -> tuple[np.ndarray, SliceRange, dict[int, SliceRange]]:
        """Unwrite each label outside its kept slices (the absent run that stopped it); the tracked span and the
        labels' own tracked ranges."""
        first = indices[0]
        for label, stop in stops.items():
            low, high = stop.kept
            for part in (label_frames[: low - first], label_frames[high - first + 1 :]):
                part[part == label] = 0
            for score in scores[label]:
                if not low <= score.slice <= high:
                    score.area = 0
        spans = {label: SliceRange(*stop.tracked) for label, stop in stops.items()}
        tracked = SliceRange(min(r.start for r in spans.values()), max(r.end for r in spans.values()))
        return label_frames, tracked, spans

    @torch.inference_mode()
    def _track(self, features: SliceFeatures, seeds: SlicePrompts, indices: list[int], height: int, width: int,
               progress: ProgressFn | None, label_ranges: dict[int, SliceRange] | None = None,
               stops: dict[int, LabelStops] | None = None, memory: SelectiveMemory | None = None,
               encode: Callable[[int], None] | None = None, overlap: str = KEEP,
               locked_slices: np.ndarray | None = None,
               ) -> tuple[np.ndarray, dict[int, list[SliceScore]]]:
        """Track every label through the frames (= slices `indices`): forward from the first prompted frame, then back.

        With `stops`, a label is tracked only while its `LabelStops` is active, a frame no label needs is
        skipped, and `encode(slice)` runs before a frame is tracked. With `memory`, each label's memory bank
        is re-chosen after every frame (`select_memory`). Each frame's label is put together by `assemble_slice`:
        drawn labels as drawn, `locked_slices` (N, H, W) kept, `overlap` where labels meet.

        Steps: `_track_frame` (one frame, all labels) -> `_track_object` (one label on one frame) -> the tracker."""
        tracker = self.tracker
        frame_of = {s: f for f, s in enumerate(indices)}
        offload = self.device.type == "cuda" and len(indices) > 300
        state = new_tracking_state(features, indices, height, width, self.device, offload_state_to_cpu=offload)
        labels = seeds.labels
        dtype = label_dtype(max([*labels, 0 if locked_slices is None else int(locked_slices.max())]))

        with self._autocast():
            self._add_prompts(state, seeds, frame_of)
            tracker.propagate_in_video_preflight(state)
            objects = [TrackedObject(label, obj_idx, output, (label_ranges or {}).get(label))
                       for obj_idx, (label, output) in enumerate(zip(labels, tracker.object_outputs(state, labels)))]
            first = min(f for obj in objects for f in tracker.prompted(obj.output))
            order = [(f, False) for f in range(first, len(indices))] + [(f, True) for f in range(first - 1, -1, -1)]
            reach = memory_reach(tracker)
            run = _TrackingRun(
                state=state, seeds=seeds, indices=indices, objects=objects,
                absent=torch.full_like(next(iter(tracker.prompted(objects[0].output).values()))["pred_masks"], -1024.0,
                                       device=self.device),  # the low-res logits of an object outside its own range
                label_values=torch.tensor(labels, device=self.device),
                label_frames=np.zeros((len(indices), height, width), dtype=dtype),
                scores={label: [] for label in labels}, stops=stops, memory=memory, overlap=overlap, locked_slices=locked_slices,
            )
            if memory is not None:
                for obj in objects:
                    obj.output[SELECTED_MEMORY] = {}
            slice_done = getattr(progress, "slice_done", None)
            for done, (frame, reverse) in enumerate(order, 1):
                if stops is None or any(stops[label].active(indices[frame]) for label in labels):  # else every label stopped
                    if stops is not None:
                        encode(indices[frame])
                    self._track_frame(run, frame, reverse, done)
                    self._forget_unreachable(objects, frame, reverse, first, reach)
                    if slice_done is not None:
                        slice_done(indices[frame], run.label_frames[frame], list(labels))
                if progress:
                    progress(done, len(order), "track")
        for per_label in run.scores.values():
            per_label.sort(key=lambda s: s.slice)
        for stop in (stops or {}).values():
            stop.close()
        return run.label_frames, run.scores

    def _track_frame(self, run: "_TrackingRun", frame: int, reverse: bool, done: int) -> None:
        """One frame, all labels: each label's mask (`_track_object`), the frame's label (`assemble_slice`), the scores."""
        slice_index = run.indices[frame]
        views = [self._track_object(run, obj, frame, reverse, done) for obj in run.objects]
        logits = self.tracker.frame_logits(run.state, torch.cat([view.mask for view in views], dim=0))  # (O, 1, H, W)
        for obj, view in zip(run.objects, views):
            if not view.seed:
                continue
            prompt = run.seeds.prompts[obj.label][slice_index]
            if prompt.box_rc is not None:  # on its slice, the label lies inside its box
                logits[obj.index, 0] = clip_to_box(logits[obj.index, 0], prompt.box_rc)
            if prompt.points_rc:  # and its clicks are kept where they were made
                logits[obj.index, 0] = honour_clicks(logits[obj.index, 0], prompt.points_rc, prompt.point_labels)
        drawn = {obj.index: torch.from_numpy(np.ascontiguousarray(mask)).to(self.device)
                 for obj, view in zip(run.objects, views)
                 if view.seed and (mask := run.seeds.prompts[obj.label][slice_index].drawn) is not None}
        locked = (None if run.locked_slices is None
                  else torch.from_numpy(run.locked_slices[slice_index].astype(np.int64)).to(self.device))
        frame_label = assemble_slice(logits[:, 0].float(), run.label_values, drawn, locked, run.overlap)
        run.label_frames[frame] = frame_label.cpu().numpy().astype(run.label_frames.dtype)
        for obj, view in zip(run.objects, views):
            if view.out is None:  # outside this label's range
                continue
            score = SliceScore(
                slice=slice_index,
                object_score=object_score_of(view.out),
                iou=view.out.get("iou"),
                area=int((frame_label == obj.label).sum()),
                seed=view.seed,
                memory=None if view.seed else view.memory,
            )
            run.scores[obj.label].append(score)
            if run.stops is not None and not score.seed:
                run.stops[obj.label].record(score.slice, score.object_score, score.area)

    def _track_object(self, run: "_TrackingRun", obj: "TrackedObject", frame: int, reverse: bool, done: int) -> "ObjectFrame":
        """One label on one frame: its prompt's mask on a prompted frame, else tracked from its memory; an empty mask
        outside its range or past its stop."""
        slice_index = run.indices[frame]
        if (obj.label_range is not None and slice_index not in obj.label_range) or (
                run.stops is not None and not run.stops[obj.label].active(slice_index)):
            return ObjectFrame(run.absent)
        memory = None if run.memory is None else tuple(sorted(run.indices[c.frame] for c in obj.bank))
        prompted = self.tracker.prompted(obj.output)
        if frame in prompted:
            out = prompted[frame]
            mask = out["pred_masks"].to(self.device, non_blocking=True)
        else:
            out, mask = self.tracker.track_frame(run.state, obj.output, frame, reverse)
            if self.frame_hook is not None:
                mask = self.frame_hook(slice_index, obj.label, out, mask)
            self.tracker.keep_tracked(obj.output, frame, out)
            if run.memory is not None:
                obj.bank = self._update_memory(obj.bank, frame, done, out, run.memory)
                obj.output[SELECTED_MEMORY] = {c.frame: c.output for c in obj.bank}
        self.tracker.mark_tracked(run.state, obj.index, frame, reverse)
        return ObjectFrame(mask, out, frame in prompted, memory)

    def _forget_unreachable(self, objects: list["TrackedObject"], frame: int, reverse: bool, first: int, reach: int) -> None:
        """Drop per-frame outputs that no later frame can attend to: the tracking state (memory features, masks)
        stays bounded by `reach` frames however long the range is. The reverse pass starts next to `first` and
        attends to the forward outputs there, as sam2's does."""
        stale = frame + reach if reverse else frame - reach
        if reverse or stale >= first + reach:
            for obj in objects:
                self.tracker.forget_tracked(obj.output, stale)

    def _update_memory(self, bank: list[MemoryCandidate], frame: int, order: int, out: dict,
                       rule: SelectiveMemory) -> list[MemoryCandidate]:
        """The memory bank after `frame`: re-chosen from the bank and that frame, if it is confident enough."""
        object_score, iou = object_score_of(out), out.get("iou") or 0.0
        candidates = list(bank)
        if object_score >= rule.min_object_score and iou >= rule.min_iou:
            candidates.append(MemoryCandidate(frame, order, iou * object_score, memory_descriptor(out), out))
        return select_memory(candidates, int(self.tracker.num_maskmem) - 1, rule.dissimilarity)

    def _add_prompts(self, state: dict, seeds: SlicePrompts, frame_of: dict[int, int]) -> None:
        """Each label's slice prompts into sam2: the mask first, then the clicks and the box, which sam2 decodes
        with the mask's logits as the previous prediction on that frame (add_new_points_or_box's
        prev_sam_mask_logits), so they refine the mask rather than replace it."""
        for label, per_slice in seeds.prompts.items():
            for slice_index, prompt in sorted(per_slice.items()):
                frame = frame_of[slice_index]
                if prompt.mask is not None:
                    self.tracker.add_new_mask(state, frame, label, torch.from_numpy(np.ascontiguousarray(prompt.mask)))
                if not prompt.has_clicks:
                    continue
                points = labels = box = None
                if prompt.points_rc:
                    points = np.array([[c, r] for r, c in prompt.points_rc], dtype=np.float32).reshape(-1, 2)
                    labels = np.array(prompt.point_labels, dtype=np.int32)
                if prompt.box_rc is not None:
                    r0, c0, r1, c1 = prompt.box_rc
                    box = np.array([c0, r0, c1, r1], dtype=np.float32)
                self.tracker.add_new_points_or_box(state, frame, label, points=points, labels=labels, box=box)
