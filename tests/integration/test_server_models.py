"""The real server with `--conf model medsam2` (RANDOM weights of MedSAM2's architecture under its file name, from
the cache): /info/ and the infer response name the model and its input size. Plumbing only, no quality."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from monailabel.client import MONAILabelClient

from live_server import running_server

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from eval_synthetic import moving_disc_case, write_image  # noqa: E402

from sam2med.io import save_label  # noqa: E402

SHAPE = (40, 36, 4)


def test_server_runs_medsam2_by_name_and_says_so(medsam2_checkpoint, tmp_path):
    cache, studies = tmp_path / "cache", tmp_path / "studies"
    cache.mkdir()
    studies.mkdir()
    shutil.copy(medsam2_checkpoint, cache / "MedSAM2_latest.pt")
    volume, label = moving_disc_case(shape=SHAPE, slices=(1, 2))
    write_image(volume, studies / "disc.nii.gz")
    seed = np.zeros(SHAPE, np.uint8)
    seed[..., 1] = label[..., 1] == 1
    save_label(seed, volume.grid, tmp_path / "seed.nii.gz")
    args = ["--studies", str(studies), "--conf", "model", "medsam2", "--device", "cpu", "--image-size", "256",
            "--labels", '{"disc": 1}', "--cache-gb", "1"]
    with running_server(args, tmp_path / "server.log", {"SAM2MED_CHECKPOINT_DIR": str(cache)}) as url:
        client = MONAILabelClient(url, tmpdir=str(tmp_path))
        info = client.info()
        assert {k: info["sam2med"][k] for k in ("model", "model_title", "image_size")} == {
            "model": "medsam2", "model_title": "MedSAM2 medsam2", "image_size": 256}
        assert info["models"]["sam2_propagate"]["config"]["sam2_model"] == ["medsam2"]
        out, params = client.infer("sam2_propagate", "disc", {"slice_range": [0, 2]}, label_in=str(tmp_path / "seed.nii.gz"))
    prov = params["provenance"]
    assert (prov["model"], prov["model_name"], prov["input_size"], prov["preprocessing"]) == ("MedSAM2 medsam2", "medsam2", 256, "medsam2")
    assert prov["checkpoint"]["file"] == "MedSAM2_latest.pt" and prov["random_weights"] is True
    result = sitk.GetArrayFromImage(sitk.ReadImage(out)).transpose(2, 1, 0)
    assert np.array_equal(result[..., 1] == 1, seed[..., 1] == 1)
    assert str(tmp_path) not in str(params)
