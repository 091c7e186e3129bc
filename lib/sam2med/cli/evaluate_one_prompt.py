"""`main.py evaluate --protocol one-prompt`: MedSAM-2's one-prompt segmentation measured on 2D image/label pairs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from sam2med.cli.common import check_model_arguments, make_output_folder, propagator_kwargs
from sam2med.cli.evaluate_results import print_results
from sam2med.errors import InputError
from sam2med.windowing import Window

logger = logging.getLogger(__name__)

# evaluate's options that make no sense for 2D pairs, with their defaults
_NOT_APPLICABLE = {"range_spec": "truth", "axis": "axial", "min_slices": 1, "propagator": "sam2", "compare": None,
                   "absent_slices": None, "min_object_score": None, "max_slices": None, "preview": None,
                   "preview_label": None}


def check_arguments(args: argparse.Namespace) -> None:
    """Options of the 3D protocols given to the 2D one: one clear error each."""
    for name, default in _NOT_APPLICABLE.items():
        if getattr(args, name) != default:
            option = "--range" if name == "range_spec" else f"--{name.replace('_', '-')}"
            reason = ("the weight-free references propagate through the slices of one volume"
                      if name in ("propagator", "compare") else "it belongs to the 3D protocols")
            raise InputError(f"{option} does not apply to --protocol one-prompt ({reason})")
    Window.parse(args.window, "CT")
    check_model_arguments(args)


class _PredictionWriter:
    """predictions/MASK (the image's own format and grid, as `one-prompt` writes them) with --save-predictions."""

    def __init__(self, out: Path, enabled: bool):
        self.folder, self.enabled = out / "predictions", enabled

    def __call__(self, outcome, image) -> None:
        from sam2med.images2d import mask_name, save_mask2d

        if not self.enabled or outcome.prediction is None or not any(t.ok for t in outcome.targets):
            return
        self.folder.mkdir(exist_ok=True)
        save_mask2d(outcome.prediction, image, self.folder / mask_name(image))


def run_one_prompt(args: argparse.Namespace) -> int:
    from sam2med.engine import Propagator
    from sam2med.evaluation import pictures
    from sam2med.evaluation.labelmap import read_labels_map, resolve_labels
    from sam2med.evaluation.oneprompt import PROMPT_CHOICE, PROTOCOL, evaluate_one_prompt
    from sam2med.evaluation.pairing import pair_cases
    from sam2med.evaluation.report import summarise, write_results_csv, write_summary
    from sam2med.provenance import model_provenance

    check_arguments(args)
    names = read_labels_map(args.labels_map) if args.labels_map else {}
    labels = resolve_labels(args.label, names)
    memory = args.memory or "selective"
    cases = pair_cases(Path(args.images), Path(args.labels), two_d=True)
    if args.prompt_case is not None and args.prompt_case not in {c.name for c in cases}:
        raise InputError(f"--prompt-case {args.prompt_case}: no such case (cases: {', '.join(c.name for c in cases[:10])})")
    engine = Propagator(**propagator_kwargs(args))
    out = make_output_folder(Path(args.out))
    logger.info("evaluating %d 2D case(s), protocol one-prompt, memory %s", len(cases), memory)
    with logging_redirect_tqdm():
        outcomes = evaluate_one_prompt(cases, engine, labels, names, args.prompt_case, args.window, memory,
                                       on_case=_PredictionWriter(out, args.save_predictions))
    results = [t for o in outcomes for t in o.targets]
    prompts = {str(r.label): r.case for r in results if r.prompt}
    config = {"propagator": "sam2", "model": model_provenance(engine), "protocol": PROTOCOL, "range": "n/a (2D)",
              "axis": "n/a (2D)", "memory": memory, "prompt_choice": args.prompt_case or PROMPT_CHOICE,
              "prompt_cases": prompts, "labels": labels, "window": args.window,
              "images": str(args.images), "label_maps": str(args.labels)}
    summary = summarise(outcomes, config)
    write_results_csv(results, out / "results.csv")
    write_summary(summary, out)
    title = (f"Dice per organ: {summary['cases']['evaluated']} 2D case(s), mean per organ\nsam2, protocol one-prompt, memory {memory} "
             f"(prompt cases not counted)")
    pictures.dice_chart({"sam2": results}, out / "dice_by_organ.png", title=title)
    return print_results(summary, len(outcomes), out, config["model"])
