"""The app's settings: `--conf KEY VALUE` pairs of `monailabel start_server` over the defaults in app.json."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sam2med.checkpoints import MODELS, choose_model
from sam2med.errors import CheckpointError, InputError
from sam2med.monailabel.params import parse_bool

logger = logging.getLogger(__name__)

DEFAULT_LABELS = {"label 1": 1}
DEFAULT_MAX_UPLOAD_MB = 512.0
MAX_UPLOAD_ENV = "SAM2MED_MAX_UPLOAD_MB"  # set by `main.py serve` for the server app

CONF_HELP = {
    "checkpoint": "checkpoint file (default: the model's published one from the cache); a fine-tuned one is "
                  "recognised by its sidecar FILE.json",
    "model": f"model: {', '.join(MODELS)} (default: the checkpoint's sidecar base model, else from its file name, else tiny)",
    "device": "auto, cpu or cuda",
    "image_size": "model input size in pixels (default: the model's own, 1024 SAM2.1, 512 MedSAM2; smaller is faster and coarser)",
    "cache_gb": "feature cache budget in GB (default: half the free GPU memory; on CPU a quarter of RAM, at most 8)",
    "preload": "true: load the model at start (default); false: on the first request",
    "warmup": "encode a series' slices in the background (POST /sam2med/warmup, next sample), yielding to requests: true, false or auto (= on)",
    "labels": 'label names and values: JSON {"liver": 5} or a JSON file (default: the studies\' samples.json)',
    "max_upload_mb": f"largest accepted upload in MB (default {DEFAULT_MAX_UPLOAD_MB:g})",
    "tasks": "comma-separated infer tasks to register (default: all of app.json)",
    "strategies": "comma-separated active-learning strategies (default: all of app.json)",
    "state_dir": "folder of the per-image correction state (default: .sam2med/ in a studies folder, "
                 "else ~/.cache/sam2med/server-state/)",
}


def _bool(value: Any, name: str) -> bool:
    return parse_bool(value, f"--conf {name}", default=None, error=InputError)


def _names(value: Any, known: list[str], name: str) -> list[str]:
    chosen = [v.strip() for v in str(value).split(",") if v.strip()] if isinstance(value, str) else list(value)
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise InputError(f"--conf {name}: unknown {unknown}; choose from {', '.join(known)}")
    return chosen


def _state_dir(value: Any, studies: str) -> str:
    """The app's own folder for what it keeps between requests (and restarts)."""
    if value not in (None, ""):
        return str(Path(str(value)).expanduser())
    if studies.startswith(("http://", "https://")):
        return str(Path.home() / ".cache" / "sam2med" / "server-state" / hashlib.sha256(studies.encode()).hexdigest()[:12])
    return str(Path(studies) / ".sam2med")


def _labels(value: Any, studies: str) -> dict[str, int]:
    if value is None:
        samples = Path(studies) / "samples.json"
        if not studies.startswith(("http://", "https://")) and samples.is_file():
            value = str(samples)
        else:
            return dict(DEFAULT_LABELS)
    text = str(value).strip()
    try:
        data = json.loads(Path(text).read_text()) if not text.startswith("{") else json.loads(text)
    except (OSError, ValueError) as err:
        raise InputError(f"--conf labels: not a JSON mapping or JSON file ({err})") from None
    data = data.get("labels", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not data:
        raise InputError('--conf labels: give a JSON mapping of names to values, e.g. {"liver": 5}')
    try:
        labels = {str(k): int(v) for k, v in data.items()}
    except (TypeError, ValueError):
        raise InputError("--conf labels: values must be integer label values") from None
    if any(v <= 0 for v in labels.values()):
        raise InputError("--conf labels: label values must be positive")
    return labels


@dataclass
class AppConfig:
    """Resolved app settings (the model is loaded from these by `SharedEngine`)."""

    checkpoint: str | None = None
    model: str | None = None
    device: str = "auto"
    image_size: int | None = None
    cache_gb: float | None = None
    preload: bool = True
    warmup: str = "auto"
    labels: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LABELS))
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1e6)
    tasks: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)
    state_dir: str | None = None

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any], studies: str, defaults: Mapping[str, Any]) -> "AppConfig":
        """Read `conf` over `defaults` (app.json: {"tasks": [...], "strategies": [...]})."""
        unknown = sorted(set(conf) - set(CONF_HELP) - {"server_mode"})
        if unknown:
            logger.warning("ignoring unknown --conf keys %s (known: %s)", unknown, ", ".join(CONF_HELP))
        model = conf.get("model") or None
        if model is not None and model not in MODELS:
            raise InputError(f"--conf model {model!r}: choose one of {', '.join(MODELS)}")
        try:
            choose_model(model, conf.get("checkpoint") or None)  # a checkpoint of another model, a bad sidecar
        except CheckpointError as err:
            raise InputError(f"--conf model / checkpoint: {err}") from None
        image_size = conf.get("image_size")
        try:
            image_size = int(image_size) if image_size not in (None, "") else None
            max_upload_mb = float(conf.get("max_upload_mb", DEFAULT_MAX_UPLOAD_MB))
            cache_gb = float(conf["cache_gb"]) if conf.get("cache_gb") not in (None, "") else None
        except ValueError as err:
            raise InputError(f"--conf image_size / max_upload_mb / cache_gb must be numbers ({err})") from None
        if cache_gb is not None and cache_gb <= 0:
            raise InputError(f"--conf cache_gb must be positive, got {cache_gb:g}")
        warmup = str(conf.get("warmup", "auto")).strip().lower()
        if warmup != "auto":
            warmup = "true" if _bool(warmup, "warmup") else "false"
        all_tasks, all_strategies = list(defaults.get("tasks", [])), list(defaults.get("strategies", []))
        return cls(
            checkpoint=conf.get("checkpoint") or None,
            model=model,
            device=str(conf.get("device", "auto")),
            image_size=image_size,
            cache_gb=cache_gb,
            preload=_bool(conf.get("preload", "true"), "preload"),
            warmup=warmup,
            labels=_labels(conf.get("labels"), studies),
            max_upload_bytes=int(max_upload_mb * 1e6),
            tasks=_names(conf.get("tasks", all_tasks), all_tasks, "tasks"),
            strategies=_names(conf.get("strategies", all_strategies), all_strategies, "strategies"),
            state_dir=_state_dir(conf.get("state_dir"), studies),
        )
