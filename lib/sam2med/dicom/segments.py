"""What a segment is, as DICOM writers record it: its value, name, colour, coded meaning, and the algorithm
that made it. One description serves every writer (DICOM-SEG, RTSTRUCT)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from sam2med.errors import InputError


@dataclass(frozen=True)
class Code:
    """A coded concept (DICOM code sequence item): value, coding scheme ("SCT" = SNOMED CT), meaning."""

    value: str
    scheme: str
    meaning: str

    def __post_init__(self) -> None:
        for name in ("value", "scheme", "meaning"):
            if not str(getattr(self, name)).strip():
                raise InputError(f"a segment code needs a {name}")

    def to_dcmqi(self) -> dict[str, str]:
        return {"CodeValue": self.value, "CodingSchemeDesignator": self.scheme, "CodeMeaning": self.meaning[:64]}

    def to_dataset(self) -> Dataset:
        """The code as one item of a DICOM code sequence."""
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = self.value, self.scheme, self.meaning[:64]
        return item

    @classmethod
    def parse(cls, text: str, what: str = "code") -> "Code":
        """A code written as SCHEME:VALUE:MEANING, e.g. "SCT:10200004:Liver"."""
        parts = [part.strip() for part in str(text).split(":", 2)]
        if len(parts) != 3 or not all(parts):
            raise InputError(f"{what} {text!r}: write a code as SCHEME:VALUE:MEANING, e.g. SCT:10200004:Liver")
        return cls(parts[1], parts[0], parts[2])


ANATOMICAL_STRUCTURE_CATEGORY = Code("123037004", "SCT", "Anatomical Structure")
ANATOMICAL_STRUCTURE_TYPE = Code("91723000", "SCT", "Anatomical structure")
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")  # DICOM CID 7162, algorithm family

# A generic colour cycle for segments without a colour of their own.
DEFAULT_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255))


def _check_color(color: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(int(c) for c in color)
    if len(values) != 3 or any(not 0 <= c <= 255 for c in values):
        raise InputError(f"a segment colour is three values 0..255 (R, G, B), not {list(color)}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class Segment:
    """One segment: the label value it stands for, its name, display colour (RGB 0..255) and coded meaning."""

    value: int
    name: str
    color: tuple[int, int, int]
    category: Code = ANATOMICAL_STRUCTURE_CATEGORY
    type: Code = ANATOMICAL_STRUCTURE_TYPE
    modifier: Code | None = None  # of the type, e.g. SCT 7771000 Left
    region: Code | None = None  # anatomic region, e.g. Kidney for a kidney cyst
    region_modifier: Code | None = None

    def __post_init__(self) -> None:
        if not 1 <= int(self.value) <= 65535:
            raise InputError(f"segment value {self.value} is outside 1..65535")
        if not str(self.name).strip():
            raise InputError(f"segment {self.value} needs a name")
        object.__setattr__(self, "color", _check_color(self.color))


@dataclass(frozen=True)
class Algorithm:
    """The algorithm that made the segments: its name and version (model and checkpoint hash)."""

    name: str = "sam2med"
    version: str = ""
    kind: str = "SEMIAUTOMATIC"  # DICOM SegmentAlgorithmType: MANUAL, SEMIAUTOMATIC or AUTOMATIC
    family: Code = ARTIFICIAL_INTELLIGENCE

    def __post_init__(self) -> None:
        if self.kind not in ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC"):
            raise InputError(f"algorithm kind {self.kind!r} is not MANUAL, SEMIAUTOMATIC or AUTOMATIC")
