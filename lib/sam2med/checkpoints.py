"""SAM2.1 checkpoints: the official names and URLs, a local cache, download and verification."""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from sam2med.errors import CheckpointError

logger = logging.getLogger(__name__)

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
CACHE_ENV = "SAM2MED_CHECKPOINT_DIR"


@dataclass(frozen=True)
class ModelSpec:
    """One official SAM2.1 model: its sam2 config and checkpoint file."""

    name: str
    config: str  # name inside the sam2 package's hydra config module
    filename: str

    @property
    def url(self) -> str:
        return f"{OFFICIAL_BASE_URL}/{self.filename}"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("tiny", "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
        ModelSpec("small", "configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
        ModelSpec("base_plus", "configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt"),
        ModelSpec("large", "configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
    )
}
DEFAULT_MODEL = "tiny"


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise CheckpointError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}") from None


def model_for_checkpoint(path: str | os.PathLike | None, default: str = DEFAULT_MODEL) -> str:
    """The model whose official file name `path` carries, else `default`."""
    if path is not None:
        for spec in MODELS.values():
            if Path(path).name == spec.filename:
                return spec.name
    return default


def random_weights_hint(model: str) -> str:
    """How to try the plumbing without the official weights, said in every missing-checkpoint message."""
    path = f"checkpoints/{model_spec(model).filename[:-3]}.RANDOM-WEIGHTS.pt"
    return (f"; to try the installation without them (RANDOM weights: geometry and speed only, no segmentation quality): "
            f"python main.py download --model {model} --random-weights {path}, then pass --checkpoint {path}")


def cache_dir() -> Path:
    """Where downloaded checkpoints live: $SAM2MED_CHECKPOINT_DIR, else ~/.cache/sam2med/checkpoints."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sam2med" / "checkpoints")


def verify_checkpoint(path: Path) -> None:
    """Check that `path` is a loadable SAM2 checkpoint (a dict with a 'model' state dict)."""
    import torch

    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    if not isinstance(content, dict) or not isinstance(content.get("model"), dict):
        raise CheckpointError(f"{path}: not a SAM2 checkpoint (no 'model' state dict)")


def download_checkpoint(spec: ModelSpec, destination: Path, timeout_s: float = 30.0) -> Path:
    """Download `spec`'s official checkpoint to `destination` with a progress bar, atomically."""
    from tqdm import tqdm

    from sam2med.progress import on_terminal

    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}.partial")
    logger.info("downloading %s to %s", spec.url, destination)
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout_s) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=spec.filename, disable=not on_terminal()) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        verify_checkpoint(tmp)
        os.replace(tmp, destination)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CheckpointError(
            f"cannot download the SAM2.1 '{spec.name}' checkpoint ({reason}): download {spec.url} "
            f"and save it as {destination}, or pass --checkpoint PATH" + random_weights_hint(spec.name)
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return destination


def resolve_checkpoint(model: str, checkpoint: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The checkpoint file to load: `checkpoint` when given, else the cached official file (downloaded if absent)."""
    spec = model_spec(model)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        return path
    path = cache_dir() / spec.filename
    if path.is_file():
        return path
    if not download:
        raise CheckpointError(f"no SAM2.1 '{model}' checkpoint at {path}: download {spec.url} and save it there, "
                              f"or pass --checkpoint PATH" + random_weights_hint(model))
    return download_checkpoint(spec, path)
