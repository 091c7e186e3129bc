"""Fine-tuning SAM2.1 on (image, label map) pairs: seeded clips, AdamW, gradient clipping, held-out validation."""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sam2med.engine.model import resolve_device
from sam2med.errors import InputError
from sam2med.evaluation.pairing import Case
from sam2med.geometry import Axis
from sam2med.provenance import file_sha256, has_random_weights
from sam2med.training.model import build_training_model, save_finetuned
from sam2med.training.sampler import ClipSampler, TrainingVolume
from sam2med.training.step import EncoderFeatures, clip_loss, make_loss
from sam2med.training.validation import copy_dice, validate

logger = logging.getLogger(__name__)

# step(done, total, loss); returning False stops the run after that step (the checkpoint is still written)
StepFn = Callable[[int, int, float], "bool | None"]


@dataclass
class FineTuneConfig:
    """What is trained and how; None device-dependent defaults: 'heads' and 4-slice clips on CPU, 'full' and 8 on GPU."""

    model: str
    checkpoint: Path
    out: Path
    steps: int = 200
    mode: str | None = None
    image_size: int | None = None
    clip_slices: int | None = None
    lr: float = 1e-4
    encoder_lr_factor: float = 0.1  # 'full' mode: the image encoder learns at lr * this
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    prompt_kinds: tuple[str, ...] = ("mask", "box", "clicks")
    axis: Axis = Axis.AXIAL
    window: str = "auto"
    labels: list[int] | None = None
    extra_sidecar: dict = field(default_factory=dict)


class TrainingDiverged(InputError):
    """The loss or the weights became non-finite: no checkpoint is written."""


def non_finite_parameters(model: torch.nn.Module, trainable_only: bool = False) -> str | None:
    """'N non-finite values in NAME, ...' over the model's parameters and buffers; None when all are finite."""
    tensors = [(n, p) for n, p in model.named_parameters() if p.requires_grad or not trainable_only]
    if not trainable_only:
        tensors += [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    bad = [(n, int((~torch.isfinite(t.detach())).sum())) for n, t in tensors if not bool(torch.isfinite(t.detach()).all())]
    if not bad:
        return None
    total = sum(count for _, count in bad)
    return f"{total} non-finite values in {len(bad)} tensors, first {bad[0][0]}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_dtype(device: torch.device) -> torch.dtype:
    """bf16 autocast on CUDA (as sam2 trains); float32 on CPU, where bf16 autocast made training steps slower here."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def loss_window(steps: int) -> int:
    """How many steps `loss_first` / `loss_last` average: a tenth of the run, 1 to 10 steps."""
    return max(1, min(10, steps // 10))


def split_cases(cases: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): a seeded shuffle; at least one held out when fraction > 0 and there are 2+ cases."""
    order = list(np.random.default_rng(seed).permutation(len(cases)))
    held = 0 if fraction <= 0 or len(cases) < 2 else min(len(cases) - 1, max(1, round(fraction * len(cases))))
    val = sorted((cases[i] for i in order[:held]), key=lambda c: c.name)
    train = sorted((cases[i] for i in order[held:]), key=lambda c: c.name)
    return train, val


def _optimizer(model, config: FineTuneConfig, mode: str) -> torch.optim.Optimizer:
    encoder = [p for p in model.image_encoder.parameters() if p.requires_grad]
    encoder_ids = {id(p) for p in encoder}
    heads = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]
    groups = [{"params": heads, "lr": config.lr}]
    if mode == "full" and encoder:
        groups.append({"params": encoder, "lr": config.lr * config.encoder_lr_factor})
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def finetune(config: FineTuneConfig, train: list[TrainingVolume], val_cases: list[Case],
             on_step: StepFn | None = None) -> dict:
    """Train, validate at step 0 and at the end, write the checkpoint and its sidecar; return the stats."""
    from sam2med.engine import Propagator

    if not any(v.objects for v in train):
        raise InputError("no label on 2 or more slices in the training pairs: nothing to train on")
    device = resolve_device(config.device)
    mode = config.mode or ("full" if device.type == "cuda" else "heads")
    clip_slices = config.clip_slices or (8 if device.type == "cuda" else 4)
    dtype = training_dtype(device)
    seed_everything(config.seed)
    model = build_training_model(config.model, config.checkpoint, config.image_size, device, mode, config.seed)
    image_size = int(model.image_size)
    sampler = ClipSampler(train, clip_slices, image_size, config.seed, config.prompt_kinds)
    features = EncoderFeatures(model, train, dtype) if mode == "heads" else None
    loss_fn = make_loss()
    optimizer = _optimizer(model, config, mode)

    propagator = None
    val_start = val_end = reference = None
    if val_cases:
        propagator = Propagator(model=config.model, checkpoint=config.checkpoint, device=str(device), image_size=image_size,
                                precision="bf16" if dtype == torch.bfloat16 else "fp32", download=False)
        val_start = validate(propagator, model.state_dict(), val_cases, config.labels, config.axis, config.window)
        reference = copy_dice(val_cases, config.labels, config.axis)
        logger.info("validation at step 0: Dice %s (copy-the-seed reference %s)", val_start, reference)

    losses: list[float] = []
    started = time.perf_counter()
    for step in range(1, config.steps + 1):
        model.train()
        if features is not None:
            model.image_encoder.eval()
        clip = sampler.sample()
        loss = clip_loss(model, loss_fn, train[clip.volume], clip, features, dtype)
        value = float(loss.detach())
        if not math.isfinite(value) and step == 1:  # no update yet: the learning rate is not the cause
            raise TrainingDiverged(f"the loss is {value} at step 1, before any update: the starting checkpoint "
                                   f"{Path(config.checkpoint).name} gives non-finite outputs")
        if not math.isfinite(value):
            raise TrainingDiverged(f"the loss became {value} at step {step} (clip {clip}, lr {config.lr:g}): "
                                   f"lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
        optimizer.step()
        bad = non_finite_parameters(model, trainable_only=True)  # the last step's update is checked too
        if bad:
            raise TrainingDiverged(f"the weights became non-finite at step {step} (lr {config.lr:g}; {bad}): "
                                   f"lower the learning rate")
        losses.append(round(value, 5))
        if on_step is not None and on_step(step, config.steps, losses[-1]) is False:
            logger.info("stopped after step %d of %d", step, config.steps)
            break
    train_seconds = time.perf_counter() - started

    model.eval()
    bad = non_finite_parameters(model)
    if bad:
        raise TrainingDiverged(f"the trained weights are not all finite ({bad}): nothing written")
    state = model.state_dict()
    if propagator is not None:
        val_end = validate(propagator, state, val_cases, config.labels, config.axis, config.window)
        logger.info("validation at the end: Dice %s (step 0: %s, copy-the-seed reference %s)", val_end, val_start, reference)
    window = loss_window(len(losses))
    stats = {
        "steps": len(losses),
        "steps_requested": config.steps,
        "mode": mode,
        "clip_slices": clip_slices,
        "image_size": image_size,
        "precision": "bf16" if dtype == torch.bfloat16 else "fp32",
        "device": str(device),
        "seed": config.seed,
        "lr": config.lr,
        "loss_window": window,
        "loss_first": round(float(np.mean(losses[:window])), 5) if losses else None,
        "loss_last": round(float(np.mean(losses[-window:])), 5) if losses else None,
        "val_dice_start": val_start,
        "val_dice_end": val_end,
        "copy_dice": reference,
        "seconds_per_step": round(train_seconds / max(1, len(losses)), 4),
        "train_ids": [v.name for v in train],
        "val_ids": [c.name for c in val_cases],
        "labels": config.labels,
        "loss_per_step": losses,
    }
    sidecar = {
        "base_model": config.model,
        "image_size": image_size,
        "base_checkpoint": str(config.checkpoint),
        "base_sha256": file_sha256(config.checkpoint),
        **{k: v for k, v in stats.items() if k != "image_size"},
        **config.extra_sidecar,
    }
    save_finetuned(state, config.out, sidecar, random_weights=has_random_weights(config.checkpoint))
    logger.info("wrote %s after %d step(s): loss %s -> %s", config.out, len(losses), stats["loss_first"], stats["loss_last"])
    return stats
