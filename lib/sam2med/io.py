"""Reading images and label maps (NIfTI, NRRD, MetaImage, DICOM series) and writing labels atomically."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import stat
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

try:
    import SimpleITK as sitk
except ImportError:  # the engine profile (scripts/bundle.sh) has no SimpleITK: NIfTI goes through nibabel (_nifti_*)
    sitk = None

from sam2med.errors import InputError, Sam2MedError
from sam2med.geometry import Grid

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MAX_VOXELS = 2**30  # 1024^3 voxels (4 GiB as float32): over any CT/MR volume; a larger header is refused unread
_UNCOMPRESSED_DICOM = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_NO_SIMPLEITK = ("needs SimpleITK, which this install (sam2med's engine profile) leaves out: "
                 "pip install SimpleITK==2.4.1 (and pydicom==2.4.4 for DICOM), or install the server profile; "
                 "NIfTI (.nii, .nii.gz) works without it")


def _simpleitk(path: str | os.PathLike, what: str = "reading"):
    """SimpleITK, or an InputError saying what to install (engine profile: NIfTI only)."""
    if sitk is None:
        raise InputError(f"{path}: {what} {'a DICOM series' if Path(path).is_dir() else 'this format'} {_NO_SIMPLEITK}")
    return sitk


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_NIFTI_SUFFIXES)


def _nifti_image(path: Path):
    """A NIfTI file through nibabel (no pixels decoded yet); an unreadable header is an InputError."""
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises several types for foreign or damaged files
        raise InputError(f"{path}: cannot read it as an image ({str(err).splitlines()[0][:160] if str(err) else type(err).__name__})") from None


def _nifti_grid(image, path: Path) -> Grid:
    """The grid SimpleITK gives a NIfTI file: nibabel's affine (sform, else qform; RAS) in ITK's LPS terms, spacing
    the lengths of its columns, direction the columns over their lengths."""
    shape = tuple(int(s) for s in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"{path}: is {len(shape)}D; a 3D volume is needed")
    affine = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(image.affine, dtype=float)[:3]  # RAS -> LPS
    spacing = np.linalg.norm(affine[:, :3], axis=0)
    direction = affine[:, :3] / spacing
    return Grid(shape=shape, spacing=tuple(float(s) for s in spacing), origin=tuple(float(o) for o in affine[:, 3]),
                direction=tuple(float(d) for d in direction.ravel()))


def _nifti_volume(path: Path) -> Volume:
    """A NIfTI volume read by nibabel, on the grid and with the values SimpleITK gives it (scl_slope/inter applied)."""
    image = _nifti_image(path)
    grid = _nifti_grid(image, path)
    slope, inter = image.dataobj.slope, image.dataobj.inter
    scaled = not (slope in (0, 1) or np.isnan(slope)) or not (inter == 0 or np.isnan(inter))
    array = np.asanyarray(image.dataobj).astype(np.float32) if scaled else np.asanyarray(image.dataobj.get_unscaled())
    return Volume(array=np.ascontiguousarray(array.reshape(grid.shape)), grid=grid, source=str(path))


@dataclass
class Volume:
    """A 3D scalar image: voxels in (x, y, z) order, its grid, and what is known of its modality."""

    array: np.ndarray
    grid: Grid
    modality: str | None = None  # "CT", "MR", ... when the file says so (DICOM)
    source: str = ""
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.array.ndim != 3 or tuple(self.array.shape) != tuple(self.grid.shape):
            raise InputError(f"{self.source or 'volume'}: array shape {self.array.shape} does not match grid {self.grid.shape}")

    def fingerprint(self) -> str:
        """A content hash of voxels and grid: two volumes with the same fingerprint give the same features."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=16)
            digest.update(repr(self.grid).encode())
            digest.update(str(self.array.dtype).encode())
            digest.update(np.ascontiguousarray(self.array).data)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def grid_of(image: sitk.Image) -> Grid:
    return Grid(
        shape=tuple(int(s) for s in image.GetSize()),
        spacing=tuple(float(s) for s in image.GetSpacing()),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
    )


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.name.lower().endswith(suffixes)


def _read_dicom_series(folder: Path) -> tuple[sitk.Image, str | None]:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(f"{folder}: no DICOM series found in this folder")
    # Several series in one folder: take the one with most slices and say so.
    files_per_series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    series_id = max(files_per_series, key=lambda sid: len(files_per_series[sid]))
    if len(series_ids) > 1:
        logger.warning("%s holds %d DICOM series; reading %r (%d files)", folder, len(series_ids), series_id, len(files_per_series[series_id]))
    files = files_per_series[series_id]  # sorted by slice position by GDCM
    for file in files:
        check_regular_file(file, "DICOM file")
    check_pixel_count(files[0], MAX_VOXELS, count=len(files))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    image = reader.Execute()  # rescale slope/intercept applied
    modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else None
    return image, (modality or None)


_NIFTI_HEADERS = {  # sizeof_hdr: (dim format and offset, bitpix format and offset, vox_offset format and offset)
    348: (("8h", 40), ("h", 72), ("f", 108)),
    540: (("8q", 16), ("h", 14), ("q", 168)),
}
_CHUNK = 1 << 22


def _stream(path: Path):
    """The file's bytes, decompressed when it is gzip, in chunks; a cut or corrupt gzip stream is an InputError."""
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
    if not is_gzip:
        with open(path, "rb") as raw:
            while chunk := raw.read(_CHUNK):
                yield chunk
        return
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                yield chunk
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise InputError(f"{path}: is truncated or corrupt (the gzip stream is cut or damaged: {err})") from None


def _nifti_bytes_needed(header: bytes) -> int | None:
    """Bytes a NIfTI-1/2 file must hold, from its header (None when it is no NIfTI header)."""
    for endian in ("<", ">"):
        if len(header) < 4:
            return None
        layout = _NIFTI_HEADERS.get(struct.unpack(f"{endian}i", header[:4])[0])
        if layout is None or len(header) < 4 + max(offset for _, offset in layout) + 8:
            continue
        (dim_fmt, dim_at), (bitpix_fmt, bitpix_at), (vox_fmt, vox_at) = layout
        dims = struct.unpack_from(f"{endian}{dim_fmt}", header, dim_at)
        bitpix = struct.unpack_from(f"{endian}{bitpix_fmt}", header, bitpix_at)[0]
        vox_offset = struct.unpack_from(f"{endian}{vox_fmt}", header, vox_at)[0]
        if not 1 <= dims[0] <= 7 or bitpix <= 0 or any(d < 0 for d in dims[1 : dims[0] + 1]):
            return None
        return int(vox_offset) + int(np.prod(dims[1 : dims[0] + 1], dtype=np.int64)) * bitpix // 8
    return None


def check_complete(path: str | os.PathLike) -> None:
    """Refuse a file whose gzip stream is cut or damaged, or a NIfTI holding fewer bytes than its header announces
    (SimpleITK would read either with zeros in place of the missing voxels)."""
    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".gz") or name.endswith(".nii")):
        return
    size, header = 0, b""
    for chunk in _stream(path):
        if len(header) < 540:
            header += chunk[: 540 - len(header)]
        size += len(chunk)
    needed = _nifti_bytes_needed(header) if name.endswith((".nii", ".nii.gz")) else None
    if needed is not None and size < needed:
        raise InputError(f"{path}: is truncated: it holds {size} bytes of the {needed} its NIfTI header announces")


def header_of(path: str | os.PathLike) -> sitk.ImageFileReader:
    """An image file's header read by SimpleITK (size, pixel type, meta data), no pixels decoded."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def check_pixel_count(path: str | os.PathLike, limit: int, reader: sitk.ImageFileReader | None = None,
                      count: int = 1) -> sitk.ImageFileReader:
    """Refuse, from its header alone, a file declaring over `limit` pixels (`count` such files: a DICOM series),
    or an uncompressed DICOM file holding fewer bytes than its pixels need (its header is returned)."""
    reader = reader or header_of(path)
    pixels = int(np.prod([int(s) for s in reader.GetSize()], dtype=np.int64)) * count
    if pixels > limit:
        raise InputError(f"{path}: declares {'x'.join(map(str, reader.GetSize()))}{f' x {count} files' if count > 1 else ''} "
                         f"= {pixels} pixels, over the {limit} this program reads")
    with open(path, "rb") as handle:
        is_dicom = handle.read(132)[128:132] == b"DICM"
    if is_dicom:
        _check_dicom_pixel_bytes(path)
    return reader


def _check_dicom_pixel_bytes(path: str | os.PathLike) -> None:
    """Refuse an uncompressed DICOM file whose pixel data is shorter than its rows x columns x frames need
    (GDCM reads the missing pixels as zeros)."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), defer_size=256, force=True)  # pixel data left on disk
        syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", ""))
        element = ds.get_item("PixelData") if "PixelData" in ds else None
        needed = (int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "NumberOfFrames", 1) or 1)
                  * int(getattr(ds, "SamplesPerPixel", 1) or 1) * int(ds.BitsAllocated) // 8)
    except Exception as err:  # an odd header: SimpleITK's own reading decides
        logger.debug("%s: DICOM pixel length not checked (%s)", path, err)
        return
    held = None if element is None else getattr(element, "length", None)
    if held is None and element is not None:
        held = len(element.value or b"")  # a decompressed dataset holds its pixels as a plain element
    if syntax in _UNCOMPRESSED_DICOM and held is not None and 0 <= held < needed:
        raise InputError(f"{path}: is truncated: its pixels need {needed} bytes, the file holds {held}")


def check_image_file(path: str | os.PathLike, limit: int) -> None:
    """Before decoding: a regular file, whose header declares at most `limit` pixels, holding all its bytes."""
    check_regular_file(path, "image file")
    if sitk is None and _is_nifti(Path(path)):
        shape = _nifti_image(Path(path)).shape
        if int(np.prod(shape, dtype=np.int64)) > limit:
            raise InputError(f"{path}: declares {'x'.join(map(str, shape))} = {int(np.prod(shape, dtype=np.int64))} "
                             f"pixels, over the {limit} this program reads")
        check_complete(path)
        return
    _simpleitk(path)
    try:
        reader = header_of(path)
    except RuntimeError:
        check_complete(path)  # names a cut or damaged file better than ITK does
        raise
    check_pixel_count(path, limit, reader)
    check_complete(path)


def check_regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Refuse a path that is not a regular file (a FIFO, a device, a link to /dev/zero) before anything reads it."""
    path = Path(path)
    try:
        mode = path.stat().st_mode  # follows links: a link to a regular file is fine
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot open it ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else \
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
        raise InputError(f"{path}: is {kind}; a regular {what} is needed")
    return path


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read an image file or DICOM series folder as a 3D scalar SimpleITK image."""
    image, _ = _read_any(Path(path))
    return image


def _read_any(path: Path) -> tuple[sitk.Image, str | None]:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    modality = None
    try:
        if path.is_dir():
            image, modality = _read_dicom_series(path)
        else:
            check_image_file(path, MAX_VOXELS)
            image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first_line = next((line.strip() for line in str(err).splitlines() if line.strip() and "Exception" not in line), "unreadable")
        raise InputError(f"{path}: cannot read it as an image ({first_line[:160]})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar image is needed")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise InputError(f"{path}: is {image.GetDimension()}D; a 3D volume is needed")
    return image, modality


def read_grid(path: str | os.PathLike) -> Grid:
    """The voxel grid of an image file from its header alone (a DICOM folder or a non-3D file is read in full)."""
    path = Path(path)
    if sitk is None and _is_nifti(path):
        return _nifti_grid(_nifti_image(path), path)
    if path.is_file():
        reader = _simpleitk(path).ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            reader = None
        if reader is not None and reader.GetDimension() == 3:
            return Grid(shape=tuple(int(s) for s in reader.GetSize()), spacing=tuple(float(s) for s in reader.GetSpacing()),
                        origin=tuple(float(o) for o in reader.GetOrigin()), direction=tuple(float(d) for d in reader.GetDirection()))
    return grid_of(read_image(path))


def _non_finite_count(path: Path, array: np.ndarray) -> int:
    """NaN/inf voxels of a float image; ITK's NIfTI reader turns them into 0, so NIfTI files are counted as stored."""
    if path.is_file() and path.name.lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        array = np.asanyarray(nib.load(str(path)).dataobj)
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def load_volume(path: str | os.PathLike) -> Volume:
    """Load an image (NIfTI, NRRD, MetaImage) or a DICOM series folder as a `Volume`."""
    if sitk is None and Path(path).exists():
        if not _is_nifti(Path(path)):
            _simpleitk(path)
        check_image_file(path, MAX_VOXELS)
        volume = _nifti_volume(Path(path))
        if np.issubdtype(volume.array.dtype, np.floating):
            bad = _non_finite_count(Path(path), volume.array)
            if bad:
                raise InputError(f"{path}: {bad} voxels are NaN or infinite; replace them with finite values first")
        return volume
    image, modality = _read_any(Path(path))
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    if np.issubdtype(array.dtype, np.floating):
        bad = _non_finite_count(Path(path), array)
        if bad:
            raise InputError(f"{path}: {bad} voxels are NaN or infinite; replace them with finite values first")
    return Volume(array=np.ascontiguousarray(array), grid=grid_of(image), modality=modality, source=str(path))


def load_label(path: str | os.PathLike) -> Volume:
    """Load a label map; values must be non-negative integers."""
    volume = load_volume(path)
    volume.array = as_label_values(volume.array, path)
    return volume


def as_label_values(array: np.ndarray, source: str | os.PathLike) -> np.ndarray:
    """A label map's values as the smallest unsigned integer type; non-integer or negative values are refused."""
    if np.issubdtype(array.dtype, np.floating):
        rounded = np.rint(array)
        if not np.allclose(rounded, array, atol=1e-3):
            raise InputError(f"{source}: label map holds non-integer values")
        array = rounded
    if array.size and array.min() < 0:
        raise InputError(f"{source}: label map holds negative values")
    return array.astype(label_dtype(int(array.max()) if array.size else 0), copy=False)


MAX_LABEL_VALUE = 2**32 - 1


def label_dtype(max_value: int) -> np.dtype:
    """The smallest unsigned type holding `max_value`; label values above `MAX_LABEL_VALUE` are refused."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise InputError(f"label value {max_value} is over {MAX_LABEL_VALUE}, the largest supported label value")


def label_image(label_xyz: np.ndarray, grid: Grid) -> sitk.Image:
    """A SimpleITK image of a (x, y, z) label array on `grid`."""
    if tuple(label_xyz.shape) != tuple(grid.shape):
        raise InputError(f"label shape {label_xyz.shape} does not match the image grid {grid.shape}")
    max_value = int(label_xyz.max()) if label_xyz.size else 0
    image = sitk.GetImageFromArray(np.ascontiguousarray(label_xyz.transpose(2, 1, 0).astype(label_dtype(max_value))))
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return image


def _output_suffix(path: Path) -> str:
    for suffix in LABEL_SUFFIXES:
        if path.name.lower().endswith(suffix):
            return suffix
    raise InputError(f"{path}: unsupported output format; use one of {', '.join(LABEL_SUFFIXES)}")


def check_file(path: str | os.PathLike, what: str, error: type[Sam2MedError] = InputError) -> Path:
    """`path` is an existing file, else one `error` saying what it is instead: "is a folder; give a WHAT file"."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a folder; give a {what} file")
    if not path.exists():
        raise error(f"{path}: {what} file does not exist")
    try:
        return check_regular_file(path, f"{what} file")  # a FIFO or a device would never end, or never start
    except InputError as err:
        raise error(str(err)) from None


def check_folder(path: str | os.PathLike, what: str, error: type[Sam2MedError] = InputError) -> Path:
    """`path` is an existing folder, else one `error` saying what it is instead: "is a file; give a WHAT folder"."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{path}: is a file; give a{'n' if what[:1] in 'aeiou' else ''} {what} folder")
    if not path.is_dir():
        raise error(f"{path}: {what} folder does not exist")
    return path


def check_parent_folder(path: str | os.PathLike) -> Path:
    """The folder an output file goes into exists, else "folder X does not exist; create it first"."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist; create it first")
    return path


def check_output_path(path: str | os.PathLike, suffixes: tuple[str, ...] | None = LABEL_SUFFIXES) -> Path:
    """Check, before any work, that `path` can be written: not a folder, a supported suffix, a writable folder."""
    path = Path(path)
    kinds = f" ({', '.join(suffixes)})" if suffixes else ""
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give an output file{kinds}")
    if suffixes is not None and not path.name.lower().endswith(suffixes):
        raise InputError(f"{path}: unsupported output format; use one of {', '.join(suffixes)}")
    if suffixes == LABEL_SUFFIXES and not path.name.lower().endswith(_NIFTI_SUFFIXES):
        _simpleitk(path, "writing")  # before any work: the engine profile writes NIfTI only
    check_parent_folder(path)
    try:  # a real write: permissions, read-only mounts and full disks all show here (os.access misses some)
        probe = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InputError(f"{path.parent}: cannot write there ({err.strerror or err})") from None
    return path


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write `path` through `write(tmp)`: a hidden temporary file beside it, with the same suffix (writers that
    choose the format by suffix see the right one), renamed into place. A reader never sees a half-written
    file; a write that fails leaves nothing behind."""
    path = Path(path)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_label(label_xyz: np.ndarray, grid: Grid, path: str | os.PathLike) -> Path:
    """Write a label map on `grid` to `path` atomically: a reader never sees a half-written file."""
    path = Path(path)
    suffix = _output_suffix(path)
    check_output_path(path)
    if sitk is None and suffix in _NIFTI_SUFFIXES:
        return write_atomically(path, lambda tmp: _nifti_save(label_xyz, grid, tmp))
    _simpleitk(path, "writing")
    image = label_image(label_xyz, grid)
    compress = suffix in (".nii.gz", ".nrrd", ".mha")
    return write_atomically(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=compress))


def _nifti_save(label_xyz: np.ndarray, grid: Grid, tmp: Path) -> None:
    """A label map written by nibabel as SimpleITK writes it: sform and qform both the grid (code 1, scanner)."""
    import nibabel as nib

    if tuple(label_xyz.shape) != tuple(grid.shape):
        raise InputError(f"label shape {label_xyz.shape} does not match the image grid {grid.shape}")
    max_value = int(label_xyz.max()) if label_xyz.size else 0
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(grid.direction, dtype=float).reshape(3, 3) * np.asarray(grid.spacing, dtype=float)
    affine[:3, 3] = grid.origin
    affine[:2] *= -1  # LPS -> RAS
    image = nib.Nifti1Image(np.ascontiguousarray(label_xyz.astype(label_dtype(max_value))), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(tmp))  # gzip or not by the name's suffix, which write_atomically keeps


def write_json_atomic(data: object, path: str | os.PathLike) -> Path:
    """Write JSON to `path` atomically."""
    import json

    text = json.dumps(data, indent=2)
    return write_atomically(path, lambda tmp: tmp.write_text(text))
