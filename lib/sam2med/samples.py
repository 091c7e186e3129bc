"""Build `sample-datasets/`: a MONAI Label studies folder from the MNI152 template that nilearn ships."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from sam2med.io import write_atomically

logger = logging.getLogger(__name__)

NOTICE = """\
MNI152 ICBM 2009a nonlinear symmetric template, as packaged by nilearn.
Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute,
McGill University. Permission to use, copy, modify, and distribute this software and its documentation
for any purpose and without fee is hereby granted, provided that the above copyright notice appear in
all copies. The authors and McGill University make no representations about the suitability of this
software for any purpose. It is provided "as is" without express or implied warranty.

Derived here by sam2med (python main.py samples): label 1 = brain (brain mask outside white matter),
label 2 = white matter (white-matter probability >= 0.5). These are template-derived masks, not expert
annotations.
"""

LABEL_NAMES = {"brain": 1, "white_matter": 2}
LABELED_IMAGE = "mni152_t1_2mm"
UNLABELED_IMAGES = ("mni152_t1_1mm",)
SEED_NAME = "mni152_t1_2mm_wm_seed.nii.gz"


def _label_map(resolution: int) -> tuple[nib.Nifti1Image, np.ndarray]:
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=resolution)
    brain = datasets.load_mni152_brain_mask(resolution=resolution).get_fdata() > 0.5
    white = datasets.load_mni152_wm_template(resolution=resolution).get_fdata() >= 0.5
    label = np.zeros(template.shape, dtype=np.uint8)
    label[brain] = LABEL_NAMES["brain"]
    label[white] = LABEL_NAMES["white_matter"]
    return template, label


def _save(array: np.ndarray, like: nib.Nifti1Image, path: Path, dtype) -> None:
    image = nib.Nifti1Image(array.astype(dtype), like.affine)
    image.set_qform(like.affine, code=1)
    image.set_sform(like.affine, code=1)
    write_atomically(path, lambda tmp: nib.save(image, tmp))


def seed_slice_index(label: np.ndarray, value: int) -> int:
    """The axial slice with the largest area of `value`."""
    return int(np.argmax((label == value).sum(axis=(0, 1))))


def build_samples(out_dir: str | Path) -> Path:
    """Write the studies folder: images, labels/final/ for the labeled one, a seed, and the notice."""
    from nilearn import datasets

    out = Path(out_dir)
    (out / "labels" / "final").mkdir(parents=True, exist_ok=True)
    (out / "seeds").mkdir(parents=True, exist_ok=True)

    template, label = _label_map(resolution=2)
    _save(template.get_fdata(), template, out / f"{LABELED_IMAGE}.nii.gz", np.int16)
    _save(label, template, out / "labels" / "final" / f"{LABELED_IMAGE}.nii.gz", np.uint8)

    seed = np.zeros_like(label)
    z = seed_slice_index(label, LABEL_NAMES["white_matter"])
    seed[..., z] = np.where(label[..., z] == LABEL_NAMES["white_matter"], LABEL_NAMES["white_matter"], 0)
    _save(seed, template, out / "seeds" / SEED_NAME, np.uint8)
    extent = np.flatnonzero((label == LABEL_NAMES["white_matter"]).any(axis=(0, 1)))

    one_mm = datasets.load_mni152_template(resolution=1)
    _save(one_mm.get_fdata(), one_mm, out / f"{UNLABELED_IMAGES[0]}.nii.gz", np.int16)

    (out / "NOTICE.txt").write_text(NOTICE)
    (out / "samples.json").write_text(json.dumps({
        "labels": LABEL_NAMES,
        "seed": {"image": f"{LABELED_IMAGE}.nii.gz", "file": f"seeds/{SEED_NAME}", "label": LABEL_NAMES["white_matter"],
                 "slice": z, "axis": "axial", "range": [int(extent.min()), int(extent.max())]},
    }, indent=2))
    logger.info("sample datasets written to %s (seed on axial slice %d, white matter on slices %d..%d)", out, z, extent.min(), extent.max())
    return out
