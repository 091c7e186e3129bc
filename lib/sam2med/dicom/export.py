"""Clinical export of a label map on a DICOM series: a DICOM-SEG or an RTSTRUCT, checked before anything is written.

`export_label` reads the label (a file or an array on a grid) and the series' headers, checks that the series
has positions, that the label lies on the series' grid (exactly, or the same voxels stored with other axis order
or flips, e.g. an LAS NIfTI of an LPS series) and is not empty, and only then writes the file atomically. Blank
identifiers of an anonymised series are filled in memory exactly as `sam2med.dicom.upload` fills them when it
uploads the series (deterministically from the files), so an export references the series as the server holds it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from sam2med.dicom.rtstruct import save_rtstruct, slice_instances, write_rtstruct
from sam2med.dicom.seg import save_seg, write_seg
from sam2med.dicom.segment_map import coded_segments
from sam2med.dicom.segments import Algorithm, Segment
from sam2med.dicom.series import read_series_files, repair_series
from sam2med.errors import InputError
from sam2med.geometry import Grid, reorient_to
from sam2med.io import Volume, check_folder, check_output_path, load_label, read_grid

logger = logging.getLogger(__name__)

FORMATS = ("seg", "rtstruct")


@dataclass(frozen=True)
class Export:
    """What `export_label` wrote: the file, its dataset, and the label values it holds."""

    path: Path
    dataset: Dataset
    format: str
    values: tuple[int, ...]


def check_format(format: str) -> str:
    text = str(format).strip().lower()
    if text not in FORMATS:
        raise InputError(f"format {format!r}: use {' or '.join(FORMATS)}")
    return text


def reference_series(folder: str | os.PathLike) -> tuple[list[Dataset], Grid]:
    """The series' headers (blank identifiers filled as an upload fills them) and its grid; a series whose files
    lack positions is refused before its grid is read."""
    folder = check_folder(folder, "reference DICOM series")
    files = read_series_files(folder, pixels=False)
    datasets = [item.dataset for item in files]
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient"):
        missing = sum(keyword not in ds for ds in datasets)
        if missing:
            raise InputError(f"{folder}: {missing} of {len(datasets)} DICOM files have no {keyword}; the series has no "
                             "geometry in patient space to export onto")
    repair_series(files)  # in memory, as an upload fills them (it logs what it filled)
    grid = read_grid(folder)
    slice_instances(datasets, grid)  # one file per slice of the grid, same orientation
    return datasets, grid


def label_on_series_grid(label: np.ndarray, label_grid: Grid, grid: Grid, source: str = "the label") -> np.ndarray:
    """`label` on the series' grid: as is, or exactly re-indexed (axis order, flips); any other grid is refused."""
    on_grid = reorient_to(label, label_grid, grid)
    if on_grid is None:
        raise InputError(f"{source} is not on the reference DICOM series' grid ({label_grid.describe_difference(grid)}); "
                         "export a label made on that series (propagate with the series folder as IMAGE)")
    return on_grid


def export_label(
    label: str | os.PathLike | Volume,
    reference: str | os.PathLike,
    format: str,
    out: str | os.PathLike,
    names: Mapping[int, str] | None = None,
    segments: Mapping[int, Segment] | None = None,
    algorithm: Algorithm | None = None,
    series_description: str | None = None,
) -> Export:
    """Write `label` (a label file or a `Volume`) on the DICOM series in folder `reference` as `format` ("seg" or
    "rtstruct") to `out`. Segments: those `segments` describes, else named by `names` with the SNOMED CT codes of
    the TotalSegmentator structure of that name when there is one, else "label N". Bad input is one `InputError`
    and no file."""
    kind = check_format(format)
    out = check_output_path(out, suffixes=None)
    volume = label if isinstance(label, Volume) else load_label(label)
    datasets, grid = reference_series(reference)
    array = label_on_series_grid(volume.array, volume.grid, grid, str(volume.source or "the label"))
    values = tuple(int(v) for v in np.unique(array) if v != 0)
    if not values:
        raise InputError(f"{volume.source or 'the label'}: is empty (no labelled voxel); there is nothing to export")
    described = {**coded_segments({v: n for v, n in (names or {}).items() if int(v) in values}), **(segments or {})}
    options = {"names": names, "segments": described, "algorithm": algorithm}
    if series_description:
        options["series_description"] = series_description
    if kind == "seg":
        dataset = write_seg(array, grid, datasets, **options)
        path = save_seg(dataset, out)
    else:
        dataset = write_rtstruct(array, grid, datasets, **options)
        path = save_rtstruct(dataset, out)
    return Export(path, dataset, kind, values)
