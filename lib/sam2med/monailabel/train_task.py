"""`sam2_finetune`: MONAI Label train task on the datastore's submitted labels, and the guarded publishing of its model.

MONAI Label runs a train request in its own subprocess (`POST /train/sam2_finetune`, stopped by
`DELETE /train/`; loop_routes.py checks the request before it starts). The task fine-tunes from the
model the server uses now into a new file, and publishes it (publishing.py: `models/current.json` moves
in one atomic rename, the model it replaces stays as `previous` for `rollback`) only if

1. the loss was finite at every step and every weight is finite after every step (training.finetune),
2. the written checkpoint loads as the server loads it and a smoke propagation gives finite scores,
3. its held-out Dice is not worse than the current model's by more than `HELD_OUT_MARGIN`
   (held-out images exist when `val_fraction` > 0 and 2+ images have a final label).

Otherwise the new file is removed and `train_stats` says "refused" (or "failed") with the reason; the
job exits non-zero (MONAI Label's status ERROR). The server never reads a half-written checkpoint and
never reuses the old model's feature-cache entries (a new model gets a new cache).
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from sam2med.checkpoints import model_spec, resolve_checkpoint
from sam2med.errors import InputError, PromptError
from sam2med.evaluation.pairing import Case
from sam2med.geometry import Axis
from sam2med.io import load_label, save_label
from sam2med.labelnames import LabelMapping, label_name, parse_label_info, relabel
from sam2med.monailabel.lifetime import die_with_server
from sam2med.provenance import model_version
from sam2med.training.model import MODES
from sam2med.windowing import PREPROCESSING
from sam2med.monailabel.publishing import (
    models_dir,
    publish,
    read_pointer,
    read_stats,
    remove_leftovers,
    write_stats,
)

logger = logging.getLogger(__name__)

MAX_EPOCHS_CAP = 10_000  # steps; a larger request is a typo
MAX_CLIP_SLICES = 64
HELD_OUT_MARGIN = 0.05  # a new model whose held-out Dice is lower than the current model's by more is refused
DEFAULTS: Dict[str, Any] = {"max_epochs": 20, "mode": None, "clip_slices": 4, "val_fraction": 0.2, "lr": 1e-4, "seed": 0}
PASSED_THROUGH = ("model", "client_id", "gpus", "local_rank", "bundle_path")  # set by MONAI Label or its clients


class TrainingRefused(InputError):
    """The trained model failed a publishing check: nothing was published."""


def _integer(params: Dict[str, Any], key: str, low: int, high: int | None = None) -> int:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"train option {key!r} must be an integer, got {str(value)[:40]!r}")
    if value < low or (high is not None and value > high):
        raise InputError(f"train option {key!r} must be in [{low}, {high}], got {value}" if high is not None
                         else f"train option {key!r} must be >= {low}, got {value}")
    return value


def _real(params: Dict[str, Any], key: str) -> float:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"train option {key!r} must be a number, got {str(value)[:40]!r}")
    if not math.isfinite(value):
        raise InputError(f"train option {key!r} must be a finite number, got {value}")
    return float(value)


def validate_train_params(request: Dict[str, Any]) -> Dict[str, Any]:
    """The train options of a request over `DEFAULTS`, checked: types, finite numbers, ranges; unknown keys refused.

    Raises InputError naming the first bad key. Keys MONAI Label or its client add (`PASSED_THROUGH`) are dropped.
    """
    if not isinstance(request, dict):
        raise InputError("train options must be a JSON object")
    unknown = [k for k in request if k not in DEFAULTS and k not in PASSED_THROUGH]
    if unknown:
        raise InputError(f"unknown train option {str(unknown[0])[:60]!r}; known: {', '.join(DEFAULTS)}")
    params = {**DEFAULTS, **{k: v for k, v in request.items() if k in DEFAULTS}}
    checked: Dict[str, Any] = {
        "max_epochs": _integer(params, "max_epochs", 1, MAX_EPOCHS_CAP),
        "clip_slices": _integer(params, "clip_slices", 2, MAX_CLIP_SLICES),
        "seed": _integer(params, "seed", 0, 2**32 - 1),
        "lr": _real(params, "lr"),
        "val_fraction": _real(params, "val_fraction"),
        "mode": params["mode"],
    }
    if not 0 < checked["lr"] <= 1:
        raise InputError(f"train option 'lr' must be in (0, 1], got {checked['lr']:g}")
    if not 0 <= checked["val_fraction"] < 1:
        raise InputError(f"train option 'val_fraction' must be in [0, 1), got {checked['val_fraction']:g}")
    if checked["mode"] is not None and checked["mode"] not in MODES:  # None: 'heads' on CPU, 'full' on GPU
        raise InputError(f"train option 'mode' must be one of {', '.join(MODES)}, got {str(checked['mode'])[:40]!r}")
    return checked


def publishing_refusal(stats: Dict[str, Any], margin: float = HELD_OUT_MARGIN) -> str | None:
    """Why a trained model must not be published by its held-out check, or None."""
    start, end = stats.get("val_dice_start"), stats.get("val_dice_end")
    if start is not None and end is not None and end < start - margin:
        return (f"held-out Dice {end:.4f} is worse than the current model's {start:.4f} by more than {margin:g}: "
                f"not published")
    return None


class _TrainingLabels:
    """The submitted labels in the server's values: a label saved with 3D Slicer's `label_info` is matched by name
    (the plugin exports segment k as value k), so training learns every named label whatever its value."""

    def __init__(self, server_labels: Dict[str, int]):
        self.names = {int(v): n for n, v in server_labels.items()}
        self.folder: tempfile.TemporaryDirectory | None = None

    def case(self, image_id: str, datastore: Datastore, tag: str):
        image, label = Path(datastore.get_image_uri(image_id)), Path(datastore.get_label_uri(image_id, tag))
        try:
            client = parse_label_info((datastore.get_label_info(image_id, tag) or {}).get("label_info"))
        except PromptError as err:
            raise InputError(f"the {tag} label of image {image_id!r}: {err}") from None
        if not client:
            return Case(image_id, image, label)
        mapping = LabelMapping.match(client, {n: v for v, n in self.names.items()})
        self.names.update({v: n for n, v in mapping.server.items()})
        if mapping.is_identity():
            return Case(image_id, image, label)
        saved = load_label(label)
        try:
            array = relabel(saved.array, mapping.to_server(), f"the {tag} label of image {image_id!r}")
        except PromptError as err:
            raise InputError(str(err)) from None
        if self.folder is None:
            self.folder = tempfile.TemporaryDirectory(prefix="sam2med_train_labels_")
        path = Path(self.folder.name) / f"{len(list(Path(self.folder.name).iterdir()))}.nii.gz"
        save_label(array, saved.grid, path)
        return Case(image_id, image, path)

    def values(self) -> list[int]:
        return sorted(self.names)

    def trained(self, volumes: list) -> Dict[str, int]:
        """{name: how many training volumes hold it on 2+ slices} for every label trained on."""
        counts: Dict[str, int] = {}
        for volume in volumes:
            for value in volume.objects:
                name = label_name(value, self.names)
                counts[name] = counts.get(name, 0) + 1
        return counts

    def cleanup(self) -> None:
        """Remove the relabelled copies (a failed run leaves them to the folder's finalizer at the subprocess's exit)."""
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None


class Sam2FinetuneTask(TrainTask):
    """Fine-tunes SAM2.1 ('heads' on CPU) on every image with a `final` label and publishes the result if it passes."""

    def __init__(self, services) -> None:
        super().__init__("Fine-tune SAM2.1 on the submitted (final) labels; the infer tasks use the result on the next request")
        self.services = services

    def config(self) -> Dict[str, Any]:
        return {**DEFAULTS, "mode": list(MODES)}

    def stats(self) -> Dict[str, Any]:
        return read_stats(self.services.config.state_dir)

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        die_with_server()
        config = self.services.config
        if not config.state_dir:
            raise InputError("sam2_finetune needs the app's state folder (--conf state_dir)")
        params = validate_train_params(request)
        remove_leftovers(config.state_dir)  # temporary files of a killed run
        start_ts = time.time()
        stats: Dict[str, Any] = {"status": "running", "pid": os.getpid(), "epoch": 0, "total_epochs": params["max_epochs"],
                                 "start_ts": int(start_ts), "params": params}
        write_stats(config.state_dir, stats)
        candidate: Path | None = None
        try:
            candidate = models_dir(config.state_dir) / f"sam2_finetune-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}.pt"
            final = self._train_and_publish(params, datastore, candidate, stats, start_ts)
        except Exception as err:
            status = "refused" if isinstance(err, TrainingRefused) else "failed"
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            write_stats(config.state_dir, {**stats, **read_stats(config.state_dir), "status": status, "reason": reason,
                                           "published": False, "pid": None,
                                           "total_time": str(datetime.timedelta(seconds=int(time.time() - start_ts)))})
            if candidate is not None:
                remove_leftovers(config.state_dir)
            logger.error("sam2_finetune %s: %s", status, reason)
            raise
        return final

    def _train_and_publish(self, params: Dict[str, Any], datastore: Datastore, candidate: Path, stats: Dict[str, Any],
                           start_ts: float) -> Dict[str, Any]:
        # late: the training stack (sam2's trainer, the evaluation runner) loads in the training job only, not with the app
        from sam2med.evaluation.runner import _load_case  # the evaluation's reading of a pair (label on the image grid)
        from sam2med.training.finetune import FineTuneConfig, finetune, split_cases
        from sam2med.training.sampler import TrainingVolume
        from sam2med.training.validation import smoke_inference

        config, engine = self.services.config, self.services.engine
        tag = DefaultLabelTag.FINAL.value
        image_ids = sorted(datastore.get_labeled_images(tag))
        if not image_ids:
            raise InputError("no image has a submitted (final) label to train on")
        by_value = _TrainingLabels(config.labels)
        cases = [by_value.case(i, datastore, tag) for i in image_ids]
        train_cases, val_cases = split_cases(cases, params["val_fraction"], params["seed"])
        labels = by_value.values()
        preprocessing = PREPROCESSING[model_spec(engine.model_name).preprocessing]
        train, smoke_case = [], None
        for case in train_cases:
            volume, truth = _load_case(case)
            item = TrainingVolume.from_arrays(case.name, volume, truth.array, Axis.AXIAL, labels, preprocessing=preprocessing)
            train.append(item)
            if smoke_case is None and item.objects:
                smoke_case = (volume, truth.array, min(item.objects))
        current = read_pointer(config.state_dir)
        base = (candidate.parent / current["checkpoint"] if current and current.get("checkpoint")
                else resolve_checkpoint(engine.model_name, config.checkpoint, download=False))
        base_version = (current or {}).get("version") or model_version(engine.model_name, base)

        def on_step(done: int, total: int, loss: float) -> None:
            write_stats(config.state_dir, {**stats, "epoch": done, "loss": loss,
                                           "current_time": str(datetime.timedelta(seconds=int(time.time() - start_ts)))})

        ft = FineTuneConfig(model=engine.model_name, checkpoint=base, out=candidate, steps=params["max_epochs"],
                            mode=params["mode"], image_size=engine.image_size, clip_slices=params["clip_slices"],
                            lr=params["lr"], seed=params["seed"], device=config.device, labels=labels)
        result = finetune(ft, train, val_cases, on_step)
        by_value.cleanup()
        checks = {"finite_loss_and_weights": True}
        refusal = publishing_refusal(result)
        checks["held_out"] = ("skipped: no held-out image (val_fraction 0 or one labelled image)"
                              if result["val_dice_end"] is None else "failed" if refusal else "passed")
        if refusal is None and smoke_case is not None:
            refusal = smoke_inference(candidate, engine.model_name, result["image_size"], config.device, *smoke_case)
            checks["smoke_inference"] = "failed" if refusal else "passed"
        if refusal:
            raise TrainingRefused(refusal)
        version = model_version(engine.model_name, candidate)
        final = {"status": "published", "published": True, "pid": None, "epoch": result["steps"],
                 "total_epochs": params["max_epochs"], "start_ts": int(start_ts),
                 **({} if result["val_dice_end"] is None else {"best_metric": result["val_dice_end"]}),  # a Dice in [0, 1], else none
                 "best_metric_epoch": result["steps"], "labels": by_value.trained(train),
                 "total_time": str(datetime.timedelta(seconds=int(time.time() - start_ts))),
                 "model_version": version, "previous_version": base_version, "checks": checks, "params": params,
                 "train": {"metrics": {"loss": result["loss_last"]}, "key_metric_name": "loss"},
                 "eval": {"metrics": {"dice": result["val_dice_end"]}, "key_metric_name": "dice",
                          "best_metric": result["val_dice_end"], "val_dice_start": result["val_dice_start"],
                          "copy_dice": result["copy_dice"]},
                 "loss_first": result["loss_first"], "loss_last": result["loss_last"], "train_ids": result["train_ids"],
                 "val_ids": result["val_ids"]}
        publish(config.state_dir, candidate.name, version, base_version, final)
        write_stats(config.state_dir, final)
        logger.info("published %s (%s) after %d step(s); previous %s", candidate.name, version, result["steps"], base_version)
        return final
