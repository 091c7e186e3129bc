"""`main.py bench`: our propagation (cold and warm feature cache) against the stock SAM2 video pipeline."""

from __future__ import annotations

import argparse
import json

from sam2med.cli.common import add_model_arguments

HELP = "benchmark: stock SAM2 video pipeline vs our first (cold cache) and cached requests"
DESCRIPTION = """\
Measure, in one run on the same volume, checkpoint and device:

  stock_s   the stock pipeline as MONAI Label's SAM2 task and the medical SAM2 studies drive it: the
            range's slices written as JPEG to a folder, sam2's SAM2VideoPredictor, init_state on the
            folder, add_new_mask on the seed slice(s), propagate_in_video forward and reverse
  first_s   our propagation on an empty feature cache (batched encoding + tracking from the features)
  cached_s  the same request again, its features cached

plus slices, device, model, peak memory (peak_mem_mb: CUDA allocator peak, or sampled process RSS on
CPU) and slices per second for each, written to --json, and a one-line summary with the ratios.
Model loading is not timed. With --repeat N each measurement is taken N times (interleaved) and the
median is reported. This is a benchmark, not a test: the numbers depend on the machine and its load.

With --latency it measures instead what an annotator waits for after a stroke (docs/performance.md,
"Latency from stroke end"): stroke end -> first painted slices (a request over the seed's slice +- --near
slices) and -> the whole --range painted, each on a cold feature cache and after a warm-up of the series
(POST /sam2med/warmup), and the near request idle vs while a warm-up runs (yielding, and not yielding).

examples:
  python main.py bench ct.nii.gz --seed seed.nii.gz --range 10 19 --checkpoint sam2.1_hiera_tiny.pt --json b.json
  python main.py bench ct.nii.gz --seed seed.nii.gz --stretch-slices 300 --device cuda --monailabel --json b.json
  python main.py bench ct.nii.gz --seed seed.nii.gz --latency --near 2 --image-size 512 --repeat 3 --json lat.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image volume (NIfTI, NRRD, MetaImage or a DICOM series folder)")
    parser.add_argument("--seed", required=True, metavar="SEED_LABEL", help="label volume with the annotated slice(s)")
    parser.add_argument("--range", nargs=2, type=int, metavar=("START", "END"), default=None,
                        help="first and last slice (inclusive); default: whole volume")
    parser.add_argument("--axis", default="axial", choices=["axial", "coronal", "sagittal"], help="slicing axis")
    parser.add_argument("--labels", default=None, metavar="L1,L2", help="use only these label values of SEED")
    parser.add_argument("--window", default="auto", help="intensity window (as for propagate)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="measure each pipeline N times; report medians")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                        help="our compute dtype: auto = bf16 autocast on CUDA and on CPUs with AMX/AVX512-BF16, else fp32 "
                             "(the stock pipeline runs as MONAI Label runs it: bf16 autocast on CUDA, fp32 on CPU)")
    parser.add_argument("--cache-gb", type=float, default=None, metavar="GB",
                        help="feature cache budget; default: half the free GPU memory, or a quarter of RAM (at most 8 GiB)")
    parser.add_argument("--stretch-slices", type=int, default=None, metavar="N",
                        help="first resample IMAGE and SEED to N slices along --axis by repeating slices (speed tests "
                             "on long volumes, e.g. 300)")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock pipeline")
    parser.add_argument("--monailabel", action="store_true",
                        help="also time MONAI Label's own Sam2InferTask (child process; needs a torchvision that imports)")
    parser.add_argument("--latency", action="store_true",
                        help="measure stroke end -> first painted slices / full range, cold and warmed up, and requests "
                             "during a warm-up (no stock pipeline; --stretch-slices and --monailabel do not apply)")
    parser.add_argument("--near", type=int, default=2, metavar="K",
                        help="with --latency: the first painted slices are the seed slices +- K")
    parser.add_argument("--json", required=True, metavar="OUT", help="write the measurements here (JSON)")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from sam2med.bench import run_bench, summary_line
    from sam2med.io import write_json_atomic

    if args.latency:
        return run_latency(args)

    report = run_bench(
        args.image, args.seed, slice_range=args.range, axis=args.axis, labels=args.labels, window=args.window,
        model=args.model, checkpoint=args.checkpoint, device=args.device, image_size=args.image_size,
        precision=args.precision, repeat=args.repeat, cache_gb=args.cache_gb, stretch_slices=args.stretch_slices,
        stock=not args.no_stock, monailabel=args.monailabel, log=print,
    )
    write_json_atomic(report, args.json)
    print(json.dumps({k: report[k] for k in ("stock_s", "first_s", "cached_s", "slices", "device", "model", "peak_mem_mb")}))
    print(summary_line(report))
    return 0


def run_latency(args: argparse.Namespace) -> int:
    from sam2med.bench_latency import run_latency_bench, summary_lines
    from sam2med.errors import InputError
    from sam2med.io import write_json_atomic

    if args.stretch_slices or args.monailabel:
        raise InputError("--latency takes neither --stretch-slices nor --monailabel")
    if args.near < 0:
        raise InputError(f"--near must be 0 or more, got {args.near}")
    report = run_latency_bench(
        args.image, args.seed, slice_range=args.range, axis=args.axis, labels=args.labels, window=args.window,
        model=args.model, checkpoint=args.checkpoint, device=args.device, image_size=args.image_size,
        precision=args.precision, repeat=args.repeat, near=args.near, cache_gb=args.cache_gb, log=print,
    )
    write_json_atomic(report, args.json)
    for line in summary_lines(report):
        print(line)
    return 0
