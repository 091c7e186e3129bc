"""Intensity windowing: map a volume's voxel values to [0, 1] before SAM2 sees them.

CT uses a level/width window (a named preset or explicit numbers); MR and other modalities use robust
percentile normalisation over the whole volume, so every slice shares one mapping.

`Preprocessing` says what a model expects after that (the registry names one per model): SAM2.1 takes
the [0, 1] values as they are; MedSAM2 was trained on 8-bit slices (window clipped, stretched to
[0, 255] over the clipped volume, truncated to integers, then / 255), resized with a bicubic filter.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from sam2med.errors import PromptError

# (level, width) in Hounsfield units.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "abdomen": (50.0, 350.0),
    "liver": (30.0, 150.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
DEFAULT_CT_PRESET = "soft_tissue"
DEFAULT_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Preprocessing:
    """A model's input convention after windowing: 8-bit intensities or not, and the resize filter."""

    name: str
    eight_bit: bool  # MedSAM2: window -> [0, 255] over the clipped volume's own min/max, truncated, / 255
    resize: str  # "bilinear" or "bicubic" (antialiased, as PIL's Image.resize does it)
    description: str


PREPROCESSING: dict[str, Preprocessing] = {
    "sam2": Preprocessing("sam2", False, "bilinear", "window to [0, 1], bilinear resize, ImageNet mean/std"),
    "medsam2": Preprocessing("medsam2", True, "bicubic",
                             "window to 8-bit [0, 255] (stretched over the clipped volume), / 255, bicubic resize, ImageNet mean/std"),
}


@dataclass(frozen=True)
class Window:
    """How voxel values become [0, 1]: a level/width window, or percentiles of the volume."""

    level: float | None = None
    width: float | None = None
    percentiles: tuple[float, float] | None = None
    eight_bit: bool = False  # see Preprocessing.eight_bit

    @property
    def key(self) -> str:
        """A stable text form, used in cache keys and logs."""
        if self.percentiles is not None:
            text = f"percentile:{self.percentiles[0]:g},{self.percentiles[1]:g}"
        else:
            text = f"window:{self.level:g},{self.width:g}"
        return text + (":8bit" if self.eight_bit else "")

    def for_model(self, preprocessing: Preprocessing) -> "Window":
        """This window as `preprocessing` wants its output (8-bit or not)."""
        return dataclasses.replace(self, eight_bit=preprocessing.eight_bit)

    @classmethod
    def parse(cls, spec: "str | Window | None", modality: str | None) -> "Window":
        """Parse 'auto' / None, a CT preset name, 'LEVEL,WIDTH', or 'percentile[:LOW,HIGH]'."""
        if isinstance(spec, Window):
            return spec
        text = "auto" if spec is None else str(spec).strip().lower()
        if text in ("", "auto"):
            if (modality or "").upper() == "CT":
                return cls(*CT_PRESETS[DEFAULT_CT_PRESET])
            return cls(percentiles=DEFAULT_PERCENTILES)
        if text in CT_PRESETS:
            return cls(*CT_PRESETS[text])
        if text.startswith("percentile"):
            rest = text[len("percentile") :].lstrip(":")
            if not rest:
                return cls(percentiles=DEFAULT_PERCENTILES)
            low, high = _two_numbers(rest, spec)
            if not 0 <= low < high <= 100:
                raise PromptError(f"percentiles must satisfy 0 <= low < high <= 100, got {spec!r}")
            return cls(percentiles=(low, high))
        level, width = _two_numbers(text, spec)
        if width <= 0:
            raise PromptError(f"window width must be positive, got {spec!r}")
        return cls(level=level, width=width)

    def bounds(self, volume: np.ndarray) -> tuple[float, float]:
        """The (low, high) intensities mapped to 0 and 1, from the whole volume for percentiles."""
        if self.percentiles is not None:
            low, high = np.percentile(volume, self.percentiles)
            low, high = float(low), float(high)
        else:
            low, high = self.level - self.width / 2.0, self.level + self.width / 2.0
        if self.eight_bit:  # MedSAM2 stretches the clipped volume's own range to [0, 255]
            low, high = max(low, float(np.min(volume))), min(high, float(np.max(volume)))
        return low, high

    def apply(self, array: np.ndarray, bounds: tuple[float, float] | None = None) -> np.ndarray:
        """Map `array` to float32 in [0, 1] (with `bounds` computed from its whole volume, when given)."""
        low, high = bounds if bounds is not None else self.bounds(array)
        values = np.asarray(array, dtype=np.float32)
        if high <= low:
            return np.zeros_like(values)
        unit = np.clip((values - low) / (high - low), 0.0, 1.0)
        if self.eight_bit:  # truncated to integers like numpy's uint8 cast of [0, 255] floats
            return np.floor(unit * np.float32(255.0)) / np.float32(255.0)
        return unit


def _two_numbers(text: str, spec: object) -> tuple[float, float]:
    parts = text.replace(":", ",").split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError
        return low, high
    except ValueError:
        presets = ", ".join(CT_PRESETS)
        raise PromptError(f"unknown window {spec!r}: use auto, a CT preset ({presets}), LEVEL,WIDTH or percentile[:LOW,HIGH]") from None


def guess_modality(array: np.ndarray, modality: str | None = None) -> str:
    """The modality when known, else 'CT' for volumes that look like Hounsfield units, else 'MR'."""
    if modality:
        return modality.upper()
    if not np.issubdtype(array.dtype, np.integer) and not np.allclose(array.flat[:: max(1, array.size // 4096)] % 1, 0):
        return "MR"
    low = float(np.percentile(array, 1))
    return "CT" if low <= -500 else "MR"
