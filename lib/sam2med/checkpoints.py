"""The model registry (SAM2.1 and MedSAM2), fine-tuned checkpoints' sidecars, a local cache, download and verification.

Every model sam2med can run is one `ModelSpec` in `MODELS`: its sam2 config, input size, preprocessing,
checkpoint file and URL, licence and citation. A fine-tuned checkpoint names its base model in a JSON
sidecar next to it (`sidecar_path`); `choose_model` turns `--model` / `--checkpoint` into one choice.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sam2med.errors import CheckpointError

logger = logging.getLogger(__name__)

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
MEDSAM2_BASE_URL = "https://huggingface.co/wanglab/MedSAM2/resolve/main"
CACHE_ENV = "SAM2MED_CHECKPOINT_DIR"

SAM2_LICENCE = "Apache-2.0 (facebookresearch/sam2)"
SAM2_CITATION = "Ravi et al., SAM 2: Segment Anything in Images and Videos, ICLR 2025"
MEDSAM2_LICENCE = "Apache-2.0 (bowang-lab/MedSAM2)"
MEDSAM2_CITATION = ("Ma et al., MedSAM2: Segment Anything in 3D Medical Images and Videos, arXiv:2504.03600 (2025); "
                    "cite SAM 2 too")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the registry: architecture (sam2 config + input size), preprocessing, weights file, terms."""

    name: str
    config: str  # name inside the sam2 package's hydra config module
    filename: str
    family: str = "SAM2.1"  # "SAM2.1" (Meta's weights) or "MedSAM2" (fine-tuned for medical images)
    input_size: int = 1024  # the size the weights were trained at; the memory attention's RoPE grid is input_size / 16
    preprocessing: str = "sam2"  # a key of sam2med.windowing.PREPROCESSING
    purpose: str = ""
    licence: str = SAM2_LICENCE
    citation: str = SAM2_CITATION

    @property
    def url(self) -> str:
        base = MEDSAM2_BASE_URL if self.family == "MedSAM2" else OFFICIAL_BASE_URL
        return f"{base}/{self.filename}"

    @property
    def title(self) -> str:
        """How messages and provenance name it, e.g. "SAM2.1 tiny", "MedSAM2 medsam2-ct-lesion"."""
        return f"{self.family} {self.name}"


_TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"
_MEDSAM2 = dict(family="MedSAM2", input_size=512, preprocessing="medsam2", licence=MEDSAM2_LICENCE, citation=MEDSAM2_CITATION)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("tiny", _TINY, "sam2.1_hiera_tiny.pt", purpose="general, fastest SAM2.1 (natural images and video)"),
        ModelSpec("small", "configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt", purpose="general SAM2.1, a little more accurate"),
        ModelSpec("base_plus", "configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt", purpose="general SAM2.1, larger"),
        ModelSpec("large", "configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt", purpose="general SAM2.1, largest and slowest"),
        # MedSAM2: SAM2.1-tiny fine-tuned on medical 3D images and videos; their sam2.1_hiera_t512.yaml is
        # sam2.1_hiera_t.yaml at image_size 512 with the memory attention's RoPE feat_sizes [32, 32].
        ModelSpec("medsam2", _TINY, "MedSAM2_latest.pt", purpose="medical 3D images and videos, latest (recommended by MedSAM2)", **_MEDSAM2),
        ModelSpec("medsam2-ct-lesion", _TINY, "MedSAM2_CTLesion.pt", purpose="CT lesions (fine-tuned)", **_MEDSAM2),
        ModelSpec("medsam2-mri-liver-lesion", _TINY, "MedSAM2_MRI_LiverLesion.pt", purpose="liver lesions in MRI (fine-tuned)", **_MEDSAM2),
        ModelSpec("medsam2-us-heart", _TINY, "MedSAM2_US_Heart.pt", purpose="heart in ultrasound video (fine-tuned)", **_MEDSAM2),
        ModelSpec("medsam2-2411", _TINY, "MedSAM2_2411.pt", purpose="base model of Nov 2024", **_MEDSAM2),
    )
}
DEFAULT_MODEL = "tiny"
SIDECAR_SUFFIX = ".json"


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise CheckpointError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}") from None


def _registry_model(path: str | os.PathLike) -> str | None:
    """The model whose registry file name `path` carries, if any."""
    return next((spec.name for spec in MODELS.values() if Path(path).name == spec.filename), None)


def model_for_checkpoint(path: str | os.PathLike | None, default: str = DEFAULT_MODEL) -> str:
    """The model of `path`: its sidecar's base model, else the model whose file name it carries, else `default`."""
    if path is None:
        return default
    sidecar = read_sidecar(path)
    if sidecar is not None:
        return sidecar.base_model
    return _registry_model(path) or default


@dataclass(frozen=True)
class Sidecar:
    """What a fine-tuned checkpoint's sidecar says: its base model (a registry name) and input size; the rest kept as is."""

    base_model: str
    image_size: int
    extra: dict


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """The sidecar of a checkpoint: its full file name plus ".json", next to it (my_ft.pt -> my_ft.pt.json)."""
    path = Path(checkpoint)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(checkpoint: str | os.PathLike) -> Sidecar | None:
    """The sidecar of `checkpoint`, None without one; a malformed sidecar is a one-line `CheckpointError`.

    Required keys: "base_model" (a name of `MODELS`: the architecture and preprocessing) and "image_size"
    (the input size it was trained at: a multiple of 32, at least 128). Other keys (base checkpoint and its
    sha256, steps, mode, ...) are kept in `extra` and not interpreted here.
    """
    path = sidecar_path(checkpoint)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path.name}: not a readable JSON sidecar ({str(err).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name}: the sidecar must be a JSON object with base_model and image_size")
    base, size = data.get("base_model"), data.get("image_size")
    if base not in MODELS:
        raise CheckpointError(f"{path.name}: base_model {base!r} is not a known model (one of {', '.join(MODELS)})")
    if isinstance(size, bool) or not isinstance(size, int) or size % 32 or size < 128:
        raise CheckpointError(f"{path.name}: image_size must be an integer multiple of 32, at least 128, got {size!r}")
    return Sidecar(base, size, {k: v for k, v in data.items() if k not in ("base_model", "image_size")})


@dataclass(frozen=True)
class ModelChoice:
    """The model to build for a checkpoint: registry name, input size, and the sidecar that said so (if any)."""

    model: str
    image_size: int
    sidecar: Sidecar | None = None

    @property
    def spec(self) -> ModelSpec:
        return MODELS[self.model]


def choose_model(model: str | None, checkpoint: str | os.PathLike | None, image_size: int | None = None) -> ModelChoice:
    """Resolve `--model` / `--checkpoint` / `--image-size` into one model, failing on contradictions.

    A checkpoint with a sidecar is its base model at its trained size; a registry file name (e.g.
    MedSAM2_latest.pt) is that model; `model` naming another model than either is an error. The input
    size is `image_size` when given, else the sidecar's, else the model's own.
    """
    if model is not None:
        model_spec(model)
    sidecar = read_sidecar(checkpoint) if checkpoint is not None else None
    named = sidecar.base_model if sidecar else (_registry_model(checkpoint) if checkpoint is not None else None)
    if model is not None and named is not None and model != named:
        source = f"its sidecar {sidecar_path(checkpoint).name} names" if sidecar else "its file name is that of"
        raise CheckpointError(f"checkpoint {Path(checkpoint).name} is a '{named}' model ({source} '{named}'), "
                              f"not '{model}': drop --model or give the matching name")
    chosen = model or named or DEFAULT_MODEL
    size = image_size or (sidecar.image_size if sidecar else MODELS[chosen].input_size)
    return ModelChoice(chosen, int(size), sidecar)


def random_weights_hint(model: str) -> str:
    """How to try the plumbing without the official weights, said in every missing-checkpoint message."""
    path = f"checkpoints/{model_spec(model).filename[:-3]}.RANDOM-WEIGHTS.pt"
    return (f"; to try the installation without them (RANDOM weights: geometry and speed only, no segmentation quality): "
            f"python main.py download --model {model} --random-weights {path}, then pass --model {model} --checkpoint {path}")


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
    """Download `spec`'s published checkpoint to `destination` with a progress bar, atomically."""
    from tqdm import tqdm

    from sam2med.io import write_atomically
    from sam2med.progress import on_terminal

    def fetch(tmp: Path) -> None:
        with urllib.request.urlopen(spec.url, timeout=timeout_s) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=spec.filename, disable=not on_terminal()) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        verify_checkpoint(tmp)

    destination.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", spec.url, destination)
    try:
        return write_atomically(destination, fetch)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CheckpointError(
            f"cannot download the {spec.family} '{spec.name}' checkpoint ({reason}): download {spec.url} "
            f"and save it as {destination}, or pass --checkpoint PATH" + random_weights_hint(spec.name)
        ) from None


def resolve_checkpoint(model: str, checkpoint: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The checkpoint file to load: `checkpoint` when given, else the cached published file (downloaded if absent)."""
    spec = model_spec(model)
    if checkpoint is not None:
        from sam2med.io import check_file

        return check_file(Path(checkpoint).expanduser(), "checkpoint", CheckpointError)
    path = cache_dir() / spec.filename
    if path.is_file():
        return path
    if not download:
        raise CheckpointError(f"no {spec.family} '{model}' checkpoint at {path}: download {spec.url} and save it there, "
                              f"or pass --checkpoint PATH" + random_weights_hint(model))
    return download_checkpoint(spec, path)
