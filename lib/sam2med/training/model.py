"""The SAM2.1 training model (sam2's own `SAM2Train`) and the fine-tuned checkpoint with its JSON sidecar."""

from __future__ import annotations

from pathlib import Path

import torch

from sam2med.checkpoints import model_spec, sidecar_path
from sam2med.engine.model import size_overrides
from sam2med.errors import CheckpointError
from sam2med.io import write_atomically, write_json_atomic
from sam2med.provenance import RANDOM_WEIGHTS_KEY

TRAIN_TARGET = "training.model.sam2.SAM2Train"
MODES = ("heads", "full")


def build_training_model(model: str, checkpoint: Path, image_size: int | None, device: torch.device, mode: str, seed: int = 0):
    """SAM2Train of SAM2.1 `model` from sam2's config, `checkpoint` loaded strictly; in 'heads' mode the encoder is frozen."""
    import numpy as np
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import sam2  # noqa: F401  (initialises hydra with sam2's config module)

    if mode not in MODES:
        raise CheckpointError(f"unknown training mode {mode!r}: use {' or '.join(MODES)}")
    overrides = [f"++model._target_={TRAIN_TARGET}", f"++model.freeze_image_encoder={'true' if mode == 'heads' else 'false'}"]
    spec = model_spec(model)
    overrides += size_overrides(int(image_size or spec.input_size))
    cfg = compose(config_name=spec.config, overrides=overrides)
    OmegaConf.resolve(cfg)
    train_model = instantiate(cfg.model, _recursive_=True)
    state = load_state_dict(checkpoint)
    try:
        train_model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{checkpoint}: does not fit the {spec.family} '{model}' architecture "
                              f"({str(err).splitlines()[0][:160]})") from None
    train_model.rng = np.random.default_rng(seed)  # SAM2Train's own prompt sampling, seeded like the rest
    return train_model.to(device)


def load_state_dict(checkpoint: Path) -> dict:
    """The 'model' state dict of an official-format checkpoint."""
    try:
        content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign files
        raise CheckpointError(f"{checkpoint}: not a loadable checkpoint ({type(err).__name__})") from None
    if not isinstance(content, dict) or not isinstance(content.get("model"), dict):
        raise CheckpointError(f"{checkpoint}: not a SAM2 checkpoint (no 'model' state dict)")
    return content["model"]


def save_finetuned(state_dict: dict, path: Path, sidecar: dict, random_weights: bool = False) -> Path:
    """Write `{"model": state_dict}` and its sidecar (`checkpoints.sidecar_path`), each through a temporary file renamed into place.

    `random_weights` (trained from a RANDOM-weights checkpoint) keeps the marker in the checkpoint and the sidecar,
    so that every output of the fine-tuned model still says so.

    The checkpoint is renamed into place before the sidecar is written, so a reader never sees a
    half-written checkpoint, and a sidecar never describes a checkpoint that is not there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_state = {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}
    content = {"model": cpu_state, **({RANDOM_WEIGHTS_KEY: True} if random_weights else {})}
    write_atomically(path, lambda tmp: torch.save(content, tmp))
    write_json_atomic({**sidecar, "random_weights": True} if random_weights else sidecar, sidecar_path(path))
    return path
