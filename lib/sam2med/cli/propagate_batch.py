"""`main.py propagate-batch`: a manifest of propagations, each row to its own label, locally or on Ray."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sam2med.cli.common import (add_model_arguments, add_ray_arguments, check_model_arguments, check_ray_arguments,
                                make_output_folder, propagator_kwargs)
from sam2med.cli.policies import add_policy_arguments, policy_options
from sam2med.engine.threads import compute_threads
from sam2med.errors import InputError
from sam2med.io import check_output_path

logger = logging.getLogger(__name__)

HELP = "propagate the rows of a manifest (CSV/JSONL), resumable, locally or on a Ray cluster"
DESCRIPTION = """\
Propagate every row of MANIFEST (an image, a seed label on its grid, a slice range) with SAM2.1 and write
one label per row into OUTDIR, plus OUTDIR/results.jsonl: one line per row with its status (ok, failed,
skipped), seconds and the per-label, per-slice confidence of `propagate --scores`.

manifest: a .csv with a header line, or a .jsonl file with one JSON object per line. Columns:
  image   image file or DICOM series folder (required)
  seed    seed label volume on the image's grid (required); see 'propagate --help'
  range   START-END (inclusive slices), auto, per-label items LABEL:START-END separated by spaces or ';'
          (with START-END: the range of the labels without their own), a JSON object {"5": [10, 40]};
          empty: the whole volume
  axis    axial (default), coronal or sagittal
  window  intensity window, as propagate --window (default auto)
  labels  the seed's labels to propagate, e.g. 1,5 or liver,5 with --labels-map (default: all)
  output  output file name inside OUTDIR (default: IMAGE_label.nii.gz)
Relative paths are relative to the manifest's folder.

  image,seed,range,axis,labels,output
  ct/case01.nii.gz,seeds/case01_liver.nii.gz,20-60,axial,5,case01_liver.nii.gz
  ct/case01.nii.gz,seeds/case01_kidneys.nii.gz,auto,,2,case01_kidneys.nii.gz
  mr/case02.nii.gz,seeds/case02.nii.gz,,,,

resuming: a row whose output exists, reads back whole and lies on its image's grid is skipped
("skipped" in results.jsonl); run the same command again after an interruption or a failure.
A failed row (missing file, seed off the image's grid, empty seed, ...) is recorded with its one-line
error and the batch goes on. A manifest error (unknown column, no rows, bad cell) stops before any work.
Exit status: 0 when every row is ok or skipped, 1 when some row failed, 2 for a manifest or option
error, 130 when interrupted (complete outputs and their results.jsonl lines stay; rerun to resume).

Ray (docs/batch.md): --ray local starts Ray on this machine with --workers workers; --ray auto or
--ray HOST:6379 joins a cluster started with 'ray start --head' (each worker takes one GPU when the
cluster has GPUs). The rows of one image go to one worker, which keeps the propagator and the image's
features between them. Workers read the manifest's paths themselves: on several machines, keep
images, seeds and checkpoint on storage every node mounts at the same path.

examples:
  python main.py propagate-batch --manifest cohort.csv -o labels/ --checkpoint sam2.1_hiera_tiny.pt
  python main.py propagate-batch --manifest cohort.jsonl -o labels/ --ray local --workers 2
  python main.py propagate-batch --manifest /shared/cohort.csv -o /shared/labels --ray auto
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, metavar="FILE", help="the rows: a .csv with a header line or a .jsonl file")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    parser.add_argument("--labels-map", metavar="FILE[:KEY]", default=None,
                        help="label names, so that range and labels cells may name labels (liver:10-40, liver); as in propagate")
    add_ray_arguments(parser)
    add_policy_arguments(parser)
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from sam2med.batch.jobs import FAILED, OK, SKIPPED, RowRunner
    from sam2med.batch.manifest import read_manifest
    from sam2med.batch.results import RESULTS_NAME, ResultsLog
    from sam2med.batch.runner import count_statuses, local_executor, run_rows, skip_done, stream_executor
    from sam2med.evaluation.labelmap import read_labels_map

    check_model_arguments(args)
    check_ray_arguments(args)
    out_dir = Path(args.output).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: is a file; give an output folder")
    names = read_labels_map(args.labels_map) if args.labels_map else {}
    rows = read_manifest(args.manifest, out_dir, names)
    policies = policy_options(args, any(row.range.auto for row in rows))
    runner_args = (propagator_kwargs(args, absolute=True), policies["auto"], policies["memory"], names)
    make_output_folder(out_dir)
    check_output_path(out_dir / RESULTS_NAME, suffixes=None)  # a read-only folder fails now, not at every row
    logger.info("%d row(s) of %s -> %s", len(rows), args.manifest, out_dir)
    log = ResultsLog(out_dir / RESULTS_NAME)
    outcomes, todo = skip_done(rows, log)
    if todo and args.ray:
        from sam2med.distributed.ray_pool import RayPool

        with RayPool(args.ray, args.workers, args.threads, RowRunner, *runner_args) as pool:
            outcomes += run_rows(todo, log, stream_executor(pool.stream))
    elif todo:
        with compute_threads(args.threads):
            outcomes += run_rows(todo, log, local_executor(RowRunner(*runner_args)))
    counts = count_statuses(outcomes)
    print(f"{len(rows)} row(s): {counts[OK]} ok, {counts[SKIPPED]} skipped, {counts[FAILED]} failed; "
          f"labels and results.jsonl in {out_dir}/")
    for outcome in sorted((o for o in outcomes if o.status == FAILED), key=lambda o: o.row.number):
        print(f"  row {outcome.row.number} ({outcome.row.image.name}): {outcome.error}")
    return 1 if counts[FAILED] else 0
