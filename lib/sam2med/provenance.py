"""Provenance of a result: which inputs, which model and weights, which settings and software made it."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from importlib import metadata
from pathlib import Path

import sam2med
from sam2med.checkpoints import read_sidecar

RANDOM_WEIGHTS_KEY = "sam2med_random_weights"  # set in checkpoints built by `download --random-weights` and fine-tuned from one
RANDOM_WEIGHTS_NOTE = "note: RANDOM weights (a placeholder checkpoint): the results show the plumbing, not segmentation quality"


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's files (a DICOM series: names and contents, in name order)."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(child.relative_to(path).as_posix().encode())
            digest.update(bytes.fromhex(file_sha256(child)))
        return digest.hexdigest()
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def describe_file(path: str | os.PathLike, name: str | None = None) -> dict:
    """{"file": its name (never its folder), "sha256": ...}."""
    return {"file": name or Path(path).name, "sha256": file_sha256(path)}


@functools.lru_cache(maxsize=8)
def _random_marker(path: str, size: int, mtime_ns: int) -> bool:
    import torch

    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint: no marker can be read
        return False
    return isinstance(content, dict) and bool(content.get(RANDOM_WEIGHTS_KEY))


def has_random_weights(checkpoint: str | os.PathLike) -> bool:
    """True for a checkpoint built with random weights, or fine-tuned from one: its marker, its sidecar's
    "random_weights", or 'RANDOM-WEIGHTS' in its file name."""
    path = Path(checkpoint)
    if re.search(r"random[-_.]?weights", path.name, re.IGNORECASE):
        return True
    sidecar = read_sidecar(path)
    if sidecar is not None and sidecar.extra.get("random_weights") is True:
        return True
    stat = path.stat()
    return _random_marker(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def versions() -> dict:
    """Versions of sam2med, sam2 and torch."""
    found = {"sam2med": sam2med.__version__}
    for package in ("sam2", "torch"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def model_provenance(propagator) -> dict:
    """The model (title and registry name), its checkpoint file and hash, whether its weights are random, input size,
    preprocessing, device, precision."""
    return {
        "model": propagator.model_title,
        "model_name": propagator.model_name,
        "preprocessing": propagator.preprocessing.name,
        "checkpoint": describe_file(propagator.checkpoint),
        "random_weights": has_random_weights(propagator.checkpoint),
        "input_size": propagator.image_size,
        "device": str(propagator.device),
        "precision": propagator.precision,
    }


def provenance(propagator, inputs: dict[str, dict], window: str) -> dict:
    """The provenance block of a `--scores` file or a server response."""
    return {"inputs": inputs, **model_provenance(propagator), "window": window, "versions": versions()}


def model_version(model_name: str, checkpoint) -> str:
    """The version of a model's weights as responses and scores carry it: its name and the checkpoint's sha256 prefix."""
    return f"{model_name}:{file_sha256(checkpoint)[:12]}"
