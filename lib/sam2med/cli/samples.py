"""`main.py samples`: build the bundled sample datasets from packages this project installs."""

from __future__ import annotations

import argparse

HELP = "build sample-datasets/ (MNI152 template from nilearn) as a MONAI Label studies folder"
DESCRIPTION = """\
Build a MONAI Label studies folder from the MNI152 T1 template that the nilearn package ships (no
download): mni152_t1_2mm.nii.gz with labels/final/ (1 brain, 2 white matter, thresholded from the
template's probability maps), an unlabeled 1 mm image for the labeling loop, a white-matter seed on one
axial slice under seeds/, samples.json (seed slice and range) and NOTICE.txt (the template's copyright).

The folder goes where you are: sample-datasets/ of the current folder (the checkout you run main.py in),
which is where 'serve' looks by default.
"""

SAMPLES_FOLDER = "sample-datasets"  # relative: in the current folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=SAMPLES_FOLDER, help="studies folder to write (default: sample-datasets/ of the current folder)")


def run(args: argparse.Namespace) -> int:
    from sam2med.samples import build_samples

    out = build_samples(args.out)
    print(f"sample datasets ready in {out.absolute()}")
    return 0
