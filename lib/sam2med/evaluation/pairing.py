"""Pairing images with label maps by name.

A case is named by its file name without the extension; an image named `X_0000` (nnU-Net's first channel)
pairs with the label `X`. Images may be NIfTI, NRRD, MetaImage files or DICOM series folders (a folder's
name is the case name); labels are files. Hidden entries (starting with '.') are ignored. The 2D protocol
(one-prompt) pairs 2D images (PNG, JPEG, NIfTI, .dcm files) with 2D labels (PNG, NIfTI) by the same rule.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from sam2med.errors import InputError
from sam2med.images2d import IMAGE2D_SUFFIXES, LABEL2D_SUFFIXES
from sam2med.io import IMAGE_SUFFIXES, LABEL_SUFFIXES, check_folder

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
    check_folder(folder, what)
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise InputError(f"{folder}: {what} folder is empty")
    return entries


def image_cases(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES, folders: bool = True) -> dict[str, Path]:
    """{case name: image path} of the image files (and DICOM series folders, with `folders`) in `folder`."""
    found: dict[str, Path] = {}
    for path in _entries(folder, "image"):
        if path.is_dir():
            stem = path.name if folders else None
        else:
            stem = _strip_suffix(path.name, suffixes)
        if stem is None:
            logger.debug("skipping %s: not an image file", path)
            continue
        name = _CHANNEL.sub("", stem)
        if name in found:
            logger.warning("%s: a second image for case %r (keeping %s)", path, name, found[name].name)
            continue
        found[name] = path
    return found


def label_cases(folder: Path, suffixes: tuple[str, ...] = LABEL_SUFFIXES) -> dict[str, Path]:
    """{case name: label path} of the label files in `folder`."""
    found: dict[str, Path] = {}
    for path in _entries(folder, "label"):
        stem = _strip_suffix(path.name, suffixes) if path.is_file() else None
        if stem is None:
            logger.debug("skipping %s: not a label file", path)
            continue
        found.setdefault(stem, path)
    return found


def pair_cases(images: Path, labels: Path, two_d: bool = False) -> list[Case]:
    """Cases in name order; images without a label are kept (with `label=None`) so they are reported as failed.
    `two_d`: 2D image and label files (the one-prompt protocol) instead of volumes and DICOM series folders."""
    image_suffixes, label_suffixes = (IMAGE2D_SUFFIXES, LABEL2D_SUFFIXES) if two_d else (IMAGE_SUFFIXES, LABEL_SUFFIXES)
    if Path(images).is_dir() and Path(labels).is_dir() and Path(images).resolve() == Path(labels).resolve():
        raise InputError(f"--images and --labels are the same folder ({images}): every file would be paired with itself "
                         "and scored against itself; put the images and the label maps in two folders, named alike "
                         "(e.g. images/case1.nii.gz and labels/case1.nii.gz)")
    image_paths = image_cases(Path(images), image_suffixes, folders=not two_d)
    label_paths = label_cases(Path(labels), label_suffixes)
    if not image_paths:
        raise InputError(f"{images}: no image files ({', '.join(image_suffixes)}){'' if two_d else ' or DICOM folders'} found")
    if not label_paths:
        raise InputError(f"{labels}: no label files ({', '.join(label_suffixes)}) found")
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
