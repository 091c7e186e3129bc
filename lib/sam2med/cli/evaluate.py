"""`main.py evaluate`: propagation quality on labelled data, with the protocols of the published studies."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.contrib.logging import logging_redirect_tqdm

from sam2med.cli.common import (add_model_arguments, add_ray_arguments, check_model_arguments, check_ray_arguments,
                                make_output_folder, propagator_kwargs)
from sam2med.cli.evaluate_one_prompt import run_one_prompt
from sam2med.cli.evaluate_results import print_results
from sam2med.cli.policies import add_policy_arguments, policy_options
from sam2med.engine.threads import compute_threads
from sam2med.errors import InputError
from sam2med.geometry import Axis

logger = logging.getLogger(__name__)

HELP = "measure propagation on labelled volumes (Dice, IoU, HD95, ASD) with study protocols"
DESCRIPTION = """\
Evaluate a propagator on images with reference label maps: for every case and every label value in it
(one target each), give the propagator a prompt taken from the truth by --protocol over the slice range
chosen by --range, and compare its 3D output with the truth.

Pairing: an image and a label map pair when their names match without the extension (case.nii.gz with
case.nii.gz / case.nrrd ...), or image X_0000.nii.gz with label X.nii.gz (nnU-Net). Images may also be
DICOM series folders, named like the label file.

protocols:
  largest-slice   truth mask on the slice where the target is largest (the default; the seed study's)
  center-slice    truth mask on the middle slice of the target's extent
  multi-slice:N   truth masks on N evenly spaced slices of the extent
  clicks:N        N positive clicks inside the target on its largest slice, plus its box (click study)
  one-prompt      2D pairs (PNG/JPEG/NIfTI/.dcm images, PNG/NIfTI labels): per label, the truth of one prompt
                  case (--prompt-case, else where the label is largest) segments every other case holding it,
                  with the selective memory (MedSAM-2); Dice/IoU/HD95/ASD in 2D with the pixel spacing
                  (pixels for PNG/JPEG); the prompt case's row has status prompt and is not in the means;
                  --range, --axis, --propagator and --compare do not apply
ranges: truth (the target's first..last slice), full (whole volume), margin:K (truth +- K slices),
  auto (sam2 only: whole volume, each target stops where SAM2 loses it; references run the whole volume)
propagators: sam2 (the engine; needs a checkpoint), registration (slice-to-slice demons registration,
  SimpleITK) and copy (the seed copied to every slice: the lower bound); the last two need no weights
  and use the click prompt's box as their mask.

outputs in --out: results.csv (one row per case and target), summary.json and summary.md (mean, std,
median per target and overall; failed cases), dice_by_organ.png (mean Dice per organ, sorted, the --compare
references side by side, titled with the case and modality), previews/CASE.gif and .png (truth green,
prediction red; every frame names the case, slice and organs), predictions/CASE.nii.gz with --save-predictions.
Exit status: 0 when at least one case was evaluated, 1 when none was (every case failed or was skipped),
2 for unusable inputs (empty folder, nothing pairs, bad option).

Ray (docs/batch.md): --ray local --workers N evaluates cases in parallel on this machine, --ray auto joins
a cluster ('ray start --head'); each worker holds the propagators, a case runs on one worker, results.csv
is the same as without Ray (only `seconds` differ). Workers read the images and labels themselves.

examples:
  python main.py evaluate --images imgs/ --labels labels/ --propagator registration --out eval_reg
  python main.py evaluate --images imgs/ --labels labels/ --propagator registration --ray local --workers 2 --out eval_reg
  python main.py evaluate --images imgs/ --labels labels/ --labels-map labels.json:total --label liver \\
      --protocol clicks:3 --range margin:2 --checkpoint sam2.1_hiera_tiny.pt --out eval_sam2
  python main.py evaluate --protocol one-prompt --images slices/ --labels slice_labels/ --out eval_1p \\
      --save-predictions
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sam2med.evaluation.propagators import NAMES

    parser.add_argument("--images", required=True, metavar="DIR", help="folder of images (files or DICOM series folders)")
    parser.add_argument("--labels", required=True, metavar="DIR", help="folder of reference label maps, named like the images")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--labels-map", metavar="FILE[:KEY]", default=None,
                        help='label names: a flat {"liver": 5} or {"5": "liver"} JSON, or one map of a file of maps by KEY')
    parser.add_argument("--label", action="append", metavar="VALUE|NAME", default=None,
                        help="evaluate only this label (repeatable); default: every label present in each case")
    parser.add_argument("--protocol", default="largest-slice",
                        help="largest-slice, center-slice, multi-slice:N, clicks:N, or one-prompt (2D image/label pairs)")
    parser.add_argument("--prompt-case", metavar="NAME", default=None,
                        help="with --protocol one-prompt: the case whose truth is the prompt for every label (default: "
                             "per label, the case where it is largest)")
    parser.add_argument("--range", dest="range_spec", default="truth", help="truth, full, margin:K or auto")
    parser.add_argument("--propagator", choices=list(NAMES), default="sam2", help="what is evaluated")
    parser.add_argument("--axis", default="axial", choices=["axial", "coronal", "sagittal"], help="slicing axis")
    parser.add_argument("--min-slices", type=int, default=1, metavar="K",
                        help="skip targets present on fewer than K slices along --axis (listed as skipped)")
    parser.add_argument("--window", default="auto", help="intensity window for sam2, registration and previews (see propagate)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the click sampling")
    parser.add_argument("--preview", action="append", metavar="CASE", default=None, help="write previews of this case (repeatable)")
    parser.add_argument("--previews", type=int, default=1, metavar="N", help="write previews of the first N cases (besides --preview)")
    parser.add_argument("--preview-format", choices=["gif", "png", "both"], default="both", help="animated GIF, PNG strip, or both")
    parser.add_argument("--preview-label", metavar="VALUE|NAME", default=None,
                        help="show only this target in the previews (default: every evaluated target)")
    parser.add_argument("--compare", action="append", choices=[n for n in NAMES if n != "sam2"], default=None,
                        help="also run this weight-free reference on the same prompts (repeatable); its rows go to "
                             "results.csv and summary.json, its bars next to the main propagator's in dice_by_organ.png")
    parser.add_argument("--save-predictions", action="store_true", help="write each case's predicted label map to predictions/")
    add_ray_arguments(parser)
    add_policy_arguments(parser)
    add_model_arguments(parser)


def _config(args: argparse.Namespace):
    from sam2med.evaluation.labelmap import read_labels_map, resolve_labels
    from sam2med.evaluation.protocols import Protocol, RangeSpec
    from sam2med.evaluation.runner import EvaluationConfig

    from sam2med.windowing import Window

    Window.parse(args.window, "CT")  # argument errors before any image or model is loaded
    check_model_arguments(args)
    names = read_labels_map(args.labels_map) if args.labels_map else {}
    if args.min_slices < 1:
        raise InputError("--min-slices must be at least 1")
    return EvaluationConfig(
        protocol=Protocol.parse(args.protocol), range_spec=RangeSpec.parse(args.range_spec), axis=Axis.parse(args.axis),
        labels=resolve_labels(args.label, names), names=names, min_slices=args.min_slices, seed=args.seed,
    )


class _CaseWriter:
    """Writes the per-case pictures and predictions while the case's arrays are still in memory."""

    def __init__(self, args: argparse.Namespace, out: Path, preview_cases: set[str], axis: Axis, names: dict[int, str],
                 preview_label: int | None):
        self.args, self.out, self.preview_cases, self.axis = args, out, preview_cases, axis
        self.names, self.preview_label = names, preview_label
        self.modalities: dict[str, str] = {}

    def __call__(self, outcome) -> None:
        from sam2med.evaluation import pictures
        from sam2med.io import save_label

        from sam2med.windowing import guess_modality

        if outcome.prediction is None or not any(t.ok for t in outcome.targets):
            return
        name = outcome.case.name
        self.modalities[name] = guess_modality(outcome.volume.array, outcome.volume.modality)
        if self.args.save_predictions:
            (self.out / "predictions").mkdir(exist_ok=True)
            save_label(outcome.prediction, outcome.volume.grid, self.out / "predictions" / f"{name}.nii.gz")
        if name not in self.preview_cases:
            return
        shown = [t for t in outcome.targets if t.ok and self.preview_label in (None, t.label)]
        if not shown:
            logger.warning("case %s: no evaluated target %s to preview", name, self.preview_label)
            return
        values = [t.label for t in shown]
        truth = np.where(np.isin(outcome.truth, values), outcome.truth, 0)
        prediction = np.where(np.isin(outcome.prediction, values), outcome.prediction, 0)
        frames, indices = pictures.preview_frames(outcome.volume, truth, prediction, self.axis, self.args.window)
        if not frames:
            return
        seeds: dict[int, list[str]] = {}
        for target in shown:
            for index in target.seed_slices:
                seeds.setdefault(index, []).append(target.name)
        captions = pictures.frame_captions(name, self.axis, indices, outcome.volume.grid.num_slices(self.axis), truth,
                                           prediction, self.names, seeds)
        frames = [pictures.caption_frame(frame, lines) for frame, lines in zip(frames, captions)]
        folder = self.out / "previews"
        folder.mkdir(exist_ok=True)
        if self.args.preview_format in ("gif", "both"):
            pictures.write_gif(frames, folder / f"{name}.gif")
        if self.args.preview_format in ("png", "both"):
            pictures.write_strip(frames, folder / f"{name}.png")


def _chart_title(outcomes, modalities: dict[str, str], methods: list[str], config) -> str:
    evaluated = [o.case.name for o in outcomes if o.evaluated]
    kinds = ", ".join(sorted(set(modalities.values()))) or "?"
    cases = f"case {evaluated[0]} ({kinds})" if len(evaluated) == 1 else f"{len(evaluated)} cases ({kinds}), mean per organ"
    return f"Dice per organ: {cases}\n{' vs '.join(methods)}; protocol {config.protocol}, range {config.range_spec}, {config.axis.name.lower()}"


def _evaluate_on_ray(args: argparse.Namespace, cases: list, sam2_kwargs: dict, compare: list[str], config,
                     writer: _CaseWriter) -> tuple[list, dict[str, list], dict]:
    """Every case on a Ray actor holding the propagators; the driver writes previews and predictions as cases arrive."""
    from sam2med.distributed.ray_pool import RayPool
    from sam2med.evaluation.runner import CaseEvaluator, collect_outcomes

    cases = [replace(c, image=c.image.absolute(), label=c.label and c.label.absolute()) for c in cases]  # workers' own folders
    with RayPool(args.ray, args.workers, args.threads, CaseEvaluator, args.propagator, args.window, sam2_kwargs, compare, config) as pool:
        by_name = collect_outcomes(cases, pool.stream([[case] for case in cases], "run"), [args.propagator, *compare], on_case=writer)
        model = {"model": pool.info[0]["model"]} if "model" in pool.info[0] else {}
    return by_name.pop(args.propagator), by_name, model


def run(args: argparse.Namespace) -> int:
    from sam2med.evaluation import pictures
    from sam2med.evaluation.pairing import pair_cases
    from sam2med.evaluation.propagators import make_propagator
    from sam2med.evaluation.report import summarise, write_results_csv, write_summary
    from sam2med.evaluation.runner import run_evaluation
    from sam2med.provenance import model_provenance

    check_ray_arguments(args)
    if args.protocol.strip().lower() == "one-prompt":
        if args.ray:
            raise InputError("--ray applies to the 3D protocols; one-prompt runs its 2D cases in one process")

        return run_one_prompt(args)
    if args.prompt_case is not None:
        raise InputError("--prompt-case applies to --protocol one-prompt only")
    config = _config(args)
    auto = config.range_spec.kind == "auto"
    policies = policy_options(args, auto)
    if args.propagator != "sam2" and (auto or policies["memory"] is not None):
        raise InputError("--range auto and --memory selective are sam2's tracking policies: use --propagator sam2")
    cases = pair_cases(Path(args.images), Path(args.labels))
    out = make_output_folder(Path(args.out))
    names = [c.name for c in cases]
    for unknown in sorted(set(args.preview or []) - set(names)):
        logger.warning("--preview %s: no such case (cases: %s)", unknown, ", ".join(names[:10]))
    preview_cases = set(args.preview or []) | set(names[: max(args.previews, 0)])
    preview_label = None
    if args.preview_label is not None:
        from sam2med.evaluation.labelmap import resolve_labels

        preview_label = resolve_labels([args.preview_label], config.names)[0]

    # Ray workers may run in other folders: they get the checkpoint's absolute path
    sam2_kwargs = {**propagator_kwargs(args, absolute=bool(args.ray)), **policies} if args.propagator == "sam2" else {}
    compare = [name for name in dict.fromkeys(args.compare or []) if name != args.propagator]
    logger.info("evaluating %d case(s) with %s, protocol %s, range %s", len(cases), args.propagator, config.protocol, config.range_spec)
    writer = _CaseWriter(args, out, preview_cases, config.axis, config.names, preview_label)
    with logging_redirect_tqdm():
        if args.ray:
            outcomes, references, model = _evaluate_on_ray(args, cases, sam2_kwargs, compare, config, writer)
        else:
            with compute_threads(args.threads):
                method = make_propagator(args.propagator, window=args.window, **sam2_kwargs)
                outcomes = run_evaluation(cases, method, config, on_case=writer)
                references = {name: run_evaluation(cases, make_propagator(name, window=args.window), config) for name in compare}
            engine = getattr(method, "engine", None)
            model = {"model": model_provenance(engine)} if engine is not None else {}  # name, input size, checkpoint: runs compare

    results = [t for o in outcomes for t in o.targets]
    summary = summarise(outcomes, {"propagator": args.propagator, **model, **config.to_json(),
                                   "images": str(args.images), "labels": str(args.labels)})
    if references:
        summary["references"] = {name: {key: part[key] for key in ("overall", "targets")}
                                 for name, part in ((n, summarise(o, {})) for n, o in references.items())}
    write_results_csv(results + [t for outs in references.values() for o in outs for t in o.targets], out / "results.csv")
    write_summary(summary, out)
    groups = {args.propagator: results, **{n: [t for o in outs for t in o.targets] for n, outs in references.items()}}
    pictures.dice_chart(groups, out / "dice_by_organ.png", title=_chart_title(outcomes, writer.modalities, list(groups), config))
    return print_results(summary, len(outcomes), out, model.get("model"))
