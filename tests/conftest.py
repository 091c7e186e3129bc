"""Shared fixtures: the real data in ../shared/data and a random-weight SAM2.1-tiny checkpoint.

The checkpoint is built with sam2's own hydra config and builder and loaded back through the real
checkpoint path. Random weights prove plumbing, geometry and speed, never segmentation quality.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SAM2MED_SHARED_DATA", REPO.parent / "shared" / "data"))
# A reduced model input keeps SAM2 affordable on 2 CPU cores; the architecture and weights are unchanged.
TEST_IMAGE_SIZE = 256


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "totalsegmentator").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    from sam2med.cli.download import save_random_checkpoint

    return save_random_checkpoint("tiny", tmp_path_factory.mktemp("checkpoints") / "sam2.1_hiera_tiny.pt")


@pytest.fixture(scope="session")
def medsam2_checkpoint(tmp_path_factory) -> Path:
    """MedSAM2's architecture (SAM2.1-tiny at 512 px) with RANDOM weights, under MedSAM2's own file name."""
    from sam2med.cli.download import save_random_checkpoint

    return save_random_checkpoint("medsam2", tmp_path_factory.mktemp("medsam2") / "MedSAM2_latest.pt")


@pytest.fixture(scope="session")
def propagator(random_checkpoint):
    from sam2med.engine import Propagator

    return Propagator(checkpoint=random_checkpoint, device="cpu", image_size=TEST_IMAGE_SIZE)


CT_MR_CASES = {"ct": ("example_ct_sm.nii.gz", "example_seg.nii.gz"), "mr": ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz")}


@pytest.fixture(scope="session")
def ct_mr_folders(shared_data, tmp_path_factory) -> Path:
    """images/ and labels/ pairing the TotalSegmentator CT and MR by name (ct, mr), as `evaluate` expects them."""
    root = tmp_path_factory.mktemp("ct_mr")
    source = shared_data / "totalsegmentator"
    for kind in ("images", "labels"):
        (root / kind).mkdir()
    for name, (image, label) in CT_MR_CASES.items():
        (root / "images" / f"{name}.nii.gz").symlink_to(source / image)
        (root / "labels" / f"{name}.nii.gz").symlink_to(source / label)
    return root
