"""`main.py finetune` end to end on the shared CT (train) and MR (held out) at 256 px, and its bad inputs:
one `error:` line, exit 2, no checkpoint, sidecar or stats file."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO, TEST_IMAGE_SIZE
from sam2med.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pairs(shared_data, tmp_path_factory):
    """images/{ct,mr}.nii.gz and labels/{ct,mr}.nii.gz as links to the shared files (nothing copied)."""
    d = shared_data / "totalsegmentator"
    root = tmp_path_factory.mktemp("pairs")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for name, image, label in (("ct", "example_ct_sm", "example_seg"), ("mr", "example_mr_sm", "example_seg_mr")):
        (root / "images" / f"{name}.nii.gz").symlink_to(d / f"{image}.nii.gz")
        (root / "labels" / f"{name}.nii.gz").symlink_to(d / f"{label}.nii.gz")
    return root, d / "labels.json"


def test_finetune_trains_validates_and_writes_a_loadable_checkpoint(pairs, random_checkpoint, tmp_path):
    root, names = pairs
    out, stats_path = tmp_path / "ft.pt", tmp_path / "stats.json"
    cmd = [sys.executable, str(REPO / "main.py"), "finetune", "--images", str(root / "images"), "--labels", str(root / "labels"),
           "--labels-map", f"{names}:total", "--label", "spleen", "--checkpoint", str(random_checkpoint), "-o", str(out),
           "--steps", "3", "--image-size", str(TEST_IMAGE_SIZE), "--val-fraction", "0.5", "--seed", "3", "--device", "cpu",
           "--json", str(stats_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    stats = json.loads(stats_path.read_text())
    for key in ("steps", "loss_first", "loss_last", "val_dice_start", "val_dice_end", "copy_dice", "seconds_per_step"):
        assert key in stats, key
    assert stats["steps"] == 3 and len(stats["loss_per_step"]) == 3 and stats["mode"] == "heads" and stats["clip_slices"] == 4
    assert all(math.isfinite(v) and v > 0 for v in stats["loss_per_step"])
    assert stats["loss_first"] == stats["loss_per_step"][0] and stats["loss_last"] == stats["loss_per_step"][-1]  # window 1 at 3 steps
    assert stats["train_ids"] == ["ct"] and stats["val_ids"] == ["mr"] and stats["labels"] == [1]
    for key in ("val_dice_start", "val_dice_end", "copy_dice"):
        assert 0.0 <= stats[key] <= 1.0, key
    assert stats["copy_dice"] > 0.3  # copying the spleen's largest slice overlaps the spleen on its neighbours
    assert stats["seconds_per_step"] > 0
    sidecar = json.loads(out.with_name("ft.pt.json").read_text())
    assert sidecar["base_model"] == "tiny" and sidecar["image_size"] == TEST_IMAGE_SIZE
    assert sidecar["base_sha256"] == hashlib.sha256(random_checkpoint.read_bytes()).hexdigest()
    assert sidecar["loss_per_step"] == stats["loss_per_step"] and sidecar["val_dice_end"] == stats["val_dice_end"]
    assert f"loss {stats['loss_first']} -> {stats['loss_last']}" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ft.pt", "ft.pt.json", "stats.json"]
    from sam2med.engine import Propagator

    engine = Propagator(checkpoint=out, device="cpu")  # model and input size from the sidecar (the registry's reading)
    assert engine.model_name == "tiny" and engine.image_size == TEST_IMAGE_SIZE
    # trained from RANDOM weights: the checkpoint, its sidecar and every output of it say so
    import torch

    from sam2med.provenance import RANDOM_WEIGHTS_KEY, model_provenance

    assert torch.load(out, weights_only=True)[RANDOM_WEIGHTS_KEY] is True and sidecar["random_weights"] is True
    assert model_provenance(engine)["random_weights"] is True
    seed = tmp_path / "seed.nii.gz"
    label = sitk.ReadImage(str(root / "labels" / "ct.nii.gz"))
    spleen = sitk.GetArrayFromImage(label) == 1  # (z, y, x)
    z = int(np.argmax(spleen.sum(axis=(1, 2))))
    seed_array = np.zeros(spleen.shape, np.uint8)
    seed_array[z] = spleen[z]
    seed_image = sitk.GetImageFromArray(seed_array)
    seed_image.CopyInformation(label)
    sitk.WriteImage(seed_image, str(seed))
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "propagate", str(root / "images" / "ct.nii.gz"), "--seed", str(seed),
                           "--range", str(z), str(z + 1), "--checkpoint", str(out), "--device", "cpu", "-o", str(tmp_path / "p.nii.gz"),
                           "--scores", str(tmp_path / "p.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "note: RANDOM weights" in done.stdout
    assert json.loads((tmp_path / "p.json").read_text())["provenance"]["random_weights"] is True


def _synthetic_pair(folder, single_slice: bool):
    """A 16 x 16 x 6 image with a label 4 square on one slice (or on two)."""
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    image = np.zeros((6, 16, 16), dtype=np.int16)  # (z, y, x) as SimpleITK arrays are
    label = np.zeros_like(image, dtype=np.uint8)
    label[2, 4:9, 4:9] = 4
    if not single_slice:
        label[3, 4:9, 4:9] = 4
    sitk.WriteImage(sitk.GetImageFromArray(image), str(folder / "images" / "case.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(label), str(folder / "labels" / "case.nii.gz"))


@pytest.mark.parametrize("problem", ["no pairs", "single-slice label", "absent label", "unknown name", "zero steps"])
def test_bad_input_is_one_error_line_exit_2_and_no_file(problem, random_checkpoint, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    _synthetic_pair(data, single_slice=problem == "single-slice label")
    if problem == "no pairs":
        (data / "labels" / "case.nii.gz").rename(data / "labels" / "other.nii.gz")
    extra = {"absent label": ["--label", "7"], "unknown name": ["--label", "liver"], "zero steps": ["--steps", "0"]}.get(problem, [])
    out = tmp_path / "out"
    out.mkdir()
    argv = ["finetune", "--images", str(data / "images"), "--labels", str(data / "labels"), "--checkpoint", str(random_checkpoint),
            "-o", str(out / "ft.pt"), "--json", str(out / "stats.json"), "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu", *extra]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    expected = {"no pairs": "has a label of the same name", "single-slice label": "2 or more slices", "absent label": "--label 7",
                "unknown name": "--label 'liver'", "zero steps": "--steps"}[problem]
    assert expected in err[0]
    assert list(out.iterdir()) == []
