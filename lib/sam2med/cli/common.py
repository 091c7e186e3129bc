"""Options shared by several subcommands."""

from __future__ import annotations

import argparse

from sam2med.checkpoints import MODELS


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, metavar="NAME",
                       help=f"SAM2.1 size ({', '.join(MODELS)}); default: the one named by --checkpoint's file name, else tiny")
    group.add_argument("--checkpoint", metavar="PATH", default=None,
                       help="local checkpoint file; without it the official one is used from the cache "
                            "($SAM2MED_CHECKPOINT_DIR or ~/.cache/sam2med/checkpoints), downloaded on first use")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda")
    group.add_argument("--image-size", type=int, default=None, metavar="PX",
                       help="model input size (default: the model's 1024); smaller is faster and coarser")


def propagator_kwargs(args: argparse.Namespace) -> dict:
    return {"model": args.model, "checkpoint": args.checkpoint, "device": args.device, "image_size": args.image_size}
