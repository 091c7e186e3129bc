"""Intensity windowing: map a volume's voxel values to [0, 1] before SAM2 sees them.

CT uses a level/width window (a named preset or explicit numbers); MR and other modalities use robust
percentile normalisation over the whole volume, so every slice shares one mapping.
"""

from __future__ import annotations

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
class Window:
    """How voxel values become [0, 1]: a level/width window, or percentiles of the volume."""

    level: float | None = None
    width: float | None = None
    percentiles: tuple[float, float] | None = None

    @property
    def key(self) -> str:
        """A stable text form, used in cache keys and logs."""
        if self.percentiles is not None:
            return f"percentile:{self.percentiles[0]:g},{self.percentiles[1]:g}"
        return f"window:{self.level:g},{self.width:g}"

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
            return float(low), float(high)
        return self.level - self.width / 2.0, self.level + self.width / 2.0

    def apply(self, array: np.ndarray, bounds: tuple[float, float] | None = None) -> np.ndarray:
        """Map `array` to float32 in [0, 1] (with `bounds` computed from its whole volume, when given)."""
        low, high = bounds if bounds is not None else self.bounds(array)
        values = np.asarray(array, dtype=np.float32)
        if high <= low:
            return np.zeros_like(values)
        return np.clip((values - low) / (high - low), 0.0, 1.0)


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
