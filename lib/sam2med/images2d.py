"""2D images for one-prompt segmentation: PNG/JPEG, 2D NIfTI and single DICOM files, read and written back.

Each image keeps what is needed to write its mask in its own format on its own grid:
- PNG -> a PNG mask of the same size (8-bit, 16-bit when a label value is over 255);
- JPEG -> a PNG mask (JPEG is lossy: a JPEG mask would not hold exact label values);
- NIfTI -> a NIfTI mask with the image's dimension, spacing, origin and direction;
- single DICOM file -> a NIfTI mask on the DICOM's geometry (spacing, origin, direction). A DICOM-SEG is not
  written: `sam2med.dicom.seg` refuses an empty label (an image where the object is absent) and sources
  without Study/Series/SOP UIDs (anonymised exports), both common for single files.

Arrays are (H, W): rows follow the image's second axis (y), columns its first (x), as axial slices do.
The type of a file is told by its content (PNG, JPEG and DICOM signatures) or its suffix (NIfTI).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import SimpleITK as sitk
except ImportError:  # the engine profile (scripts/bundle.sh) has none: PNG/JPEG only, NIfTI/DICOM say what to install
    sitk = None

from sam2med.errors import InputError
from sam2med.io import _simpleitk, as_label_values, check_image_file, check_regular_file, label_dtype, write_atomically
from sam2med.windowing import Preprocessing, Window, guess_modality

logger = logging.getLogger(__name__)

PNG, JPEG, NIFTI, DICOM = "png", "jpeg", "nifti", "dicom"
IMAGE2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".nii.gz", ".nii", ".dcm")
LABEL2D_SUFFIXES = (".png", ".nii.gz", ".nii")
MAX_PIXELS_2D = 2**26  # 8192 x 8192: over any radiograph or mammogram; a larger header is refused before decoding
# An 8-bit PNG/JPEG is already display-windowed: its 0..255 map linearly to [0, 1].
EIGHT_BIT_WINDOW = Window(level=127.5, width=255.0)


@dataclass(frozen=True)
class Geometry2D:
    """Where a NIfTI or DICOM image lies in patient space, as SimpleITK holds it (2D, or 3D with one slice)."""

    dimension: int
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def apply(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


@dataclass
class Image2D:
    """One 2D image: pixels (H, W), its format, pixel spacing (row, column) and, for NIfTI/DICOM, its geometry."""

    path: Path
    kind: str  # PNG, JPEG, NIFTI or DICOM
    array: np.ndarray
    spacing: tuple[float, float]  # mm per row and per column; 1.0 (pixels) for PNG/JPEG
    modality: str | None = None
    geometry: Geometry2D | None = None
    eight_bit: bool = False  # an 8-bit PNG/JPEG: already windowed for display

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.array.shape[0]), int(self.array.shape[1])


def file_kind(path: Path) -> str | None:
    """PNG, JPEG, NIFTI or DICOM from the file's signature (NIfTI: its suffix); None for anything else."""
    with open(path, "rb") as handle:
        head = handle.read(132)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if path.name.lower().endswith((".nii", ".nii.gz")):
        return NIFTI
    if head[128:132] == b"DICM" or path.name.lower().endswith(".dcm"):
        return DICOM
    return None


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and "Exception" not in line]
    return (lines[0] if lines else type(err).__name__)[:160]


def _read_pil(path: Path, kind: str, label: bool) -> Image2D:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size check below says it in one line
            image = Image.open(path)  # reads the header only
        with image:
            width, height = image.size
            if width * height > MAX_PIXELS_2D:
                raise InputError(f"{path}: declares {width}x{height} = {width * height} pixels, over the {MAX_PIXELS_2D} "
                                 "this program reads")
            image.load()
            if getattr(image, "n_frames", 1) > 1:
                raise InputError(f"{path}: holds {image.n_frames} frames; one-prompt takes single 2D images")
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                array, eight_bit = np.asarray(image), False
            elif mode == "L" or (label and mode == "P"):  # a palette label's indices are its values
                array, eight_bit = np.asarray(image), True
            elif label:
                raise InputError(f"{path}: a {mode} colour label; save the label values as a grey (8/16-bit) or palette PNG")
            else:  # 1, P, RGB, RGBA, LA, CMYK, ...: to luminance (SAM2 sees one channel repeated, as for CT/MR)
                array, eight_bit = np.asarray(image.convert("L")), True
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: cannot read it as {kind.upper()} ({_first_line(err)})") from None
    if array.ndim != 2:
        raise InputError(f"{path}: is not a single-channel 2D image (shape {array.shape})")
    return Image2D(path, kind, np.ascontiguousarray(array), (1.0, 1.0), None, None, eight_bit)


def _read_sitk(path: Path, kind: str) -> Image2D:
    _simpleitk(path)
    try:
        check_image_file(path, MAX_PIXELS_2D)
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise InputError(f"{path}: cannot read it as {'DICOM' if kind == DICOM else 'NIfTI'} ({_first_line(err)})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per pixel; a scalar image is needed")
    size = tuple(int(s) for s in image.GetSize())
    if image.GetDimension() > 2 and any(s > 1 for s in size[2:]):
        raise InputError(f"{path}: is a {image.GetDimension()}D volume ({'x'.join(map(str, size))}); "
                         "one-prompt takes 2D images (use propagate for volumes)")
    if image.GetDimension() < 2:
        raise InputError(f"{path}: is {image.GetDimension()}D; a 2D image is needed")
    array = sitk.GetArrayFromImage(image).reshape(size[1], size[0])  # (H, W) = (y, x)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(f"{path}: holds NaN or infinite pixels; replace them with finite values first")
    modality = None
    if kind == DICOM and image.HasMetaDataKey("0008|0060"):
        modality = image.GetMetaData("0008|0060").strip() or None
    geometry = Geometry2D(image.GetDimension(), tuple(float(s) for s in image.GetSpacing()),
                          tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))
    spacing = (float(image.GetSpacing()[1]), float(image.GetSpacing()[0]))
    return Image2D(path, kind, np.ascontiguousarray(array), spacing, modality, geometry, False)


def read_image2d(path: str | os.PathLike, label: bool = False) -> Image2D:
    """Read a 2D PNG/JPEG, NIfTI or single-file DICOM image; an `InputError` names what is wrong with it.
    `label`: a label map (palette PNG indices kept, colour refused)."""
    path = check_regular_file(path, "2D image file")
    try:
        kind = file_kind(path)
    except OSError as err:
        raise InputError(f"{path}: cannot open it ({err.strerror or err})") from None
    if kind is None:
        raise InputError(f"{path}: not an image (PNG, JPEG, 2D NIfTI or a single DICOM file expected)")
    return _read_pil(path, kind, label) if kind in (PNG, JPEG) else _read_sitk(path, kind)


def read_label2d(path: str | os.PathLike) -> Image2D:
    """A 2D label map (PNG or NIfTI; a palette PNG's indices are its values): non-negative integers."""
    image = read_image2d(path, label=True)
    if image.kind == JPEG:
        raise InputError(f"{image.path}: a JPEG label is lossy (its values are not exact); save it as PNG or NIfTI")
    image.array = as_label_values(image.array, image.path)
    return image


def window_image2d(image: Image2D, window: "Window | str | None", preprocessing: Preprocessing) -> tuple[np.ndarray, str]:
    """The image's pixels in [0, 1] for SAM2 and the window used: 0..255 linearly for an 8-bit PNG/JPEG, else
    `window` ('auto': the modality's rule, CT soft tissue or percentiles of this image)."""
    chosen = EIGHT_BIT_WINDOW if image.eight_bit else Window.parse(window, guess_modality(image.array, image.modality))
    chosen = chosen.for_model(preprocessing)
    return chosen.apply(image.array), chosen.key


def mask_name(image: Image2D) -> str:
    """The file name of an image's mask: PNG for PNG and JPEG, NIfTI for NIfTI and DICOM."""
    name = image.path.name
    lower = name.lower()
    if image.kind == PNG:
        return name if lower.endswith(".png") else f"{name}.png"
    if image.kind == JPEG:
        stem = name[: -len(".jpeg")] if lower.endswith(".jpeg") else name[:-4] if lower.endswith(".jpg") else name
        return f"{stem}.png"
    if image.kind == NIFTI:
        return name
    return f"{name[:-4] if lower.endswith('.dcm') else name}.nii.gz"


def save_mask2d(mask_hw: np.ndarray, image: Image2D, path: str | os.PathLike) -> Path:
    """Write a (H, W) label mask for `image` atomically, in the format `mask_name` gives, on the image's grid."""
    path = Path(path)
    if tuple(mask_hw.shape) != image.shape:
        raise InputError(f"{image.name}: mask shape {mask_hw.shape} does not match the image {image.shape}")
    max_value = int(mask_hw.max()) if mask_hw.size else 0
    if path.name.lower().endswith(".png"):
        from PIL import Image

        if max_value > 65535:
            raise InputError(f"{image.name}: label value {max_value} does not fit a PNG mask (at most 65535)")
        pixels = np.ascontiguousarray(mask_hw, dtype=np.uint8 if max_value <= 255 else np.uint16)
        return write_atomically(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))
    if image.geometry is None:
        raise InputError(f"{image.name}: a {image.kind.upper()} image has no patient geometry for a NIfTI mask")
    array = np.ascontiguousarray(mask_hw.astype(label_dtype(max_value)))
    out = _simpleitk(path, "writing").GetImageFromArray(array if image.geometry.dimension == 2 else array[None])
    image.geometry.apply(out)
    return write_atomically(path, lambda tmp: sitk.WriteImage(out, str(tmp), useCompression=True))


def list_images(folder: str | os.PathLike, exclude: "set[Path] | None" = None) -> list[Path]:
    """The files of `folder` (not hidden, not folders, not in `exclude`), in name order: each is tried as an image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: images folder does not exist")
    skip = {p.resolve() for p in exclude or set()}
    files = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.resolve() in skip:
            continue
        if path.is_dir():
            logger.debug("skipping folder %s", path)
            continue
        files.append(path)
    return files
