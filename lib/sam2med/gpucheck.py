"""The GPU check that scripts/gpu_check.sh runs from an offline install of the engine profile (docs/performance.md).

    python -m sam2med.gpucheck OUT_DIR --ct CT --seg SEG --checkpoint PT [--device cuda] [--reduced]

Writes OUT_DIR/gpu_check.json and one JSON per benchmark:
  bench_30       `bench` on the 30-slice CT (stock vs first vs cached, bf16 on CUDA, peak memory)
  bench_300      the same on the CT stretched to 300 slices
  peak_1000      peak memory (and time) of one first and one cached request at 1000 slices (no stock run)
  oom            CUDA out-of-memory recovery: a request that cannot fit (the process capped to a sliver of the
                 GPU) must fail with a clear error, leave the feature cache trimmed, and the next request in
                 the same process must succeed with the label of the same request before the failure
  concurrency    8 concurrent propagations on 2 volumes through one shared Propagator (as the server runs
                 them): p50/p95 latency, and every result equal to its volume's result computed alone
--reduced: the same steps at 256 px on 5/40/60 slices (the end-to-end test of this script on a CPU).
Each step is recorded as {"ok": true|false, ...}; a failing step does not stop the others. Exit 1 when one failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

logger = logging.getLogger("sam2med.gpucheck")

# "range": slices each side of the seed slice (None: the whole volume)
FULL = {"image_size": None, "range": None, "stretch": 300, "peak": 1000, "oom_slices": 4000}
REDUCED = {"image_size": 256, "range": 2, "stretch": 60, "peak": 90, "oom_slices": 60}
CONCURRENT = 8


def _liver_seed(seg_path: Path, out: Path, value: int = 5) -> tuple[Path, int, int]:
    """A seed of label `value` (the liver) on its largest axial slice only, on the segmentation's grid."""
    from sam2med.io import load_label, save_label

    seg = load_label(seg_path)
    areas = (seg.array == value).sum(axis=(0, 1))
    z = int(np.argmax(areas))
    seed = np.zeros(seg.array.shape, dtype=np.uint8)
    seed[:, :, z] = np.where(seg.array[:, :, z] == value, value, 0)
    return save_label(seed, seg.grid, out), z, seg.array.shape[2]


def _range(args: argparse.Namespace, stretch: int | None = None) -> tuple[int, int] | None:
    """The requests' slice range: the seed slice (where bench.stretch_volume puts it on `stretch` slices)
    +- REDUCED["range"], or the whole volume."""
    half = (REDUCED if args.reduced else FULL)["range"]
    if half is None:
        return None
    z = args.seed_slice
    if stretch:
        source = np.minimum((np.arange(stretch) + 0.5) * args.num_slices / stretch, args.num_slices - 1).astype(int)
        copies = np.flatnonzero(source == z)
        z = int(copies[len(copies) // 2])
    return max(0, z - half), z + half


def _bench(args: argparse.Namespace, seed: Path, name: str, stretch: int | None, stock: bool = True) -> dict:
    from sam2med.bench import run_bench

    slice_range = _range(args, stretch)
    report = run_bench(args.ct, seed, slice_range=slice_range, checkpoint=args.checkpoint, device=args.device,
                       image_size=(REDUCED if args.reduced else FULL)["image_size"], precision="bf16" if args.device.startswith("cuda") else "auto",
                       stretch_slices=stretch, stock=stock)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2))
    keys = ("slices", "stock_s", "first_s", "cached_s", "peak_mem_mb", "first_slices_per_s", "cached_slices_per_s", "precision")
    return {"ok": True, "file": f"{name}.json", **{k: report.get(k) for k in keys if k in report}}


def _requests(args: argparse.Namespace, seed_path: Path):
    """Two volumes (the CT, and the CT mirrored left-right with its seed as label 7) and their requests."""
    from sam2med.geometry import Axis
    from sam2med.io import Volume, load_label, load_volume
    from sam2med.prompts import SliceRange, seeds_from_label

    ct, seed = load_volume(args.ct), load_label(seed_path)
    mirrored = Volume(np.ascontiguousarray(ct.array[::-1]), ct.grid, ct.modality, f"{ct.source} (mirrored)")
    mirrored_seed = np.ascontiguousarray(np.where(seed.array[::-1] > 0, 7, 0).astype(np.uint8))
    requests = []
    for volume, seed_xyz in ((ct, seed.array), (mirrored, mirrored_seed)):
        rng = SliceRange.parse(_range(args), volume.grid.num_slices(Axis.AXIAL))
        requests.append((volume, seeds_from_label(seed_xyz, volume.grid, volume.grid, Axis.AXIAL, rng), rng))
    return requests


def _propagator(args: argparse.Namespace, **kwargs):
    from sam2med.engine import Propagator

    size = REDUCED if args.reduced else FULL
    return Propagator(checkpoint=args.checkpoint, device=args.device, image_size=size["image_size"],
                      precision="bf16" if args.device.startswith("cuda") else "auto", **kwargs)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _concurrency(args: argparse.Namespace, seed_path: Path) -> dict:
    """8 requests at once (4 per volume) through one Propagator, against each volume's request run alone."""
    propagator = _propagator(args)
    requests = _requests(args, seed_path)
    alone = [propagator.propagate(v, s, r).label for v, s, r in requests]
    propagator.cache.clear()  # the concurrent requests start cold: they encode (and share) the features themselves

    def one(i: int) -> tuple[int, float, np.ndarray]:
        volume, seeds, rng = requests[i % 2]
        start = time.perf_counter()
        label = propagator.propagate(volume, seeds, rng).label
        return i % 2, time.perf_counter() - start, label

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(one, range(CONCURRENT)))
    wall = time.perf_counter() - start
    latencies = sorted(r[1] for r in results)
    checks = []
    for which, _, label in results:
        own, other = (5, 7) if which == 0 else (7, 5)
        checks.append({"volume": which, "values": sorted(int(v) for v in np.unique(label) if v),
                       "dice_vs_alone": round(_dice(label == own, alone[which] == own), 4),
                       "identical": bool(np.array_equal(label, alone[which])),
                       "other_label_voxels": int((label == other).sum())})
    # exact on the CPU; CUDA kernels may differ in the last bits between runs: a Dice of 0.99 or more there
    wrong = [c for c in checks if c["other_label_voxels"] or c["dice_vs_alone"] < (0.99 if args.device.startswith("cuda") else 1.0)]
    return {"ok": not wrong, "requests": CONCURRENT, "volumes": 2, "wall_s": round(wall, 3),
            "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(latencies[min(len(latencies) - 1, int(np.ceil(0.95 * len(latencies))) - 1)], 3),
            "wrong_labels": len(wrong), "results": checks}


def _oom(args: argparse.Namespace, seed_path: Path) -> dict:
    """A request that cannot fit, then the next one in the same process (CUDA only)."""
    if not args.device.startswith("cuda"):
        return {"ok": True, "skipped": "needs CUDA: out-of-memory recovery is a GPU property"}
    import torch

    from sam2med.bench import stretch_volume
    from sam2med.errors import Sam2MedError
    from sam2med.geometry import Axis
    from sam2med.io import load_label
    from sam2med.prompts import SliceRange, seeds_from_label

    size = REDUCED if args.reduced else FULL
    propagator = _propagator(args)
    volume, seeds, rng = _requests(args, seed_path)[0]
    before = propagator.propagate(volume, seeds, rng).label
    big, big_seed = stretch_volume(volume, load_label(seed_path), Axis.AXIAL, size["oom_slices"])
    big_seeds = seeds_from_label(big_seed.array, big.grid, big.grid, Axis.AXIAL, SliceRange.parse(None, size["oom_slices"]))
    device = torch.device(args.device)
    used = torch.cuda.memory_allocated(device)
    total = torch.cuda.get_device_properties(device).total_memory
    # the process may use what it holds now plus 512 MiB: the long request cannot fit
    torch.cuda.set_per_process_memory_fraction(min(1.0, (used + 512 * 2**20) / total), device)
    cache_before = propagator.cache.stats()
    error = None
    try:
        propagator.propagate(big, big_seeds)
    except Exception as err:  # what the product raises is what is recorded
        message = str(err)
        # clear: the product's own error (one line, what to do), not torch's allocator report
        error = {"type": f"{type(err).__module__}.{type(err).__name__}", "message": message[:500],
                 "clear": isinstance(err, Sam2MedError) and "\n" not in message.strip(),
                 "is_out_of_memory": isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in message.lower()}
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    cache_after = propagator.cache.stats()
    clear = bool(error and error["clear"])
    after, next_error = None, None
    try:
        after = propagator.propagate(volume, seeds, rng).label
    except Exception as err:
        next_error = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    result = {"failed_as_expected": error is not None, "error": error,
              "clear_error": clear,
              "cache_bytes_before": cache_before["bytes"], "cache_bytes_after": cache_after["bytes"],
              "cache_trimmed": cache_after["bytes"] < cache_before["bytes"] or cache_after["bytes"] == 0,
              "next_request_ok": after is not None, "next_request_error": next_error,
              "next_request_dice_vs_before": None if after is None else round(_dice(after > 0, before > 0), 4)}
    result["ok"] = bool(error is not None and result["clear_error"] and result["cache_trimmed"] and after is not None)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sam2med.gpucheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--ct", type=Path, required=True, help="the 30-slice CT (example_ct_sm.nii.gz)")
    parser.add_argument("--seg", type=Path, required=True, help="its labels (example_seg.nii.gz; the liver is 5)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="SAM2.1-tiny checkpoint (real or random weights)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: run with --reduced)")
    parser.add_argument("--reduced", action="store_true", help="256 px and few slices (the CPU end-to-end test)")
    parser.add_argument("--only", default=None, help="comma-separated steps to run (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    seed, args.seed_slice, args.num_slices = _liver_seed(args.seg, args.out / "liver_seed.nii.gz")
    size = REDUCED if args.reduced else FULL
    steps = {
        "bench_30": lambda: _bench(args, seed, "bench_30", None),
        f"bench_{size['stretch']}": lambda: _bench(args, seed, f"bench_{size['stretch']}", size["stretch"]),
        f"peak_{size['peak']}": lambda: _bench(args, seed, f"peak_{size['peak']}", size["peak"], stock=False),
        "oom": lambda: _oom(args, seed),
        "concurrency": lambda: _concurrency(args, seed),
    }
    wanted = None if args.only is None else {s.strip() for s in args.only.split(",")}
    import torch

    from sam2med import __version__ as version

    summary: dict = {"device": args.device, "reduced": args.reduced, "sizes": size, "seed_slice": args.seed_slice,
                     "checkpoint": str(args.checkpoint), "torch": torch.__version__, "sam2med": version,
                     "gpu": torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else None,
                     "steps": {}}
    started = time.perf_counter()
    for name, step in steps.items():
        if wanted is not None and name.split("_")[0] not in wanted and name not in wanted:
            continue
        logger.info("step %s", name)
        t0 = time.perf_counter()
        try:
            result = step()
        except Exception as err:  # recorded, and the next step runs
            result = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
        result["seconds"] = round(time.perf_counter() - t0, 2)
        summary["steps"][name] = result
        summary["seconds"] = round(time.perf_counter() - started, 2)
        (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2))  # after each step: a timeout keeps the rest
        logger.info("step %s: %s in %.1f s", name, "ok" if result.get("ok") else "FAILED", result["seconds"])
    summary["ok"] = all(s.get("ok") for s in summary["steps"].values())
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    print(f"gpu check {'passed' if summary['ok'] else 'FAILED'}: {args.out / 'gpu_check.json'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
