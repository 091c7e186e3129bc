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
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from sam2med.errors import InputError, PromptError
from sam2med.io import write_json_atomic
from sam2med.labelnames import LabelMapping, label_name, parse_label_info, relabel

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


class _TrainingLabels:
    """The submitted labels in the server's values: a label saved with 3D Slicer's `label_info` is matched by name
    (the plugin exports segment k as value k), so training learns every named label whatever its value."""

    def __init__(self, server_labels: Dict[str, int]):
        self.names = {int(v): n for n, v in server_labels.items()}
        self.folder: tempfile.TemporaryDirectory | None = None

    def case(self, image_id: str, datastore: Datastore, tag: str):
        from sam2med.evaluation.pairing import Case
        from sam2med.io import load_label, save_label

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
        image_ids = sorted(datastore.get_labeled_images(tag))
        if not image_ids:
            raise InputError("no image has a submitted (final) label to train on")
        by_value = _TrainingLabels(config.labels)
        cases = [by_value.case(i, datastore, tag) for i in image_ids]
        train_cases, val_cases = split_cases(cases, val_fraction, seed)
        labels = by_value.values()
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
        best = {} if stats["val_dice_end"] is None else {"best_metric": stats["val_dice_end"]}  # a Dice in [0, 1], else none
        final = {"epoch": stats["steps"], "total_epochs": steps, "start_ts": int(start_ts), **best,
                 "best_metric_epoch": stats["steps"], "labels": by_value.trained(train), "total_time": str(datetime.timedelta(seconds=int(time.time() - start_ts))),
                 "model_version": version, "train": {"metrics": {"loss": stats["loss_last"]}, "key_metric_name": "loss"},
                 "eval": {"metrics": {"dice": stats["val_dice_end"]}, "key_metric_name": "dice", "best_metric": stats["val_dice_end"],
                          "val_dice_start": stats["val_dice_start"], "copy_dice": stats["copy_dice"]},
                 "loss_first": stats["loss_first"], "loss_last": stats["loss_last"], "train_ids": stats["train_ids"],
                 "val_ids": stats["val_ids"]}
        write_json_atomic({"checkpoint": name, "version": version, "base": str(base.name), "stats": final}, folder / CURRENT)
        write_json_atomic(final, folder / STATS)
        by_value.cleanup()
        for old in folder.glob("sam2_finetune-*.pt"):  # earlier published models, except the one trained from
            if old.name != name and old != base:
                old.unlink(missing_ok=True)
                sidecar_path(old).unlink(missing_ok=True)
        logger.info("published %s (%s) after %d step(s)", name, version, stats["steps"])
        return final
