"""`main.py finetune`: adapt SAM2.1 to labelled volumes; writes a checkpoint the other commands load."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sam2med.cli.common import add_model_arguments, check_model_arguments
from sam2med.errors import InputError
from sam2med.io import check_parent_folder

logger = logging.getLogger(__name__)

HELP = "fine-tune SAM2.1 on images with label maps (heads on CPU, full on GPU)"
DESCRIPTION = """\
Fine-tune SAM2.1 from --checkpoint on pairs of images and label maps (paired by name as in evaluate).

Each step tracks one clip of --clip-slices consecutive slices inside one object's extent, starting on a
slice that holds the object and running up or down at random, prompted on its first slice by the truth
mask, its box or a click; the loss is sam2's own (mask focal + dice + IoU + object score). Images are
windowed and resized exactly as propagate does.

modes:
  heads  the image encoder is frozen and its outputs cached per slice (the CPU default)
  full   everything trains, the encoder at a tenth of --lr (the GPU default)

A --val-fraction of the pairs is held out and propagated through the real engine (largest-slice seed,
truth range) at step 0 and at the end; the mean Dice is reported next to the copy-the-seed reference.

outputs: OUT.pt ({"model": state_dict}, the official format: pass it as --checkpoint to propagate, evaluate
and serve; its sidecar gives the model and input size), OUT.pt.json next to it (base checkpoint and its hash, steps, mode,
image size, data ids, loss per step, validation Dice) and --json STATS.json.
Random weights in, random-quality weights out: a falling loss proves the training runs, not that it helps.

example (CPU, random weights, plumbing only):
  python main.py finetune --images imgs/ --labels labels/ --labels-map labels.json:total --label liver \\
      --checkpoint base.pt -o ft.pt --steps 50 --image-size 256 --json stats.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of images (files or DICOM series folders)")
    parser.add_argument("--labels", required=True, metavar="DIR", help="folder of label maps, named like the images")
    parser.add_argument("--labels-map", metavar="FILE[:KEY]", default=None, help="label names (see evaluate --help)")
    parser.add_argument("--label", action="append", metavar="VALUE|NAME", default=None,
                        help="train on this label only (repeatable); default: every label on 2+ slices")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="fine-tuned checkpoint to write")
    parser.add_argument("--json", required=True, metavar="STATS.json", help="training statistics to write")
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps (one clip each)")
    parser.add_argument("--mode", choices=["heads", "full"], default=None, help="default: heads on CPU, full on GPU")
    parser.add_argument("--clip-slices", type=int, default=None, metavar="K", help="slices per clip; default: 4 on CPU, 8 on GPU")
    parser.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                        help="fraction of the pairs held out for validation (at least one when F > 0 and 2+ pairs)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split, the clips and torch")
    parser.add_argument("--axis", default="axial", choices=["axial", "coronal", "sagittal"], help="slicing axis")
    add_model_arguments(parser)


def _check(args: argparse.Namespace) -> None:
    check_model_arguments(args)
    if args.checkpoint is None:
        raise InputError("--checkpoint BASE is required: the checkpoint to start from")
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    if args.clip_slices is not None and args.clip_slices < 2:
        raise InputError(f"--clip-slices must be at least 2, got {args.clip_slices}")
    if not 0 <= args.val_fraction < 1:
        raise InputError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if not args.lr > 0:
        raise InputError(f"--lr must be positive, got {args.lr}")
    out = Path(args.output)
    if out.suffix != ".pt":
        raise InputError(f"-o {out}: the checkpoint must end in .pt")
    for path in (out, Path(args.json)):
        if path.is_dir():
            raise InputError(f"{path}: is a folder; give a file")
        check_parent_folder(path)


def run(args: argparse.Namespace) -> int:
    from sam2med.checkpoints import choose_model, resolve_checkpoint
    from sam2med.evaluation.labelmap import read_labels_map, resolve_labels
    from sam2med.evaluation.pairing import pair_cases
    from sam2med.evaluation.runner import _load_case  # the evaluation's reading of a pair (label on the image grid)
    from sam2med.geometry import Axis
    from sam2med.io import write_json_atomic
    from sam2med.progress import on_terminal
    from sam2med.training.finetune import FineTuneConfig, finetune, split_cases
    from sam2med.training.sampler import TrainingVolume
    from sam2med.windowing import PREPROCESSING

    _check(args)
    names = read_labels_map(args.labels_map) if args.labels_map else {}
    labels = resolve_labels(args.label, names)
    choice = choose_model(args.model, args.checkpoint, args.image_size)
    checkpoint = resolve_checkpoint(choice.model, args.checkpoint, download=False)
    preprocessing = PREPROCESSING[choice.spec.preprocessing]
    axis = Axis.parse(args.axis)
    cases = [c for c in pair_cases(Path(args.images), Path(args.labels)) if c.label is not None]
    train_cases, val_cases = split_cases(cases, args.val_fraction, args.seed)
    train = []
    for case in tqdm(train_cases, desc="read", unit="pair", leave=False, disable=not on_terminal()):
        volume, truth = _load_case(case)
        train.append(TrainingVolume.from_arrays(case.name, volume, truth.array, axis, labels, preprocessing=preprocessing))
    found = {value for v in train for value in v.objects}
    if labels:
        missing = [value for value in labels if value not in found]
        if missing:
            raise InputError(f"--label {', '.join(map(str, missing))}: on fewer than 2 slices (or absent) in every training pair")
    if not found:
        raise InputError("no label on 2 or more slices in the training pairs: nothing to train on")
    logger.info("training on %d pair(s) (%d objects), validating on %d", len(train), sum(len(v.objects) for v in train), len(val_cases))

    config = FineTuneConfig(model=choice.model, checkpoint=checkpoint, out=Path(args.output), steps=args.steps, mode=args.mode,
                            image_size=choice.image_size, clip_slices=args.clip_slices, lr=args.lr, seed=args.seed,
                            device=args.device, axis=axis, labels=labels)
    with logging_redirect_tqdm(), tqdm(total=args.steps, desc="finetune", unit="step", disable=not on_terminal()) as bar:
        def on_step(done: int, total: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(1)

        stats = finetune(config, train, val_cases, on_step)
    write_json_atomic(stats, args.json)
    print(f"{args.output}: {stats['steps']} {stats['mode']} step(s), loss {stats['loss_first']} -> {stats['loss_last']}, "
          f"held-out Dice {stats['val_dice_start']} -> {stats['val_dice_end']} (copy-the-seed {stats['copy_dice']}); "
          f"{stats['seconds_per_step']} s/step")
    return 0
