"""sam2med: SAM2 slice propagation for 3D medical annotation."""

from sam2med.errors import Sam2MedError

__all__ = ["Sam2MedError"]
__version__ = "0.1.0"
