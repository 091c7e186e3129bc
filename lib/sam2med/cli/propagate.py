"""`main.py propagate`: seed label + slice range -> full 3D label, on the image's grid."""

from __future__ import annotations

import argparse
import logging

from sam2med.cli.common import add_model_arguments, check_model_arguments, cpu_advice, propagator_kwargs
from sam2med.cli.policies import add_policy_arguments, policy_options
from sam2med.engine.overlap import OVERLAP_POLICIES, parse_overlap
from sam2med.evaluation.labelmap import read_labels_map, resolve_labels
from sam2med.geometry import Axis
from sam2med.io import LABEL_SUFFIXES, check_file, check_output_path, load_label, load_volume, save_label, write_json_atomic
from sam2med.labelnames import keyed_by_name, label_name
from sam2med.progress import StageBars
from sam2med.prompts import RangeRequest, parse_labels, seed_prompt
from sam2med.provenance import RANDOM_WEIGHTS_NOTE, describe_file, provenance
from sam2med.windowing import Window

logger = logging.getLogger(__name__)

HELP = "propagate seed masks through a slice range (CLI, no server)"
DESCRIPTION = """\
Propagate the structures drawn in SEED through IMAGE with SAM2.1 and write the 3D label to OUT.

SEED is a label volume on IMAGE's grid (same shape, spacing, origin, direction) whose non-zero
voxels lie on one or more slices along --axis: the annotated slices. Each label value is its own
object; OUT keeps the values. Tracking runs both ways from the annotated slices, only inside
--range (inclusive slice indices along --axis); nothing is written outside it. On an annotated slice
a label is written exactly as drawn; where labels meet, --overlap decides (default keep: a drawn or
--lock'ed voxel is never overwritten).

examples:
  python main.py propagate ct.nii.gz --seed liver_slice.nii.gz --range 20 60 -o liver.nii.gz
  python main.py propagate ct.nii.gz --seed kidneys.nii.gz --range 2:12-18 --range 3:10-22 -o kidneys.nii.gz
  python main.py propagate dicom_folder/ --seed seed.nrrd --axis coronal -o out.nrrd --scores s.json
  python main.py propagate ct.nii.gz --seed liver_slice.nii.gz --range auto -o liver.nii.gz --scores s.json
      (no range: each label stops where SAM2 loses it; --scores says where and why)
  python main.py propagate ct.nii.gz --seed organs.nii.gz --range 20 60 --lock 2 -o organs.nii.gz
      (label 2 of the seed, a finished structure, is kept as it is: not tracked, never overwritten)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="NIfTI (.nii/.nii.gz), NRRD, MetaImage or a DICOM series folder")
    parser.add_argument("--seed", required=True, metavar="SEED_LABEL", help="label volume with the annotated slice(s)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help=f"output label file ({', '.join(LABEL_SUFFIXES)})")
    parser.add_argument("--range", nargs="+", action="append", metavar="SPEC", default=None,
                        help="--range START END: first and last slice (inclusive) where the structures lie, for every "
                             "label; --range LABEL:START-END (repeatable, LABEL a value or a --labels-map name) or "
                             "--range '{\"5\": [10, 40]}': a label's own range; --range auto: each label stops, per "
                             "direction, after --absent-slices slices without it. Default: the whole volume")
    parser.add_argument("--axis", default="axial", choices=["axial", "coronal", "sagittal"],
                        help="slicing axis: axial = third voxel axis, coronal = second, sagittal = first")
    parser.add_argument("--labels", default=None, metavar="L1,L2",
                        help="propagate only these labels of SEED: values, or names of --labels-map (e.g. liver,2)")
    parser.add_argument("--labels-map", metavar="FILE[:KEY]", default=None,
                        help='names of the seed\'s label values, reported by name: {"liver": 5} or {"5": "liver"} JSON, '
                             "or one map of a file of maps by KEY")
    parser.add_argument("--window", default="auto",
                        help="intensity window: auto (CT soft tissue, else percentiles), a CT preset "
                             "(soft_tissue, abdomen, liver, lung, bone, brain), LEVEL,WIDTH, or percentile[:LOW,HIGH]")
    parser.add_argument("--overlap", default="keep", metavar="|".join(OVERLAP_POLICIES),
                        help="where labels meet: keep = a voxel drawn with a label (or --lock'ed) is never overwritten; "
                             "overwrite = a propagated label may overwrite another label's drawing; confidence = the more "
                             "confident label wins (the behaviour before keep)")
    parser.add_argument("--lock", nargs="+", action="extend", default=None, metavar="VALUE_OR_NAME",
                        help="labels of SEED (values or --labels-map names) kept exactly as they are in OUT, everywhere: "
                             "not tracked and never overwritten")
    parser.add_argument("--scores", metavar="FILE.json", default=None,
                        help="write per-slice, per-label scores and the provenance (inputs, model, weights, versions) here")
    add_policy_arguments(parser)
    add_model_arguments(parser)


def _group(slices: list[int]) -> str:
    """"3-7, 9, 12-14" for sorted slice indices."""
    runs: list[list[int]] = []
    for s in slices:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) or "none"


LOW_CONFIDENCE = 0.5  # object score under which a propagated slice is listed as doubtful


def summary_lines(report: dict, names: dict[int, str]) -> list[str]:
    """A few lines per label, whatever the range's length: slices grouped, seeds kept as drawn, means without the
    seeds, doubtful slices; a line per locked label."""
    lines = []
    for label, info in report["labels"].items():
        seeds = _group(info["seed_slices"])
        kept = report.get("kept_slices", {}).get(names.get(int(label)) or label)
        if kept is not None and info["seed_slices"]:
            seeds += " (kept as drawn)" if kept == info["seed_slices"] else f" (kept as drawn: {_group(kept)})"
        slices = info["slices"]
        present = [s["slice"] for s in slices if s["area"] > 0]
        low = [s["slice"] for s in slices if not s["seed"] and s["object_score"] < LOW_CONFIDENCE]
        largest = max(slices, key=lambda s: s["area"], default=None)
        mean = info["mean_object_score"]
        lines.append(f"  {label_name(int(label), names)} (value {label}): {info['voxels']} voxels = {info['volume_mm3'] / 1000:.1f} ml "
                     f"(largest: {largest['area_mm2'] if largest else 0:.0f} mm2 on slice {largest['slice'] if largest else '-'}) on slices {_group(present)} of {info['slice_range'][0]}..{info['slice_range'][1]}; "
                     f"seeds {seeds}")
        lines.append(f"    mean object score over propagated slices {'n/a' if mean is None else f'{mean:.2f}'}; "
                     f"below {LOW_CONFIDENCE}: {_group(low)}")
        if "auto_range" in info:
            lines.append("    auto range: " + "; ".join(f"{direction} stopped at slice {stop['stopped_at']} ({stop['reason'].replace('_', ' ')}), "
                                                      f"kept to {stop['last_present']}" for direction, stop in info["auto_range"].items()))
    for key, voxels in report.get("locked_labels", {}).items():
        lines.append(f"  {'label ' + key if key.isdigit() else key}: locked, {voxels} voxels kept as they were")
    return lines


def run(args: argparse.Namespace) -> int:
    from sam2med.engine import Propagator

    output = check_output_path(args.output)  # before any work: a folder or a read-only place fails now, not at the end
    if args.scores:
        check_output_path(args.scores, suffixes=None)
    Window.parse(args.window, "CT")  # a bad window fails before anything is loaded
    names = read_labels_map(args.labels_map) if args.labels_map else {}
    overlap = parse_overlap(args.overlap, "--overlap")
    locked = resolve_labels(args.lock, names, "--lock") or []
    request = RangeRequest.from_groups(args.range)
    policies = policy_options(args, request.auto)
    check_model_arguments(args)
    check_file(args.seed, "seed label")
    image = load_volume(args.image)
    seed = load_label(args.seed)
    axis = Axis.parse(args.axis)
    prompt = seed_prompt(seed.array, seed.grid, image.grid, axis, request, parse_labels(args.labels, {n: v for v, n in names.items()}),
                         names, locked)
    seeds = prompt.seeds
    if prompt.hint:
        print(f"note: {prompt.hint}", flush=True)
    propagator = Propagator(**propagator_kwargs(args))

    bars = StageBars("slice")
    result = propagator.propagate(image, seeds, prompt.slice_range, window=args.window, progress=bars,
                                  label_ranges=prompt.label_ranges, overlap=overlap, locked=prompt.locked, **policies)
    bars.close()
    save_label(result.label, image.grid, output)
    report = result.to_json()
    for label, info in report["labels"].items():
        info["name"] = label_name(int(label), names)
    report["kept_slices"] = keyed_by_name(report["kept_slices"], names)
    report["locked_labels"] = keyed_by_name(report["locked_labels"], names)
    report["provenance"] = provenance(propagator, {"image": describe_file(args.image), "seed": describe_file(args.seed)}, result.window)
    if args.scores:
        write_json_atomic(report, args.scores)
    print(f"{output}: {', '.join(label_name(v, names) for v in seeds.labels)}, {result.slices_processed} slices ({result.slice_range}, "
          f"{axis.name.lower()}) in {result.seconds:.1f}s (encode {result.encode_seconds:.1f}s, track {result.track_seconds:.1f}s)")
    for line in summary_lines(report, names):
        print(line)
    if report["provenance"]["random_weights"]:
        print(RANDOM_WEIGHTS_NOTE)
    advice = cpu_advice(propagator.device.type, propagator.image_size)
    if advice:
        print(advice)
    return 0
