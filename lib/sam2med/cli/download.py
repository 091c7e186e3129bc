"""`main.py download`: fetch official SAM2.1 checkpoints into the cache, or build a random-weight one."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sam2med.checkpoints import MODELS, cache_dir, model_spec, resolve_checkpoint
from sam2med.errors import CheckpointError
from sam2med.provenance import RANDOM_WEIGHTS_KEY

logger = logging.getLogger(__name__)

HELP = "download official SAM2.1 checkpoints (or build a random-weight one for testing)"
DESCRIPTION = f"""\
Download the official SAM2.1 checkpoint(s) into the cache folder ({cache_dir()},
set by $SAM2MED_CHECKPOINT_DIR), written atomically and verified by loading.

Offline? Download the file named below on a machine with network access and copy it into the cache
folder, or pass --checkpoint PATH to propagate/serve/evaluate/bench.

--random-weights PATH builds the real SAM2.1 architecture with random weights and saves it: good for
checking installation, geometry and speed, useless for segmentation quality.

official files:
""" + "\n".join(f"  {name:10s} {spec.url}" for name, spec in MODELS.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=None, metavar="NAME",
                        help="model to download (repeatable); default: tiny")
    parser.add_argument("--random-weights", metavar="PATH", default=None,
                        help="instead of downloading, save a random-weight checkpoint of --model here")


def save_random_checkpoint(model: str, path: Path) -> Path:
    """Build SAM2.1 `model` with random weights through sam2's config and builder, and save it atomically."""
    import os
    import uuid

    import torch
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    predictor = build_sam2_video_predictor(model_spec(model).config, ckpt_path=None, device="cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        torch.save({"model": predictor.state_dict(), RANDOM_WEIGHTS_KEY: True}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def run(args: argparse.Namespace) -> int:
    models = args.model or ["tiny"]
    for name in models:
        model_spec(name)  # unknown names fail before any work
    if args.random_weights:
        if len(models) != 1:
            raise CheckpointError("--random-weights takes a single --model")
        path = save_random_checkpoint(models[0], Path(args.random_weights))
        print(f"{path}: SAM2.1 {models[0]} with RANDOM weights (plumbing and speed only, no segmentation quality)")
        return 0
    for name in models:
        path = resolve_checkpoint(name, None, download=True)
        print(f"{name}: {path}")
    return 0
