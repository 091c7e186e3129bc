"""`main.py bench`: our propagation (cold and warm feature cache) against the stock SAM2 video pipeline.

One run, one volume, one checkpoint, one device:

- `stock_s`: the pipeline that MONAI Label's built-in SAM2 task and the published medical SAM2 studies use:
  the slices of the range written as JPEG files to a folder (PIL, as MONAI Label writes them), the stock
  `SAM2VideoPredictor` from `build_sam2_video_predictor`, `init_state` on the folder, `add_new_mask` per
  label on the seed slices, `propagate_in_video` forward then `reverse=True`;
- `first_s`: `Propagator.propagate` on an empty feature cache; `cached_s`: the same request again;
- optionally `monailabel_s`: MONAI Label's own `Sam2InferTask` (3D, clicks) in a child process, where it
  imports (it needs torchvision; its CPU wheels do not import against every torch build).

Model loading is outside every timing (a server loads once). A benchmark, never a test: the numbers depend
on the machine and on what else runs on it, so runs are repeated and the median is reported.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sam2med.geometry import Axis, Grid, to_slices
from sam2med.io import Volume, load_label, load_volume
from sam2med.prompts import SeedMasks, SliceRange, parse_labels, seeds_from_label
from sam2med.progress import no_bars_off_terminal
from sam2med.windowing import Window, guess_modality

logger = logging.getLogger(__name__)

# The keys the issue asks for; `run_bench` writes more (extras are documented in docs/performance.md).
REQUIRED_KEYS = (
    "stock_s", "first_s", "cached_s", "slices", "device", "model", "peak_mem_mb",
    "stock_slices_per_s", "first_slices_per_s", "cached_slices_per_s",
)


# ---------------------------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak memory during a block: CUDA allocator peak on a GPU, sampled process RSS on CPU (MB)."""

    def __init__(self, device: torch.device, interval_s: float = 0.02):
        self.device = device
        self.interval_s = interval_s
        self.peak_mb = 0.0

    @contextmanager
    def measure(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            try:
                yield self
            finally:
                torch.cuda.synchronize(self.device)
                self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        import psutil

        process = psutil.Process()
        stop = threading.Event()
        peak = [process.memory_info().rss]

        def sample() -> None:
            while not stop.wait(self.interval_s):
                peak[0] = max(peak[0], process.memory_info().rss)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            peak[0] = max(peak[0], process.memory_info().rss)
            self.peak_mb = peak[0] / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------- inputs


def stretch_volume(volume: Volume, seed: Volume, axis: Axis, num_slices: int) -> tuple[Volume, Volume]:
    """Resample `volume` to `num_slices` slices along `axis` by repeating slices (nearest neighbour).

    For speed tests on long volumes only. Each seed slice lands on one slice of the stretched seed (the
    middle copy), so the number of conditioning slices does not change.
    """
    old = volume.grid.num_slices(axis)
    source = np.minimum((np.arange(num_slices) + 0.5) * old / num_slices, old - 1).astype(int)
    array = np.take(volume.array, source, axis=int(axis))
    seed_array = np.zeros(array.shape, dtype=seed.array.dtype)
    for s in range(old):
        copies = np.flatnonzero(source == s)
        if len(copies):
            target = int(copies[len(copies) // 2])
            index = [slice(None)] * 3
            index[int(axis)] = target
            source_index = [slice(None)] * 3
            source_index[int(axis)] = s
            seed_array[tuple(index)] = seed.array[tuple(source_index)]
    spacing = list(volume.grid.spacing)
    spacing[int(axis)] *= old / num_slices
    grid = Grid(tuple(int(n) for n in array.shape), tuple(spacing), volume.grid.origin, volume.grid.direction)
    return (Volume(array, grid, volume.modality, f"{volume.source} (stretched to {num_slices} slices)"),
            Volume(seed_array, grid, seed.modality, seed.source))


# ---------------------------------------------------------------------------------------------- stock


def build_stock_predictor(model: str, checkpoint: Path, device: torch.device, image_size: int | None):
    """sam2's own `SAM2VideoPredictor`, built by sam2's builder with its defaults (as MONAI Label builds it)."""
    from sam2.build_sam import build_sam2_video_predictor

    from sam2med.checkpoints import model_spec
    from sam2med.engine.model import size_overrides

    overrides = size_overrides(int(image_size)) if image_size else []
    predictor = build_sam2_video_predictor(model_spec(model).config, ckpt_path=str(checkpoint), device=str(device),
                                           hydra_overrides_extra=overrides)
    if device.type == "cuda":  # as MONAI Label's Sam2InferTask does on Ampere and later
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return predictor


def write_jpeg_slices(volume: Volume, axis: Axis, window: Window, slice_range: SliceRange, folder: Path) -> None:
    """The range's slices, windowed to 8 bits, as 00000.jpg, 00001.jpg, ... (PIL's defaults, as MONAI Label)."""
    from PIL import Image

    bounds = window.bounds(volume.array)
    slices = to_slices(volume.array, axis)
    for frame, s in enumerate(slice_range.indices):
        pixels = np.round(window.apply(slices[s], bounds) * 255).astype(np.uint8)
        Image.fromarray(pixels).convert("RGB").save(folder / f"{frame:05d}.jpg")


def run_stock(predictor, volume: Volume, seeds: SeedMasks, slice_range: SliceRange, window: Window,
              device: torch.device) -> tuple[float, np.ndarray]:
    """Time the stock pipeline once; returns (seconds, label frames (N, H, W))."""
    folder = Path(tempfile.mkdtemp(prefix="sam2med-bench-jpeg-"))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    labels = seeds.labels
    try:
        _sync(device)
        start = time.perf_counter()
        write_jpeg_slices(volume, seeds.axis, window, slice_range, folder)
        with torch.inference_mode(), autocast, no_bars_off_terminal():
            state = predictor.init_state(video_path=str(folder))
            for label in labels:
                for s, mask in sorted(seeds.masks[label].items()):
                    predictor.add_new_mask(state, s - slice_range.start, label, torch.from_numpy(np.ascontiguousarray(mask)))
            logits: dict[int, torch.Tensor] = {}
            for reverse in (False, True):
                for frame, obj_ids, mask_logits in predictor.propagate_in_video(state, reverse=reverse):
                    logits[frame] = mask_logits[:, 0].float().cpu()  # (O, H, W)
        _sync(device)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    height, width = next(iter(logits.values())).shape[-2:]
    frames = np.zeros((len(slice_range), height, width), dtype=np.int32)
    values = np.array(labels)
    for frame, frame_logits in logits.items():
        best = frame_logits.argmax(dim=0).numpy()
        frames[frame] = np.where(frame_logits.max(dim=0).values.numpy() > 0, values[best], 0)
    return seconds, frames


# ------------------------------------------------------------------------------------------------ bench


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a > 0, b > 0
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else round(2.0 * int((a & b).sum()) / total, 4)


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _median(values: list[float]) -> float:
    return round(float(statistics.median(values)), 3)


def run_bench(
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
    cache_gb: float | None = None,
    stretch_slices: int | None = None,
    stock: bool = True,
    monailabel: bool = False,
    log: Callable[[str], None] = logger.info,
) -> dict:
    """Measure stock, first (cold cache) and cached (warm) propagation of one request; returns the report."""
    from sam2med.engine import Propagator

    axis_ = Axis.parse(axis)
    volume = load_volume(image)
    seed_volume = load_label(seed)
    if stretch_slices:
        volume, seed_volume = stretch_volume(volume, seed_volume, axis_, int(stretch_slices))
    rng = SliceRange.parse(slice_range, volume.grid.num_slices(axis_))
    seeds = seeds_from_label(seed_volume.array, seed_volume.grid, volume.grid, axis_, rng, parse_labels(labels))
    win = Window.parse(window, guess_modality(volume.array, volume.modality))

    load_before = _load_average()
    start = time.perf_counter()
    cache_bytes = int(cache_gb * 2**30) if cache_gb else None
    propagator = Propagator(model=model, checkpoint=checkpoint, device=device, image_size=image_size,
                            cache_bytes=cache_bytes, precision=precision)
    dev = propagator.device
    load_s = time.perf_counter() - start
    stock_predictor = build_stock_predictor(propagator.model_name, propagator.checkpoint, dev, propagator.image_size) if stock else None
    n = len(rng)
    log(f"bench: {n} slices {rng} ({axis_.name.lower()}), labels {seeds.labels}, {propagator.model_name} at "
        f"{propagator.image_size} px on {dev} ({propagator.precision}), {repeat} repeat(s)")

    times: dict[str, list[float]] = {"stock": [], "first": [], "cached": []}
    split: dict[str, list[float]] = {"first_encode": [], "first_track": [], "cached_track": []}
    peaks: dict[str, float] = {"stock": 0.0, "first": 0.0, "cached": 0.0}
    stock_frames = first_label = cached_label = None
    first_result = cached_result = None
    meter = PeakMemory(dev)
    for run in range(max(1, int(repeat))):
        if stock_predictor is not None:
            with meter.measure():
                seconds, stock_frames = run_stock(stock_predictor, volume, seeds, rng, win, dev)
            times["stock"].append(seconds)
            peaks["stock"] = max(peaks["stock"], meter.peak_mb)
            log(f"  run {run + 1}: stock {seconds:.2f}s")
        propagator.cache.clear()
        with meter.measure():
            _sync(dev)
            start = time.perf_counter()
            first_result = propagator.propagate(volume, seeds, rng, window=win)
            _sync(dev)
            times["first"].append(time.perf_counter() - start)
        peaks["first"] = max(peaks["first"], meter.peak_mb)
        with meter.measure():
            start = time.perf_counter()
            cached_result = propagator.propagate(volume, seeds, rng, window=win)
            _sync(dev)
            times["cached"].append(time.perf_counter() - start)
        peaks["cached"] = max(peaks["cached"], meter.peak_mb)
        split["first_encode"].append(first_result.encode_seconds)
        split["first_track"].append(first_result.track_seconds)
        split["cached_track"].append(cached_result.track_seconds)
        log(f"  run {run + 1}: first {times['first'][-1]:.2f}s (encode {first_result.encode_seconds:.2f}s, "
            f"track {first_result.track_seconds:.2f}s), cached {times['cached'][-1]:.2f}s")
        first_label, cached_label = first_result.label, cached_result.label

    first_s, cached_s = _median(times["first"]), _median(times["cached"])
    stock_s = _median(times["stock"]) if times["stock"] else None
    report: dict = {
        "stock_s": stock_s,
        "first_s": first_s,
        "cached_s": cached_s,
        "slices": n,
        "device": str(dev),
        "model": propagator.model_name,
        "peak_mem_mb": round(max(peaks["first"], peaks["cached"]), 1),
        "stock_slices_per_s": round(n / stock_s, 3) if stock_s else None,
        "first_slices_per_s": round(n / first_s, 3),
        "cached_slices_per_s": round(n / cached_s, 3),
        # extras
        "first_vs_stock": round(stock_s / first_s, 2) if stock_s else None,
        "cached_vs_first": round(first_s / cached_s, 2),
        "cached_vs_stock": round(stock_s / cached_s, 2) if stock_s else None,
        "peak_mem_mb_by_phase": {k: round(v, 1) for k, v in peaks.items() if times[k]},
        "peak_mem_kind": "torch.cuda.max_memory_allocated" if dev.type == "cuda" else "process RSS, sampled every 20 ms",
        "first_encode_s": _median(split["first_encode"]),
        "first_track_s": _median(split["first_track"]),
        "cached_track_s": _median(split["cached_track"]),
        "runs_s": {k: [round(v, 3) for v in vals] for k, vals in times.items() if vals},
        "repeat": max(1, int(repeat)),
        "image": str(image),
        "seed": str(seed),
        "stretched_to_slices": int(stretch_slices) if stretch_slices else None,
        "range": [rng.start, rng.end],
        "axis": axis_.name.lower(),
        "labels": seeds.labels,
        "seed_slices": seeds.slices,
        "window": win.key,
        "image_size": propagator.image_size,
        "precision": propagator.precision,
        "stock_precision": "bf16 autocast" if dev.type == "cuda" else "fp32 (no autocast on CPU, as MONAI Label)",
        "batch_size": propagator.batch_size,
        "checkpoint": str(propagator.checkpoint),
        "model_load_s": round(load_s, 2),
        "cache": cached_result.cache if cached_result else None,
        "cached_equals_first": bool(np.array_equal(first_label, cached_label)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        # the machine's 1-minute load average before and after: other processes on a shared CPU slow every number
        "load_avg_1m": [load_before, _load_average()],
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
    }
    if stock_frames is not None and first_label is not None:
        ours = to_slices(first_label, axis_)[rng.start : rng.end + 1]
        report["stock_vs_first_dice"] = dice(stock_frames, ours)
    if monailabel:
        from sam2med.monailabel.stock_task import run_monailabel

        report["monailabel"] = run_monailabel(Path(image), seeds, propagator.model_name, propagator.checkpoint, dev) \
            if not stretch_slices else {"error": "not run on a stretched volume (it reads the image file)"}
        report["monailabel_s"] = report["monailabel"].get("seconds")
    return report


def summary_line(report: dict) -> str:
    """One line: times, slices per second and the ratios."""
    parts = [f"{report['slices']} slices, {report['model']} @{report['image_size']}px on {report['device']} ({report['precision']}):"]
    if report.get("stock_s") is not None:
        parts.append(f"stock {report['stock_s']:.2f}s ({report['stock_slices_per_s']:.2f} sl/s)")
    parts.append(f"first {report['first_s']:.2f}s ({report['first_slices_per_s']:.2f} sl/s)")
    parts.append(f"cached {report['cached_s']:.2f}s ({report['cached_slices_per_s']:.2f} sl/s)")
    ratios = []
    if report.get("first_vs_stock") is not None:
        ratios.append(f"first {report['first_vs_stock']:.2f}x faster than stock")
    ratios.append(f"cached {report['cached_vs_first']:.2f}x faster than first")
    if report.get("cached_vs_stock") is not None:
        ratios.append(f"cached {report['cached_vs_stock']:.2f}x faster than stock")
    line = " ".join(parts) + " | " + ", ".join(ratios) + f" | peak {report['peak_mem_mb']:.0f} MB"
    if report.get("monailabel_s") is not None:
        line += f" | monailabel {report['monailabel_s']:.2f}s"
    return line
