"""`main.py download`: fetch published checkpoints (SAM2.1, MedSAM2) into the cache, or build a random-weight one."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sam2med.checkpoints import MODELS, cache_dir, model_spec, resolve_checkpoint
from sam2med.errors import CheckpointError
from sam2med.provenance import RANDOM_WEIGHTS_KEY

logger = logging.getLogger(__name__)

HELP = "download SAM2.1 / MedSAM2 checkpoints (or build a random-weight one for testing)"
DESCRIPTION = f"""\
Download published checkpoint(s), SAM2.1 (Meta) or MedSAM2 (Hugging Face wanglab/MedSAM2), into the
cache folder ({cache_dir()},
set by $SAM2MED_CHECKPOINT_DIR), written atomically and verified by loading.

Offline? Download the file named below on a machine with network access and copy it into the cache
folder, or pass --checkpoint PATH to propagate/serve/evaluate/bench.

--random-weights PATH builds the model's real architecture with random weights and saves it: good for
checking installation, geometry and speed, useless for segmentation quality.

'python main.py models' lists what each model is for, its input size, licence and citation.

published files:
""" + "\n".join(f"  {name:25s} {spec.url}" for name, spec in MODELS.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=None, metavar="NAME",
                        help="model to download (repeatable); default: tiny")
    parser.add_argument("--random-weights", metavar="PATH", default=None,
                        help="instead of downloading, save a random-weight checkpoint of --model here")


def save_random_checkpoint(model: str, path: Path) -> Path:
    """Build `model` with random weights through sam2's config and builder (at its input size), and save it atomically."""
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    from sam2med.engine.model import size_overrides
    from sam2med.io import write_atomically

    spec = model_spec(model)
    torch.manual_seed(0)
    predictor = build_sam2_video_predictor(spec.config, ckpt_path=None, device="cpu", hydra_overrides_extra=size_overrides(spec.input_size))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda tmp: torch.save({"model": predictor.state_dict(), RANDOM_WEIGHTS_KEY: True}, tmp))


def run(args: argparse.Namespace) -> int:
    models = args.model or ["tiny"]
    for name in models:
        model_spec(name)  # unknown names fail before any work
    if args.random_weights:
        if len(models) != 1:
            raise CheckpointError("--random-weights takes a single --model")
        path = save_random_checkpoint(models[0], Path(args.random_weights))
        print(f"{path}: {model_spec(models[0]).title} with RANDOM weights (plumbing and speed only, no segmentation quality)")
        return 0
    for name in models:
        path = resolve_checkpoint(name, None, download=True)
        print(f"{name}: {path}")
    return 0
