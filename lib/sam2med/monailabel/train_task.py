"""`sam2_finetune`: MONAI Label train task on the datastore's submitted labels, and the published model it leaves.

MONAI Label runs a train request in its own subprocess (`POST /train/sam2_finetune`, stopped by
`DELETE /train/`). The task fine-tunes from the model the server uses now, writes the new checkpoint
under a new name (`models/sam2_finetune-<time>.pt`, through a temporary file), then points
`models/current.json` at it (also an atomic rename): the server's `SharedEngine` sees the pointer change
and loads the new weights for the next request. The server never reads a half-written checkpoint, and the
old model's feature-cache entries are not reused (the new model gets a new cache).
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from sam2med.errors import InputError
from sam2med.io import write_json_atomic

logger = logging.getLogger(__name__)

CURRENT = "current.json"  # {"checkpoint": file name in the models folder, "version": ..., "stats": ...}
STATS = "train_stats.json"


def models_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "models"


def published_checkpoint(state_dir: str | Path | None) -> tuple[Path, dict] | None:
    """(checkpoint, pointer) of the last published fine-tuned model, or None."""
    if not state_dir:
        return None
    pointer = models_dir(state_dir) / CURRENT
    try:
        data = json.loads(pointer.read_text())
    except (OSError, ValueError):
        return None
    path = models_dir(state_dir) / str(data.get("checkpoint", ""))
    return (path, data) if path.is_file() and path.parent == models_dir(state_dir) else None


def _number(request: Dict[str, Any], key: str, default: float, cast=int) -> Any:
    try:
        return cast(request.get(key, default))
    except (TypeError, ValueError):
        raise InputError(f"train option {key!r} must be a number, got {request.get(key)!r}") from None


class Sam2FinetuneTask(TrainTask):
    """Fine-tunes SAM2.1 ('heads' on CPU) on every image with a `final` label and publishes the result."""

    def __init__(self, services) -> None:
        super().__init__("Fine-tune SAM2.1 on the submitted (final) labels; the infer tasks use the result on the next request")
        self.services = services

    def config(self) -> Dict[str, Any]:
        return {"max_epochs": 20, "mode": ["heads", "full"], "clip_slices": 4, "val_fraction": 0.2, "lr": 1e-4, "seed": 0}

    def stats(self) -> Dict[str, Any]:
        state_dir = self.services.config.state_dir
        try:
            return json.loads((models_dir(state_dir) / STATS).read_text()) if state_dir else {}
        except (OSError, ValueError):
            return {}

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        from sam2med.checkpoints import model_spec, resolve_checkpoint, sidecar_path
        from sam2med.evaluation.pairing import Case
        from sam2med.evaluation.runner import _load_case  # the evaluation's reading of a pair (label on the image grid)
        from sam2med.geometry import Axis
        from sam2med.monailabel.engine import model_version
        from sam2med.training.finetune import FineTuneConfig, finetune, split_cases
        from sam2med.training.sampler import TrainingVolume
        from sam2med.windowing import PREPROCESSING

        config = self.services.config
        if not config.state_dir:
            raise InputError("sam2_finetune needs the app's state folder (--conf state_dir)")
        steps = _number(request, "max_epochs", 20)
        val_fraction = _number(request, "val_fraction", 0.2, float)
        seed = _number(request, "seed", 0)
        tag = DefaultLabelTag.FINAL.value
        cases = [Case(i, Path(datastore.get_image_uri(i)), Path(datastore.get_label_uri(i, tag)))
                 for i in sorted(datastore.get_labeled_images(tag))]
        if not cases:
            raise InputError("no image has a submitted (final) label to train on")
        train_cases, val_cases = split_cases(cases, val_fraction, seed)
        labels = sorted(set(config.labels.values()))
        preprocessing = PREPROCESSING[model_spec(self.services.engine.model_name).preprocessing]
        train = []
        for case in train_cases:
            volume, truth = _load_case(case)
            train.append(TrainingVolume.from_arrays(case.name, volume, truth.array, Axis.AXIAL, labels, preprocessing=preprocessing))
        published = published_checkpoint(config.state_dir)
        base = published[0] if published else resolve_checkpoint(self.services.engine.model_name, config.checkpoint, download=False)
        folder = models_dir(config.state_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"sam2_finetune-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}.pt"
        start_ts = time.time()

        def on_step(done: int, total: int, loss: float) -> None:
            write_json_atomic({"epoch": done, "total_epochs": total, "start_ts": int(start_ts), "loss": loss,
                               "current_time": str(datetime.timedelta(seconds=int(time.time() - start_ts)))}, folder / STATS)

        ft = FineTuneConfig(model=self.services.engine.model_name, checkpoint=base, out=folder / name, steps=steps,
                            mode=request.get("mode") or None, image_size=self.services.engine.image_size,
                            clip_slices=_number(request, "clip_slices", 4), lr=_number(request, "lr", 1e-4, float), seed=seed,
                            device=config.device, labels=labels)
        stats = finetune(ft, train, val_cases, on_step)
        version = model_version(self.services.engine.model_name, folder / name)
        best = stats["val_dice_end"] if stats["val_dice_end"] is not None else -stats["loss_last"]
        final = {"epoch": stats["steps"], "total_epochs": steps, "start_ts": int(start_ts), "best_metric": best,
                 "best_metric_epoch": stats["steps"], "total_time": str(datetime.timedelta(seconds=int(time.time() - start_ts))),
                 "model_version": version, "train": {"metrics": {"loss": stats["loss_last"]}, "key_metric_name": "loss"},
                 "eval": {"metrics": {"dice": stats["val_dice_end"]}, "key_metric_name": "dice", "best_metric": stats["val_dice_end"],
                          "val_dice_start": stats["val_dice_start"], "copy_dice": stats["copy_dice"]},
                 "loss_first": stats["loss_first"], "loss_last": stats["loss_last"], "train_ids": stats["train_ids"],
                 "val_ids": stats["val_ids"]}
        write_json_atomic({"checkpoint": name, "version": version, "base": str(base.name), "stats": final}, folder / CURRENT)
        write_json_atomic(final, folder / STATS)
        for old in folder.glob("sam2_finetune-*.pt"):  # earlier published models, except the one trained from
            if old.name != name and old != base:
                old.unlink(missing_ok=True)
                sidecar_path(old).unlink(missing_ok=True)
        logger.info("published %s (%s) after %d step(s)", name, version, stats["steps"])
        return final
