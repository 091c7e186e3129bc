"""Pairing images with label maps by name.

A case is named by its file name without the extension; an image named `X_0000` (nnU-Net's first channel)
pairs with the label `X`. Images may be NIfTI, NRRD, MetaImage files or DICOM series folders (a folder's
name is the case name); labels are files. Hidden entries (starting with '.') are ignored.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from sam2med.errors import InputError
from sam2med.io import IMAGE_SUFFIXES, LABEL_SUFFIXES

logger = logging.getLogger(__name__)

_CHANNEL = re.compile(r"_0000$")


@dataclass(frozen=True)
class Case:
    """One image and its label map (None when no label of that name was found)."""

    name: str
    image: Path
    label: Path | None


def _strip_suffix(name: str, suffixes: tuple[str, ...]) -> str | None:
    lower = name.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):  # .nii.gz before .nii / .gz
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _entries(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: {what} folder does not exist")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise InputError(f"{folder}: {what} folder is empty")
    return entries


def image_cases(folder: Path) -> dict[str, Path]:
    """{case name: image path} of the image files and DICOM series folders in `folder`."""
    found: dict[str, Path] = {}
    for path in _entries(folder, "image"):
        stem = path.name if path.is_dir() else _strip_suffix(path.name, IMAGE_SUFFIXES)
        if stem is None:
            logger.debug("skipping %s: not an image file", path)
            continue
        name = _CHANNEL.sub("", stem)
        if name in found:
            logger.warning("%s: a second image for case %r (keeping %s)", path, name, found[name].name)
            continue
        found[name] = path
    return found


def label_cases(folder: Path) -> dict[str, Path]:
    """{case name: label path} of the label files in `folder`."""
    found: dict[str, Path] = {}
    for path in _entries(folder, "label"):
        stem = _strip_suffix(path.name, LABEL_SUFFIXES) if path.is_file() else None
        if stem is None:
            logger.debug("skipping %s: not a label file", path)
            continue
        found.setdefault(stem, path)
    return found


def pair_cases(images: Path, labels: Path) -> list[Case]:
    """Cases in name order; images without a label are kept (with `label=None`) so they are reported as failed."""
    if Path(images).is_dir() and Path(labels).is_dir() and Path(images).resolve() == Path(labels).resolve():
        raise InputError(f"--images and --labels are the same folder ({images}): every file would be paired with itself "
                         "and scored against itself; put the images and the label maps in two folders, named alike "
                         "(e.g. images/case1.nii.gz and labels/case1.nii.gz)")
    image_paths, label_paths = image_cases(Path(images)), label_cases(Path(labels))
    if not image_paths:
        raise InputError(f"{images}: no image files ({', '.join(IMAGE_SUFFIXES)}) or DICOM folders found")
    if not label_paths:
        raise InputError(f"{labels}: no label files ({', '.join(LABEL_SUFFIXES)}) found")
    cases = [Case(name, path, label_paths.get(name)) for name, path in sorted(image_paths.items())]
    selves = [c.name for c in cases if c.label is not None and c.image.resolve() == c.label.resolve()]
    if selves:
        raise InputError(f"case(s) {', '.join(selves[:5])}: the image and the label map are the same file; "
                         "give the reference label maps, not the images, to --labels")
    if not any(case.label for case in cases):
        raise InputError(f"no image in {images} has a label of the same name in {labels} "
                         f"(e.g. image {next(iter(image_paths))!r}, label {next(iter(label_paths))!r}); "
                         "name them alike, or image X_0000.nii.gz with label X.nii.gz")
    for name in sorted(set(label_paths) - set(image_paths)):
        logger.warning("%s: no image named %r; label ignored", label_paths[name], name)
    return cases
