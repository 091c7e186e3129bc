"""Options shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from sam2med.checkpoints import MODELS, choose_model
from sam2med.engine.threads import default_threads
from sam2med.errors import CheckpointError, InputError
from sam2med.io import check_file


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, metavar="NAME",
                       help=f"model ({', '.join(MODELS)}; 'python main.py models' says what each is for); default: "
                            "the base model in --checkpoint's sidecar (a fine-tuned checkpoint), else the one its file name "
                            "names, else tiny")
    group.add_argument("--checkpoint", metavar="PATH", default=None,
                       help="local checkpoint file (a fine-tuned one is recognised by its sidecar PATH.json); without it "
                            "the model's published one is used from the cache ($SAM2MED_CHECKPOINT_DIR or "
                            "~/.cache/sam2med/checkpoints), downloaded on first use")
    group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    group.add_argument("--image-size", type=int, default=None, metavar="PX",
                       help="model input size, a multiple of 32 (default: the model's own: 1024 for SAM2.1, 512 for MedSAM2, "
                            "a fine-tuned checkpoint's from its sidecar); on a CPU 512 is several times faster than 1024, "
                            "with coarser mask edges")


def check_model_arguments(args: argparse.Namespace) -> None:
    """Errors in the model options, found before anything is loaded."""
    choose_model(args.model, args.checkpoint)  # unknown names, or a checkpoint of another model than --model
    if args.image_size is not None and (args.image_size % 32 or args.image_size < 128):
        raise InputError(f"--image-size must be a multiple of 32 and at least 128, got {args.image_size}")
    device = str(args.device).strip().lower()
    if device not in ("auto", "cpu") and not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise InputError(f"--device {args.device!r}: use auto, cpu, cuda or cuda:N")
    if args.checkpoint:  # last: the other options' errors come first whatever the checkpoint
        check_file(Path(args.checkpoint).expanduser(), "checkpoint", CheckpointError)


def cpu_advice(device: str, image_size: int) -> str | None:
    """On CPU at a large input size, how to go faster."""
    if device != "cpu" or image_size <= 512:
        return None
    return (f"note: SAM2 on CPU at {image_size} px takes seconds per slice; --image-size 512 is several times faster "
            "(coarser mask edges), a CUDA GPU far faster (README, Performance)")


def propagator_kwargs(args: argparse.Namespace, absolute: bool = False) -> dict:
    """The engine's model options; `absolute`: the checkpoint path made absolute, for workers in other folders."""
    checkpoint = args.checkpoint
    if absolute and checkpoint:
        checkpoint = str(Path(checkpoint).absolute())
    return {"model": args.model, "checkpoint": checkpoint, "device": args.device, "image_size": args.image_size}


def make_output_folder(out: Path) -> Path:
    """`out`, created when missing; a file there or a place that cannot be created is an `InputError`."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; give an output folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{out}: cannot create the output folder ({err.strerror})") from None
    return out


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray and threads (docs/batch.md)")
    group.add_argument("--ray", metavar="local|auto|HOST:PORT", default=None,
                       help="run on Ray: 'local' starts Ray on this machine; 'auto' or HOST:PORT joins a cluster started with "
                            "'ray start --head'. Workers read the input paths themselves (shared storage on a cluster). "
                            "Default: no Ray, everything in this process")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="Ray workers, each holding one loaded propagator (one GPU each when the cluster has GPUs); "
                            "default: the cluster's GPU count, or 1 without GPUs")
    group.add_argument("--threads", type=int, default=None, metavar="N",
                       help="CPU threads that compute, in this process and in every Ray worker alike: runs with the same "
                            f"--threads give the same voxels, with or without Ray (docs/batch.md). Default: {default_threads()}, "
                            "this machine's own; with several workers on one machine, --threads 1 uses its cores best")


def check_ray_arguments(args: argparse.Namespace) -> None:
    """--workers only with --ray, and at least 1; --threads at least 1, default this process's own; checked before anything starts."""
    if args.workers is not None and not args.ray:
        raise InputError("--workers applies to --ray only")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.ray is not None and not args.ray.strip():
        raise InputError("--ray: give local, auto or the cluster's HOST:PORT")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    if args.threads is None:
        args.threads = default_threads()
