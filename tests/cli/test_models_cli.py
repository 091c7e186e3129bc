"""Models by name (issue 15): `main.py models`, `--model NAME` from the cache, a fine-tuned checkpoint by its sidecar.

The MedSAM2 checkpoints here are RANDOM weights of its architecture under its file names: plumbing only.
"""

import csv
import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import TEST_IMAGE_SIZE
from sam2med.checkpoints import CACHE_ENV, MODELS, sidecar_path
from sam2med.cli import main
from sam2med.io import save_label

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from eval_synthetic import moving_disc_case, write_case  # noqa: E402

SHAPE = (40, 36, 4)


@pytest.fixture()
def cache_with_medsam2(tmp_path, monkeypatch, medsam2_checkpoint):
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(medsam2_checkpoint, cache / "MedSAM2_latest.pt")
    monkeypatch.setenv(CACHE_ENV, str(cache))
    return cache


@pytest.fixture()
def disc_case(tmp_path):
    """A CT-like volume with a moving disc, and a seed of it on axial slice 1."""
    volume, label = moving_disc_case(shape=SHAPE, slices=(1, 2))
    write_case(tmp_path / "images", tmp_path / "labels", "disc", volume, label, image_name="disc_0000")
    seed = np.zeros(SHAPE, np.uint8)
    seed[..., 1] = label[..., 1] == 1
    save_label(seed, volume.grid, tmp_path / "seed.nii.gz")
    return tmp_path / "images" / "disc_0000.nii.gz", tmp_path / "seed.nii.gz", seed


def test_models_lists_every_model_and_what_is_cached(cache_with_medsam2, capsys):
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert list(rows) == list(MODELS)
    assert rows["medsam2"]["cached"] == str(cache_with_medsam2 / "MedSAM2_latest.pt")
    assert [name for name, row in rows.items() if row["cached"]] == ["medsam2"]
    assert rows["medsam2-ct-lesion"]["input_size"] == 512 and rows["large"]["input_size"] == 1024
    assert rows["medsam2-us-heart"]["url"] == "https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_US_Heart.pt"
    assert "Apache-2.0" in rows["medsam2"]["licence"] and "2504.03600" in rows["medsam2"]["citation"]
    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    for name in MODELS:
        (line,) = [t for t in table if t.split()[:1] == [name]]
        assert line.split()[2:4] == [str(MODELS[name].input_size), "yes" if name == "medsam2" else "no"]


def _provenance(scores: Path) -> dict:
    return json.loads(scores.read_text())["provenance"]


def test_propagate_selects_medsam2_by_name_from_the_cache(cache_with_medsam2, disc_case, tmp_path):
    image, seed, seed_array = disc_case
    out, scores = tmp_path / "out.nii.gz", tmp_path / "scores.json"
    assert main(["propagate", str(image), "--seed", str(seed), "--range", "0", "2", "--model", "medsam2", "--device", "cpu",
                 "--image-size", str(TEST_IMAGE_SIZE), "-o", str(out), "--scores", str(scores)]) == 0
    prov = _provenance(scores)
    assert (prov["model"], prov["model_name"], prov["input_size"], prov["preprocessing"]) == (
        "MedSAM2 medsam2", "medsam2", TEST_IMAGE_SIZE, "medsam2")
    assert prov["checkpoint"]["file"] == "MedSAM2_latest.pt" and prov["random_weights"] is True
    assert prov["window"].endswith(":8bit")
    assert np.array_equal(np.asarray(nib.load(str(out)).dataobj)[..., 1] == 1, seed_array[..., 1] == 1)


def test_fine_tuned_checkpoint_needs_no_other_flag(medsam2_checkpoint, disc_case, tmp_path, capsys):
    image, seed, _ = disc_case
    ft = Path(shutil.copy(medsam2_checkpoint, tmp_path / "my_ft.pt"))
    sidecar_path(ft).write_text(json.dumps({"base_model": "medsam2", "image_size": TEST_IMAGE_SIZE, "steps": 10}))
    out, scores = tmp_path / "out.nii.gz", tmp_path / "scores.json"
    assert main(["propagate", str(image), "--seed", str(seed), "--range", "1", "2", "--checkpoint", str(ft),
                 "--device", "cpu", "-o", str(out), "--scores", str(scores)]) == 0
    prov = _provenance(scores)
    assert (prov["model_name"], prov["input_size"], prov["checkpoint"]["file"]) == ("medsam2", TEST_IMAGE_SIZE, "my_ft.pt")
    capsys.readouterr()
    bad = tmp_path / "bad.nii.gz"
    assert main(["propagate", str(image), "--seed", str(seed), "--range", "1", "2", "--checkpoint", str(ft),
                 "--model", "tiny", "--device", "cpu", "-o", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: checkpoint my_ft.pt is a 'medsam2' model (its sidecar my_ft.pt.json names 'medsam2'), "
                   "not 'tiny': drop --model or give the matching name"]
    assert not bad.exists()


def test_evaluate_selects_medsam2_by_name_and_says_so(cache_with_medsam2, disc_case, tmp_path):
    images = disc_case[0].parent
    out = tmp_path / "out"
    assert main(["evaluate", "--images", str(images), "--labels", str(tmp_path / "labels"), "--propagator", "sam2",
                 "--model", "medsam2", "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE), "--label", "1",
                 "--previews", "0", "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(open(out / "results.csv")))
    assert row["status"] == "ok" and (row["range_start"], row["range_end"]) == ("1", "2")
    model = json.loads((out / "summary.json").read_text())["config"]["model"]
    assert (model["model_name"], model["input_size"], model["checkpoint"]["file"]) == ("medsam2", TEST_IMAGE_SIZE, "MedSAM2_latest.pt")
    assert f"Model: MedSAM2 medsam2 at {TEST_IMAGE_SIZE} px, checkpoint MedSAM2_latest.pt" in (out / "summary.md").read_text()
