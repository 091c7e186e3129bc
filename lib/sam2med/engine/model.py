"""Building the SAM2.1 tracker from a checkpoint, on the requested device."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from sam2med.checkpoints import model_spec
from sam2med.errors import CheckpointError, DeviceError

logger = logging.getLogger(__name__)

TRACKER_TARGET = "sam2med.engine.tracker.SliceTracker"


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'; CUDA asked for but absent is an error."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} was asked for, but this machine has no usable CUDA GPU (use --device cpu or auto)")
        return torch.device(text)
    raise DeviceError(f"unknown device {name!r}: use auto, cpu or cuda")


def hole_filling_available(device: torch.device) -> bool:
    """sam2 fills small mask holes with its compiled CUDA extension (sam2._C) only.

    Without it (CPU, or a sam2 install without the extension) `fill_holes_in_mask_scores` raises inside,
    warns and returns the mask unchanged on every frame: turning the step off gives the same masks
    without the per-frame exception and warning.
    """
    if device.type != "cuda":
        return False
    return importlib.util.find_spec("sam2._C") is not None


def size_overrides(image_size: int) -> list[str]:
    """Hydra overrides for input size `image_size`: the image size and the memory attention's RoPE grid (size / 16).

    This is how MedSAM2's sam2.1_hiera_t512.yaml differs from sam2.1_hiera_t.yaml (512 and [32, 32]).
    sam2's RoPEAttention would recompute a mismatched grid on its first call anyway; built here, the
    model is the configured one from the start.
    """
    if image_size % 32 or image_size < 128:
        raise CheckpointError(f"image size must be a multiple of 32 and at least 128, got {image_size}")
    grid = f"[{image_size // 16},{image_size // 16}]"
    return [f"++model.image_size={int(image_size)}",
            f"++model.memory_attention.layer.self_attention.feat_sizes={grid}",
            f"++model.memory_attention.layer.cross_attention.feat_sizes={grid}"]


def load_tracker(model: str, checkpoint: Path, device: torch.device, image_size: int | None = None):
    """Build `model` of the registry with sam2's own config and builder, load `checkpoint`, move it to `device`.

    `image_size` None is the model's own input size (1024 for SAM2.1, 512 for MedSAM2).
    """
    from sam2.build_sam import build_sam2_video_predictor

    spec = model_spec(model)
    overrides = [f"++model._target_={TRACKER_TARGET}", *size_overrides(int(image_size or spec.input_size))]
    try:
        tracker = build_sam2_video_predictor(spec.config, ckpt_path=str(checkpoint), device=str(device), hydra_overrides_extra=overrides)
    except (RuntimeError, KeyError) as err:
        detail = str(err).splitlines()[0][:160] if str(err) else "state dict keys do not match"
        raise CheckpointError(f"{checkpoint}: does not fit the {spec.family} '{model}' architecture ({detail})") from None
    except Exception as err:  # pickle / zip errors from torch.load on a file that is no checkpoint
        raise CheckpointError(f"{checkpoint}: not a loadable checkpoint ({type(err).__name__})") from None
    if not hole_filling_available(device):
        # Set on the model, not as a hydra override: sam2's builder appends its own fill_hole_area=8 after ours.
        tracker.fill_hole_area = 0
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    logger.info("loaded %s from %s on %s (image size %d)", spec.title, checkpoint, device, tracker.image_size)
    return tracker
