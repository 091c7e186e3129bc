"""The active-learning loop on the real server (MONAI Label's client and raw HTTP): one careless training request
never breaks it. Bad train options are 422s before anything starts, a second training is a 429, a stop during
the checkpoint write leaves no file, a published model re-scores what `uncertain` ranks, rollback restores the
previous model, and a `kill -9` of the server leaves no training behind (and the next server says what happened)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
import SimpleITK as sitk
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from live_server import REPO, free_port, running_server
from test_server import _seed_file
from sam2med.monailabel.uncertainty import image_uncertainty

pytestmark = pytest.mark.integration

RANGES = {"ctflip": (14, 18), "mr": (10, 14)}
SEED_SLICES = {"ctflip": 16, "mr": 12}


def _flipped(src: Path, out: Path) -> Path:
    """The same image mirrored left-right (same slices, other voxels)."""
    image = sitk.ReadImage(str(src))
    flipped = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[:, :, ::-1].copy())
    flipped.CopyInformation(image)
    sitk.WriteImage(flipped, str(out))
    return out


def _liver(label_path: Path, out: Path) -> Path:
    label = sitk.ReadImage(str(label_path))
    array = sitk.GetArrayFromImage(label)
    kept = sitk.GetImageFromArray(np.where(array == 5, 5, 0).astype(np.uint8))
    kept.CopyInformation(label)
    sitk.WriteImage(kept, str(out))
    return out


def _studies(shared_data: Path, root: Path) -> dict:
    studies = root / "studies"
    studies.mkdir()
    ts = shared_data / "totalsegmentator"
    shutil.copy(ts / "example_ct_sm.nii.gz", studies / "ct.nii.gz")
    _flipped(ts / "example_ct_sm.nii.gz", studies / "ctflip.nii.gz")
    shutil.copy(ts / "example_mr_sm.nii.gz", studies / "mr.nii.gz")
    seed_ct = _seed_file(ts / "example_seg.nii.gz", [5], SEED_SLICES["ctflip"], root / "ct_seed.nii.gz")
    return {"studies": studies, "liver": _liver(ts / "example_seg.nii.gz", root / "liver.nii.gz"),
            "seeds": {"ctflip": _flipped(seed_ct, root / "ctflip_seed.nii.gz"),
                      "mr": _seed_file(ts / "example_seg_mr.nii.gz", [5], SEED_SLICES["mr"], root / "mr_seed.nii.gz")}}


def _args(studies: Path, checkpoint: Path) -> list[str]:
    return ["--studies", str(studies), "--checkpoint", str(checkpoint), "--device", "cpu", "--image-size", "256",
            "--labels", '{"liver": 5}', "--cache-gb", "1"]


@pytest.fixture(scope="module")
def server(shared_data, random_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    data = _studies(shared_data, root)
    with running_server(_args(data["studies"], random_checkpoint), root / "server.log", {}) as url:
        yield {"url": url, "checkpoint": random_checkpoint, "log": root / "server.log",
               "models": data["studies"] / ".sam2med" / "models", **data}


def _http(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 120) -> tuple[int, dict | list | None]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read()
    return status, json.loads(text) if text else None  # every answer is JSON, errors included


def _version(path: Path) -> str:
    return "tiny:" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _wait_idle(url: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while _http(f"{url}/train/?check_if_running=true")[0] == 200:
        assert time.time() < deadline, "training did not end"
        time.sleep(0.2)


def _infer(client: MONAILabelClient, server: dict, image_id: str) -> dict:
    _, params = client.infer("sam2_propagate", image_id, {"slice_range": list(RANGES[image_id])},
                             label_in=str(server["seeds"][image_id]))
    return params


def _files(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir()) if models.is_dir() else []


BAD_BODIES = [  # (raw body, the key the one-line answer must name)
    (b'{"max_epochs": 1, "lr": "inf", "val_fraction": 0}', "lr"),
    (b'{"max_epochs": 1, "lr": 1e30, "val_fraction": 0}', "lr"),
    (b'{"lr": Infinity}', "non-finite"),
    (b'{"max_epochs": 1, "lr": NaN}', "non-finite"),
    (b'{"lr": 0}', "lr"),
    (b'{"lr": -0.001}', "lr"),
    (b'{"max_epochs": 0}', "max_epochs"),
    (b'{"max_epochs": -1}', "max_epochs"),
    (b'{"max_epochs": 1000000000}', "max_epochs"),
    (b'{"max_epochs": 1.5}', "max_epochs"),
    (b'{"max_epochs": "2"}', "max_epochs"),
    (b'{"max_epochs": true}', "max_epochs"),
    (b'{"val_fraction": "nan"}', "val_fraction"),
    (b'{"val_fraction": 1}', "val_fraction"),
    (b'{"val_fraction": -0.1}', "val_fraction"),
    (b'{"seed": -5}', "seed"),
    (b'{"seed": 0.5}', "seed"),
    (b'{"clip_slices": 0}', "clip_slices"),
    (b'{"clip_slices": 1}', "clip_slices"),
    (b'{"learning_rate": 5}', "learning_rate"),
    (b'{"mode": "fast"}', "mode"),
    (b'[1, 2]', "JSON object"),
    (b'{"max_epochs": 1', "request body"),
]


def test_bad_training_bodies_are_422_before_anything_starts_and_the_server_keeps_serving(server, tmp_path):
    url, client = server["url"], MONAILabelClient(server["url"], tmpdir=str(tmp_path))
    for body, key in BAD_BODIES:
        status, answer = _http(f"{url}/train/sam2_finetune", "POST", body)
        assert status == 422, (body, status, answer)
        assert isinstance(answer["detail"], str) and "\n" not in answer["detail"] and key in answer["detail"], (body, answer)
    with pytest.raises(MONAILabelClientException, match="422"):  # MONAI Label's client (it adds its client_id)
        client.train_start("sam2_finetune", {"max_epochs": 1, "lr": 1e30, "val_fraction": 0})
    status, answer = _http(f"{url}/train/", "POST", b'{"sam2_finetune": {"lr": NaN}}')
    assert status == 422 and "non-finite" in answer["detail"]
    assert _http(f"{url}/train/")[0] == 404  # nothing was ever submitted: MONAI Label's JSON 404, not a 500
    assert not (server["models"] / "current.json").exists() and not [f for f in _files(server["models"]) if f.endswith(".pt")]
    info = client.info()
    assert info["sam2med"]["model_version"] == _version(server["checkpoint"])
    assert _infer(client, server, "mr")["model_version"] == _version(server["checkpoint"])  # still serving


def test_back_to_back_submits_get_429_already_running(server, tmp_path):
    client = MONAILabelClient(server["url"], tmpdir=str(tmp_path))
    client.save_label("ct", str(server["liver"]), tag="final")
    first = _http(f"{server['url']}/train/sam2_finetune", "POST", b'{"max_epochs": 200, "val_fraction": 0}')
    second = _http(f"{server['url']}/train/sam2_finetune", "POST", b'{"max_epochs": 1, "val_fraction": 0}')
    assert first[0] == 200 and first[1]["status"] in ("SUBMITTED", "RUNNING")
    assert second[0] == 429 and "already running" in second[1]["detail"]
    with pytest.raises(MONAILabelClientException, match="429"):
        client.train_start("sam2_finetune", {"max_epochs": 1})
    assert _http(f"{server['url']}/train/", "DELETE")[0] == 200
    assert _http(f"{server['url']}/train/?check_if_running=true")[0] == 404  # stopped, and nothing queued behind it
    assert client.train_status()["id"] == first[1]["id"] and client.train_status()["status"] == "STOPPED"
    stats = client.info()["train_stats"]["sam2_finetune"]
    assert stats["status"] == "stopped" and stats["reason"].startswith("stopped by DELETE /train/")


def test_stop_during_the_checkpoint_write_leaves_no_file_and_says_stopped(server, tmp_path):
    models = server["models"]
    status, task = _http(f"{server['url']}/train/sam2_finetune", "POST", b'{"max_epochs": 1, "val_fraction": 0}')
    assert status == 200
    deadline, pid, partial = time.time() + 300, None, []
    while not partial:  # the moment torch.save opens its temporary file, freeze the job there
        assert time.time() < deadline, "no checkpoint write seen"
        partial = [f for f in os.listdir(models) if f.startswith(".sam2_finetune-") and ".partial" in f]
        if partial:
            pid = json.loads((models / "train_stats.json").read_text())["pid"]
            os.kill(pid, signal.SIGSTOP)
        else:
            time.sleep(0.002)
    assert [f for f in os.listdir(models) if ".partial" in f], "the write finished before the stop: run again"
    assert _http(f"{server['url']}/train/", "DELETE")[1]["status"] == "STOPPED"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not [f for f in _files(models) if ".partial" in f or f.endswith((".pt", ".pt.json"))], _files(models)
    stats = MONAILabelClient(server["url"], tmpdir=str(tmp_path)).info()["train_stats"]["sam2_finetune"]
    assert stats["status"] == "stopped" and stats["published"] is False and "step 1 of 1" in stats["reason"]
    history = _http(f"{server['url']}/train/?all=true")[1]
    assert [h["id"] for h in history][-1] == task["id"] and history[-1]["train_stats"]["status"] == "stopped"


def test_publish_rescores_uncertain_and_rollback_restores_the_previous_model(server, tmp_path):
    url, client = server["url"], MONAILabelClient(server["url"], tmpdir=str(tmp_path))
    base = _version(server["checkpoint"])
    old = {i: _infer(client, server, i) for i in ("ctflip", "mr")}
    assert {p["model_version"] for p in old.values()} == {base}

    client.train_start("sam2_finetune", {"max_epochs": 1, "val_fraction": 0})
    _wait_idle(url)
    assert client.train_status()["status"] == "DONE", client.train_status()
    stats = client.info()["train_stats"]["sam2_finetune"]
    pointer = json.loads((server["models"] / "current.json").read_text())
    new = _version(server["models"] / pointer["checkpoint"])
    assert stats["status"] == "published" and stats["model_version"] == new != base and stats["previous_version"] == base
    assert stats["checks"]["finite_loss_and_weights"] and stats["checks"]["smoke_inference"] == "passed"
    assert client.info()["sam2med"]["model_version"] == new  # at once, before any infer

    picked = client.next_sample("uncertain", {})  # both candidates were scored by the old model: re-scored first
    objects = _http(f"{url}/datastore/?output=all")[1]["objects"]
    records = {i: objects[i]["image"]["info"]["sam2med_scores"] for i in ("ctflip", "mr")}
    assert {r["model_version"] for r in records.values()} == {new} and {r["source"] for r in records.values()} == {"rescored"}
    least = max(records, key=lambda i: (records[i]["uncertainty"], i == "ctflip"))
    assert picked["id"] == least and picked["model_version"] == new
    assert picked["uncertainty"] == pytest.approx(records[least]["uncertainty"]) and "least confident of 2" in picked["reason"]
    assert _http(f"{url}/scoring/")[0] == 404  # /activelearning/ started no scoring job
    fresh = _infer(client, server, "mr")  # the re-scoring ran the new model on the recorded prompts: same scores
    assert fresh["model_version"] == new
    assert image_uncertainty({k: v["slices"] for k, v in fresh["labels"].items()}) == pytest.approx(records["mr"]["uncertainty"], abs=1e-4)

    status, answer = _http(f"{url}/sam2med/rollback", "POST")
    assert status == 200 and answer == {"model_version": base, "rolled_back_from": new}
    assert client.info()["sam2med"]["model_version"] == base
    assert _infer(client, server, "mr")["model_version"] == base
    assert not (server["models"] / pointer["checkpoint"]).exists()
    status, answer = _http(f"{url}/sam2med/rollback", "POST")
    assert status == 409 and "no previous model" in answer["detail"]

    assert "sam2med_reviewed" in _http(f"{url}/datastore/?output=all")[1]["objects"]["ct"]["image"]["info"]
    assert _http(f"{url}/datastore/label?id=ct&tag=final", "DELETE")[0] == 200
    ct = _http(f"{url}/datastore/?output=all")[1]["objects"]["ct"]
    assert "sam2med_reviewed" not in ct["image"]["info"]  # (the label entry goes when MONAI Label's watcher sees it)


def test_a_server_fault_answers_json_not_plain_text(server):
    """MONAI Label's /scoring/ echoes its request: a NaN in it cannot be rendered as JSON (a fault, not a user error
    we check there); the answer is still {"detail": one line}."""
    status, answer = _http(f"{server['url']}/scoring/sam2_confidence", "POST", b'{"max_seconds": NaN}')
    assert status == 500 and list(answer) == ["detail"] and "\n" not in answer["detail"]
    assert answer["detail"].startswith("internal server error: ValueError: Out of range float values")
    deadline = time.time() + 120
    while _http(f"{server['url']}/scoring/?check_if_running=true")[0] == 200:  # the job refuses the NaN and ends
        assert time.time() < deadline
        time.sleep(0.2)


def _start(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "serve", *args, "--port", str(port)], cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 180
    while True:
        try:
            if _http(f"{url}/info/", timeout=5)[0] == 200:
                return proc, url
        except OSError:
            pass
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_kill_9_of_the_server_leaves_no_training_and_the_next_server_tells(shared_data, random_checkpoint, tmp_path):
    data = _studies(shared_data, tmp_path)
    models = data["studies"] / ".sam2med" / "models"
    proc, url = _start(_args(data["studies"], random_checkpoint), tmp_path / "first.log")
    job = None
    try:
        MONAILabelClient(url, tmpdir=str(tmp_path)).save_label("ct", str(data["liver"]), tag="final")
        assert _http(f"{url}/train/sam2_finetune", "POST", b'{"max_epochs": 500, "val_fraction": 0}')[0] == 200
        deadline = time.time() + 180
        while job is None or json.loads((models / "train_stats.json").read_text()).get("epoch", 0) < 1:
            assert time.time() < deadline, "training did not start"
            time.sleep(0.5)
            stats = json.loads((models / "train_stats.json").read_text()) if (models / "train_stats.json").exists() else {}
            job = stats.get("pid")
        assert psutil.Process(job).ppid() == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 20
        while psutil.pid_exists(job) and psutil.Process(job).status() != psutil.STATUS_ZOMBIE:
            assert time.time() < deadline, f"training process {job} outlived the server"
            time.sleep(0.2)
    finally:
        for process in [p for p in (job,) if p and psutil.pid_exists(p)]:
            os.kill(process, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (models / "current.json").exists()

    proc, url = _start(_args(data["studies"], random_checkpoint), tmp_path / "second.log")
    try:
        status, last = _http(f"{url}/train/")
        assert status == 200 and last["train_stats"]["status"] == "failed"  # the history survived the restart
        assert "the server stopped during this training" in last["train_stats"]["reason"]
        stats = MONAILabelClient(url, tmpdir=str(tmp_path)).info()["train_stats"]["sam2_finetune"]
        assert stats["status"] == "failed" and stats["published"] is False
        assert not [f for f in _files(models) if f.endswith(".pt") or ".partial" in f]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
