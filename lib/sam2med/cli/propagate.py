"""`main.py propagate`: seed label + slice range -> full 3D label, on the image's grid."""

from __future__ import annotations

import argparse
import logging

from tqdm import tqdm

from sam2med.cli.common import add_model_arguments, propagator_kwargs
from sam2med.geometry import Axis
from sam2med.io import LABEL_SUFFIXES, check_output_path, load_label, load_volume, save_label, write_json_atomic
from sam2med.prompts import SliceRange, parse_labels, seeds_from_label

logger = logging.getLogger(__name__)

HELP = "propagate seed masks through a slice range (CLI, no server)"
DESCRIPTION = """\
Propagate the structures drawn in SEED through IMAGE with SAM2.1 and write the 3D label to OUT.

SEED is a label volume on IMAGE's grid (same shape, spacing, origin, direction) whose non-zero
voxels lie on one or more slices along --axis: the annotated slices. Each label value is its own
object; OUT keeps the values. Tracking runs both ways from the annotated slices, only inside
--range (inclusive slice indices along --axis); nothing is written outside it.

examples:
  python main.py propagate ct.nii.gz --seed liver_slice.nii.gz --range 20 60 -o liver.nii.gz
  python main.py propagate dicom_folder/ --seed seed.nrrd --axis coronal -o out.nrrd --scores s.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="NIfTI (.nii/.nii.gz), NRRD, MetaImage or a DICOM series folder")
    parser.add_argument("--seed", required=True, metavar="SEED_LABEL", help="label volume with the annotated slice(s)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help=f"output label file ({', '.join(LABEL_SUFFIXES)})")
    parser.add_argument("--range", nargs=2, type=int, metavar=("START", "END"), default=None,
                        help="first and last slice (inclusive) where the structure lies; default: whole volume")
    parser.add_argument("--axis", default="axial", choices=["axial", "coronal", "sagittal"],
                        help="slicing axis: axial = third voxel axis, coronal = second, sagittal = first")
    parser.add_argument("--labels", default=None, metavar="L1,L2", help="propagate only these label values of SEED")
    parser.add_argument("--window", default="auto",
                        help="intensity window: auto (CT soft tissue, else percentiles), a CT preset "
                             "(soft_tissue, abdomen, liver, lung, bone, brain), LEVEL,WIDTH, or percentile[:LOW,HIGH]")
    parser.add_argument("--scores", metavar="FILE.json", default=None, help="write per-slice, per-label scores here")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from sam2med.engine import Propagator

    output = check_output_path(args.output)  # before any work: a folder or a read-only place fails now, not at the end
    if args.scores:
        check_output_path(args.scores, suffixes=None)
    image = load_volume(args.image)
    seed = load_label(args.seed)
    axis = Axis.parse(args.axis)
    slice_range = SliceRange.parse(args.range, image.grid.num_slices(axis))
    seeds = seeds_from_label(seed.array, seed.grid, image.grid, axis, slice_range, parse_labels(args.labels))
    propagator = Propagator(**propagator_kwargs(args))

    bars: dict[str, tqdm] = {}

    def progress(done: int, total: int, stage: str) -> None:
        bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, desc=stage, unit="slice", leave=False))
        bar.update(done - bar.n)

    result = propagator.propagate(image, seeds, slice_range, window=args.window, progress=progress)
    for bar in bars.values():
        bar.close()
    save_label(result.label, image.grid, output)
    report = result.to_json()
    if args.scores:
        write_json_atomic(report, args.scores)
    print(f"{output}: labels {seeds.labels}, {result.slices_processed} slices ({slice_range}, {axis.name.lower()}) "
          f"in {result.seconds:.1f}s (encode {result.encode_seconds:.1f}s, track {result.track_seconds:.1f}s)")
    for label, info in report["labels"].items():
        per_slice = " ".join(f"{s['slice']}:{s['object_score']:.2f}" for s in info["slices"])
        print(f"  label {label}: {info['voxels']} voxels, mean object score {info['mean_object_score']}; per slice {per_slice}")
    return 0
