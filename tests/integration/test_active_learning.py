"""The uncertainty half of the active-learning loop on the real server, through MONAI Label's Python client:
propagations record SAM2's per-slice scores with the model version, `uncertain` picks the less confident
image and returns its review slices, a submitted label takes an image out, and nothing scored -> `ordered`."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monailabel.client import MONAILabelClient

from live_server import running_server, small_server_args
from test_server import _seed_file
from sam2med.checkpoints import sidecar_path
from sam2med.provenance import RANDOM_WEIGHTS_KEY
from sam2med.monailabel.uncertainty import image_uncertainty

pytestmark = pytest.mark.integration

RANGES = {"ct": (14, 18), "mr": (10, 14)}
SEED_SLICES = {"ct": 16, "mr": 12}


@pytest.fixture(scope="module")
def server(shared_data, random_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("active")
    studies = root / "studies"
    studies.mkdir()
    ts = shared_data / "totalsegmentator"
    shutil.copy(ts / "example_ct_sm.nii.gz", studies / "ct.nii.gz")
    shutil.copy(ts / "example_mr_sm.nii.gz", studies / "mr.nii.gz")
    seeds = {"ct": _seed_file(ts / "example_seg.nii.gz", [5], SEED_SLICES["ct"], root / "ct_seed.nii.gz"),
             "mr": _seed_file(ts / "example_seg_mr.nii.gz", [5], SEED_SLICES["mr"], root / "mr_seed.nii.gz")}
    with running_server(small_server_args(studies, random_checkpoint, '{"liver": 5}'), root / "server.log", {}) as url:
        yield {"url": url, "seeds": seeds, "checkpoint": random_checkpoint, "log": root / "server.log", "studies": studies}


def test_uncertain_picks_the_less_confident_propagation_and_its_review_slices(server, tmp_path):
    client = MONAILabelClient(server["url"], tmpdir=str(tmp_path))
    info = client.info()
    version = "tiny:" + hashlib.sha256(server["checkpoint"].read_bytes()).hexdigest()[:12]
    assert "uncertain" in info["strategies"] and "sam2_confidence" in info["scoring"]

    nothing_scored = client.next_sample("uncertain", {})
    assert nothing_scored["id"] == "ct" and nothing_scored["reason"].startswith("no unreviewed image has SAM2 scores of the current model yet")
    assert nothing_scored["uncertainty"] is None and nothing_scored["review_slices"] == []

    responses = {}
    for image_id in ("ct", "mr"):
        _, params = client.infer("sam2_propagate", image_id, {"slice_range": list(RANGES[image_id])},
                                 label_in=str(server["seeds"][image_id]))
        assert params["model_version"] == version
        review = params["review_slices"]
        assert review and len(review) <= 5
        start, end = RANGES[image_id]
        assert all(start <= r["slice"] <= end and r["slice"] != SEED_SLICES[image_id] and r["label"] == 5 for r in review)
        assert [r["priority"] for r in review] == sorted((r["priority"] for r in review), reverse=True)
        responses[image_id] = params
    assert client.info()["sam2med"]["model_version"] == version

    expected = {i: image_uncertainty({k: v["slices"] for k, v in p["labels"].items()}) for i, p in responses.items()}
    assert expected["ct"] != expected["mr"]
    least, other = sorted(expected, key=lambda i: -expected[i])
    picked = client.next_sample("uncertain", {})
    assert picked["id"] == least and picked["uncertainty"] == pytest.approx(expected[least], abs=1e-4)
    assert picked["review_slices"] == responses[least]["review_slices"] and picked["model_version"] == version
    assert "least confident of 2" in picked["reason"]

    client.save_label(least, str(server["seeds"][least]), tag="final")  # submitted: reviewed, skipped from now on
    assert client.next_sample("uncertain", {})["id"] == other
    client.save_label(other, str(server["seeds"][other]), tag="final")
    assert client.next_sample("uncertain", {}) == {}  # every image reviewed: ordered has nothing either


def _full_label(label_path, value: int, out):
    label = sitk.ReadImage(str(label_path))
    array = sitk.GetArrayFromImage(label)
    kept = sitk.GetImageFromArray(np.where(array == value, value, 0).astype(np.uint8))
    kept.CopyInformation(label)
    sitk.WriteImage(kept, str(out))
    return out


def test_train_on_submitted_labels_publishes_a_model_the_next_infer_uses(server, shared_data, tmp_path):
    import time

    client = MONAILabelClient(server["url"], tmpdir=str(tmp_path))
    info = client.info()
    before = info["sam2med"]["model_version"]
    assert "sam2_finetune" in info["trainers"]
    liver = _full_label(shared_data / "totalsegmentator" / "example_seg.nii.gz", 5, tmp_path / "liver.nii.gz")
    client.save_label("ct", str(liver), tag="final")  # the whole liver: a label on many slices to train on

    client.train_start("sam2_finetune", {"max_epochs": 2, "val_fraction": 0})
    deadline = time.time() + 300
    while client.train_status(check_if_running=True) is True or _running(client):
        assert time.time() < deadline, "training did not finish"
        time.sleep(0.5)
    assert client.train_status()["status"] == "DONE", client.train_status()

    stats = client.info()["train_stats"]["sam2_finetune"]
    assert stats["epoch"] == 2 and stats["total_epochs"] == 2 and "total_time" in stats
    assert "best_metric" not in stats, "no validation image: no Dice, never minus the loss"
    assert stats["train_ids"] == ["ct", "mr"] and stats["val_ids"] == []
    models = server["studies"] / ".sam2med" / "models"
    published = json.loads((models / "current.json").read_text())
    checkpoint = models / published["checkpoint"]
    new_version = "tiny:" + hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    assert published["version"] == new_version == stats["model_version"] != before
    assert not [p for p in models.iterdir() if ".partial" in p.name]

    _, params = client.infer("sam2_propagate", "mr", {"slice_range": list(RANGES["mr"])}, label_in=str(server["seeds"]["mr"]))
    assert params["model_version"] == new_version  # the next request, no restart
    # trained from RANDOM weights: the published checkpoint and its sidecar keep the mark, and the answer says so
    assert torch.load(checkpoint, weights_only=True)[RANDOM_WEIGHTS_KEY] is True
    assert json.loads(sidecar_path(checkpoint).read_text())["random_weights"] is True
    assert params["provenance"]["random_weights"] is True and params["provenance"]["checkpoint"]["file"] == checkpoint.name
    start, end = RANGES["mr"]  # the first test propagated these slices with the old weights: none is reused
    assert params["cache"]["request_hit_slices"] == 0 and params["cache"]["request_miss_slices"] == end - start + 1
    assert client.info()["sam2med"]["model_version"] == new_version


def _running(client) -> bool:
    status = client.train_status()
    return isinstance(status, dict) and status.get("status") in ("SUBMITTED", "RUNNING")  # queued counts as running
