"""The real server (`main.py serve`) on a free loopback port, driven as the 3D Slicer plugin drives it.

A random-weight SAM2.1-tiny at 256 px keeps CPU cost low: these tests check plumbing, geometry, HTTP
answers and isolation between requests, not segmentation quality. CT requests share slices 14..18 so
that the feature cache makes later requests cheap.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from monailabel.client import MONAILabelClient

from live_server import free_port, http_error, running_server

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CT_SLICE, CT_RANGE = 16, (14, 18)
MR_SLICE, MR_RANGE = 12, (10, 14)
MAX_UPLOAD_MB = 5


def _seed_file(label_path: Path, values: list[int], slice_index: int, out: Path) -> Path:
    """A seed on the label's own grid: `values` kept on one axial slice, zero elsewhere."""
    label = sitk.ReadImage(str(label_path))
    array = sitk.GetArrayFromImage(label)  # (z, y, x)
    seed = np.zeros_like(array, dtype=np.uint8)
    keep = np.isin(array[slice_index], values)
    seed[slice_index][keep] = array[slice_index][keep]
    image = sitk.GetImageFromArray(seed)
    image.CopyInformation(label)
    sitk.WriteImage(image, str(out))
    return out


def _read_xyz(path: str) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), image


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


def _same_grid(result: sitk.Image, reference: sitk.Image) -> None:
    assert result.GetSize() == reference.GetSize()
    np.testing.assert_allclose(result.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(result.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(result.GetDirection(), reference.GetDirection(), atol=1e-6)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def server(shared_data, random_checkpoint, tmp_path_factory):
    """Studies ct, ct2, ct3 (same voxels), mr (LPS); the server's temp dir is private so leftovers can be checked."""
    root = tmp_path_factory.mktemp("server")
    studies, tmp, seeds = root / "studies", root / "tmp", root / "seeds"
    for folder in (studies, tmp, seeds):
        folder.mkdir()
    ts = shared_data / "totalsegmentator"
    shutil.copy(ts / "example_ct_sm.nii.gz", studies / "ct.nii.gz")
    shutil.copy(ts / "example_ct_sm.nii.gz", studies / "ct2.nii.gz")
    shutil.copy(ts / "example_ct_sm.nii.gz", studies / "ct3.nii.gz")  # only the correction loop labels it
    shutil.copy(ts / "example_mr_sm.nii.gz", studies / "mr.nii.gz")
    args = ["--studies", str(studies), "--checkpoint", str(random_checkpoint), "--device", "cpu", "--image-size", "256",
            "--max-upload-mb", str(MAX_UPLOAD_MB), "--labels", '{"spleen": 1, "liver": 5}', "--cache-gb", "1"]
    with running_server(args, root / "server.log", {"TMPDIR": str(tmp)}) as url:
        yield {
            "url": url, "studies": studies, "checkpoint": random_checkpoint, "tmp": tmp, "seeds": seeds, "root": root, "log": root / "server.log",
            "ct_seed": _seed_file(ts / "example_seg.nii.gz", [1, 5], CT_SLICE, seeds / "ct_seed.nii.gz"),
            "ct_spleen_seed": _seed_file(ts / "example_seg.nii.gz", [1], CT_SLICE, seeds / "ct_spleen_seed.nii.gz"),
            "mr_seed": _seed_file(ts / "example_seg_mr.nii.gz", [5], MR_SLICE, seeds / "mr_seed.nii.gz"),
        }


@pytest.fixture()
def client(server, tmp_path) -> MONAILabelClient:
    return MONAILabelClient(server["url"], tmpdir=str(tmp_path))


def _check_result(out: str, image_path: Path, seed_path: Path, slice_range: tuple[int, int], seed_slice: int,
                  labels: list[int] | None = None) -> np.ndarray:
    label, result = _read_xyz(out)
    _same_grid(result, sitk.ReadImage(str(image_path)))
    seed, _ = _read_xyz(str(seed_path))
    outside = np.ones(label.shape[2], bool)
    outside[slice_range[0] : slice_range[1] + 1] = False
    assert not label[..., outside].any(), "label written outside the slice range"
    for value in labels or np.unique(seed[seed > 0]):
        np.testing.assert_array_equal(label[..., seed_slice] == value, seed[..., seed_slice] == value,
                                      err_msg=f"seed slice of label {value} not kept as drawn")
    assert set(np.unique(label)) <= set(np.unique(seed))
    return label


def test_info_lists_tasks_options_and_strategies(client):
    info = client.info()
    models = info["models"]
    assert {"sam2_propagate", "sam2_points"} <= set(models)
    assert models["sam2_propagate"]["type"] == "segmentation" and models["sam2_points"]["type"] == "deepgrow"
    assert {"slice_range", "axis", "window", "labels", "seed_tag", "sam2_model"} <= set(models["sam2_propagate"]["config"])
    assert models["sam2_propagate"]["labels"] == {"spleen": 1, "liver": 5}
    assert {"random", "first", "ordered"} <= set(info["strategies"])
    assert info["sam2med"]["loaded"] is True and info["sam2med"]["model"] == "tiny"


def test_infer_with_uploaded_seed(client, server):
    out, params = client.infer("sam2_propagate", "ct", {"slice_range": list(CT_RANGE)}, label_in=str(server["ct_seed"]))
    label = _check_result(out, server["studies"] / "ct.nii.gz", server["ct_seed"], CT_RANGE, CT_SLICE)
    assert set(np.unique(label)) == {0, 1, 5}
    assert params["slices_processed"] == 5 and params["slice_range"] == list(CT_RANGE) and params["seed"] == "upload"
    assert [s["slice"] for s in params["labels"]["5"]["slices"]] == list(range(CT_RANGE[0], CT_RANGE[1] + 1))
    assert params["latencies"]["total"] > 0 and params["label_names"] == {"spleen": 1, "liver": 5}
    assert params["labels"]["5"]["name"] == "liver" and params["labels"]["1"]["name"] == "spleen"
    assert params["labels"]["5"]["seed_slices"] == [CT_SLICE] and params["labels"]["5"]["means_exclude_seed_slices"] is True
    prov = params["provenance"]
    assert prov["inputs"] == {"image": {"file": "ct.nii.gz", "sha256": _sha256(server["studies"] / "ct.nii.gz")},
                              "seed": {"file": "upload", "sha256": _sha256(server["ct_seed"])}}
    assert prov["checkpoint"] == {"file": "sam2.1_hiera_tiny.pt", "sha256": _sha256(server["checkpoint"])}
    assert prov["random_weights"] is True and prov["input_size"] == 256 and prov["model"] == "SAM2.1 tiny"
    assert prov["window"] == "window:40,400" and prov["versions"]["sam2med"] and prov["versions"]["torch"]
    assert str(server["root"]) not in json.dumps(params), "no server path in the response"


def test_per_label_ranges(client, server):
    for ranges in ({"5": list(CT_RANGE), "spleen": f"{CT_SLICE - 1}-{CT_SLICE + 1}"},
                   f"5:{CT_RANGE[0]}-{CT_RANGE[1]}; 1:{CT_SLICE - 1}-{CT_SLICE + 1}"):
        out, params = client.infer("sam2_propagate", "ct", {"slice_range": ranges}, label_in=str(server["ct_seed"]))
        label, _ = _read_xyz(out)
        spleen = set(np.flatnonzero((label == 1).any(axis=(0, 1))))
        assert CT_SLICE in spleen and spleen <= {CT_SLICE - 1, CT_SLICE, CT_SLICE + 1}, ranges
        assert not label[..., : CT_RANGE[0]].any() and not label[..., CT_RANGE[1] + 1 :].any()
        assert params["slice_range"] == list(CT_RANGE) and params["labels"]["1"]["slice_range"] == [CT_SLICE - 1, CT_SLICE + 1]
        assert [s["slice"] for s in params["labels"]["1"]["slices"]] == [CT_SLICE - 1, CT_SLICE, CT_SLICE + 1]
    status, body = _rejected(client, server, "sam2_propagate", "ct", {"slice_range": {"kidney": [1, 2]}}, server["ct_seed"])
    assert status == 422 and "kidney" in json.loads(body)["detail"]


def test_plain_range_bounds_the_labels_without_their_own(client, server):
    """slice_range "START-END; LABEL:START-END": the liver over its own range, the spleen over START-END only."""
    spleen_range = (CT_SLICE, CT_SLICE + 1)
    ranges = f"{spleen_range[0]}-{spleen_range[1]}; liver:{CT_RANGE[0]}-{CT_RANGE[1]}"
    out, params = client.infer("sam2_propagate", "ct", {"slice_range": ranges}, label_in=str(server["ct_seed"]))
    label, _ = _read_xyz(out)
    spleen = set(np.flatnonzero((label == 1).any(axis=(0, 1))))
    assert CT_SLICE in spleen and spleen <= set(spleen_range), sorted(spleen)
    assert not label[..., : CT_RANGE[0]].any() and not label[..., CT_RANGE[1] + 1 :].any()
    assert params["slice_range"] == list(CT_RANGE) and params["labels"]["1"]["slice_range"] == list(spleen_range)
    assert params["labels"]["5"]["slice_range"] == list(CT_RANGE)
    assert [s["slice"] for s in params["labels"]["1"]["slices"]] == list(spleen_range)


def test_auto_range_and_selective_memory(client, server):
    options = {"slice_range": "auto", "max_slices": "2", "absent_slices": 50, "min_object_score": "0", "memory": "selective"}
    out, params = client.infer("sam2_propagate", "ct", options, label_in=str(server["ct_seed"]))
    label, _ = _read_xyz(out)
    assert not label[..., : CT_SLICE - 2].any() and not label[..., CT_SLICE + 3 :].any()
    assert params["auto_range"] == {"mode": "auto", "absent_slices": 50, "min_object_score": 0.0, "max_slices": 2}
    assert params["memory"]["policy"] == "selective" and params["slice_range"] == [CT_SLICE - 2, CT_SLICE + 2]
    for value in ("1", "5"):
        assert params["labels"][value]["auto_range"]["forward"] == {
            "reason": "bound_reached", "stopped_at": CT_SLICE + 2,
            "last_present": params["labels"][value]["auto_range"]["forward"]["last_present"]}
        assert params["labels"][value]["auto_range"]["backward"]["stopped_at"] == CT_SLICE - 2
    clicks = {"foreground": [[40, 50, CT_SLICE]], "slice_range": "auto", "max_slices": 1, "absent_slices": 50, "min_object_score": 0}
    out, params = client.infer("sam2_points", "ct", clicks)
    label, _ = _read_xyz(out)
    assert not label[..., : CT_SLICE - 1].any() and not label[..., CT_SLICE + 2 :].any()
    assert params["slice_range"] == [CT_SLICE - 1, CT_SLICE + 1] and "memory" not in params
    assert {d: v["reason"] for d, v in params["labels"]["1"]["auto_range"].items()} == {"forward": "bound_reached",
                                                                                        "backward": "bound_reached"}
    for options, text in (({"absent_slices": 3}, 'applies to slice_range "auto" only'),
                          ({"memory": "oldest"}, "memory must be one of recent, selective"),
                          ({"slice_range": "auto", "max_slices": "two"}, "max_slices must be a whole number")):
        status, body = _rejected(client, server, "sam2_propagate", "ct", options, server["ct_seed"])
        assert status == 422 and text in json.loads(body)["detail"], body


def test_save_label_then_infer_with_datastore_seed(client, server, tmp_path):
    saved = client.save_label("ct", str(server["ct_seed"]), tag="final")
    assert saved["label"] == "ct"
    assert "ct" in client.datastore()["objects"] and "final" in client.datastore()["objects"]["ct"]["labels"]
    out_store, params = client.infer("sam2_propagate", "ct", {"slice_range": f"{CT_RANGE[0]},{CT_RANGE[1]}", "labels": "liver"})
    assert params["seed"] == "datastore:final"
    label = _check_result(out_store, server["studies"] / "ct.nii.gz", server["ct_seed"], CT_RANGE, CT_SLICE, [5])
    assert set(np.unique(label)) == {0, 5}, "the 'labels' subset (by name) was not applied"
    out_upload, again = client.infer("sam2_propagate", "ct", {"slice_range": list(CT_RANGE), "labels": [5]},
                                     label_in=str(server["ct_seed"]))
    np.testing.assert_array_equal(label, _read_xyz(out_upload)[0])
    # the same image, axis and window again: every slice comes from the feature cache, within its budget
    assert again["cache"]["request_hit_slices"] == params["slices_processed"] and again["cache"]["request_miss_slices"] == 0
    assert again["cache"]["budget_bytes"] == 1_000_000_000 and 0 < again["cache"]["bytes"] <= 1_000_000_000


def test_next_sample_strategies(client, server):
    client.save_label("ct", str(server["ct_seed"]), tag="final")
    ordered = client.next_sample("ordered", {})
    assert ordered["id"] == "ct2" and "after 'ct'" in ordered["reason"]
    assert client.next_sample("first", {})["id"] == "ct2"
    assert client.next_sample("random", {})["id"] in {"ct2", "ct3", "mr"}
    for strategy in ("ordered", "first", "random", "uncertain"):
        answer = client.next_sample(strategy, {})
        assert "path" not in answer and str(server["studies"]) not in json.dumps(answer), "no server path in the answer"


def test_points_task_as_ohif_sends_it(client, server):
    params = {"foreground": [[40, 50, CT_SLICE]], "background": [[5, 5, CT_SLICE]], "slice_range": list(CT_RANGE),
              "result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False, "restore_label_idx": False}
    out, result = client.infer("sam2_points", "ct", params)
    assert out.endswith(".nrrd")
    label, image = _read_xyz(out)
    assert image.GetPixelID() == sitk.sitkUInt8
    _same_grid(image, sitk.ReadImage(str(server["studies"] / "ct.nii.gz")))
    assert set(np.unique(label)) <= {0, 1} and result["prompt_slices"] == [CT_SLICE]
    assert not label[..., : CT_RANGE[0]].any() and not label[..., CT_RANGE[1] + 1 :].any()


def _rejected(client, server, model, image, params, label=None) -> tuple[int, str]:
    with pytest.raises(Exception) as caught:
        client.infer(model, image, params, label_in=str(label) if label else None)
    return http_error(caught.value)


def test_bad_requests_get_4xx_naming_the_problem(client, server):
    seeds = server["seeds"]
    wrong = sitk.ReadImage(str(server["ct_seed"]))[:, :, :20]
    sitk.WriteImage(wrong, str(seeds / "wrong_shape.nii.gz"))
    empty = sitk.ReadImage(str(server["ct_seed"])) * 0
    sitk.WriteImage(empty, str(seeds / "empty.nii.gz"))
    (seeds / "big.nii.gz").write_bytes(os.urandom((MAX_UPLOAD_MB + 1) * 1_000_000))
    cases = [
        ("sam2_propagate", "ct", {}, seeds / "wrong_shape.nii.gz", 422, "not on the image grid"),
        ("sam2_propagate", "ct", {}, seeds / "empty.nii.gz", 422, "seed label is empty"),
        ("sam2_propagate", "ct", {"overlap": "union"}, server["ct_seed"], 422, "overlap must be one of keep, overwrite, confidence"),
        ("sam2_propagate", "ct", {"locked_labels": [1, 5]}, server["ct_seed"], 422, "every label of the seed is locked"),
        ("sam2_propagate", "ct", {"slice_range": [0, 40]}, server["ct_seed"], 422, "outside the volume"),
        ("sam2_propagate", "ct", {"slice_range": [0, 10]}, server["ct_seed"], 422, "outside the slice range"),
        ("sam2_propagate", "ct", {"labels": "7"}, server["ct_seed"], 422, "[7] not in the seed"),
        ("sam2_propagate", "ct", {"labels": "kidney"}, server["ct_seed"], 422, "unknown label name 'kidney'"),
        ("sam2_propagate", "ct", {"sam2_model": "large"}, server["ct_seed"], 422, "runs SAM2.1 'tiny'"),
        ("sam2_propagate", "ct", {"result_extension": ".exe"}, server["ct_seed"], 422, "result_extension"),
        ("sam2_propagate", "ct", {}, seeds / "big.nii.gz", 413, "upload limit"),
        ("sam2_propagate", "mr", {}, None, 422, "no seed"),
        ("sam2_propagate", "nope", {}, server["ct_seed"], 404, "not in the datastore"),
        ("sam2_propagate", "../studies/ct", {}, server["ct_seed"], 403, "not a datastore image id"),
        ("sam2_propagate", str(server["studies"] / "ct.nii.gz"), {}, server["ct_seed"], 403, "not a datastore image id"),
        ("sam2_points", "ct", {"foreground": [[1, 1]]}, None, 422, "not an [x, y, z] voxel point"),
        ("sam2_points", "ct", {"foreground": [[500, 1, 1]]}, None, 422, "outside the image"),
        ("no_such_task", "ct", {}, None, 404, "no_such_task"),
    ]
    for model, image, params, label, status, text in cases:
        got_status, body = _rejected(client, server, model, image, params, label)
        assert (got_status, text in json.loads(body)["detail"]) == (status, True), (model, image, params, body)
    # a request cannot point the seed at a server file: 'label' in params is dropped, so there is no seed
    got_status, body = _rejected(client, server, "sam2_propagate", "mr", {"label": str(server["ct_seed"])})
    assert got_status == 422 and "no seed" in body
    leftovers = [p.name for p in server["tmp"].iterdir() if not p.name.endswith(".json")]
    assert leftovers == [], f"uploads or results left in the server's temp dir: {leftovers}"


def test_three_concurrent_requests_each_get_their_own_label(server, tmp_path):
    jobs = [
        ("ct", server["ct_seed"], CT_RANGE, CT_SLICE, {0, 1, 5}),
        ("ct2", server["ct_spleen_seed"], CT_RANGE, CT_SLICE, {0, 1}),
        ("mr", server["mr_seed"], MR_RANGE, MR_SLICE, {0, 5}),
    ]

    def run(job):
        image_id, seed, slice_range, _, _ = job
        client = MONAILabelClient(server["url"], tmpdir=str(tmp_path / image_id))
        return client.infer("sam2_propagate", image_id, {"slice_range": list(slice_range)}, label_in=str(seed))

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run, jobs))
    for (image_id, seed, slice_range, seed_slice, values), (out, params) in zip(jobs, results):
        label = _check_result(out, server["studies"] / f"{image_id}.nii.gz", seed, slice_range, seed_slice)
        assert set(np.unique(label)) == values, image_id
        assert params["slice_range"] == list(slice_range)


def test_lps_mr_result_keeps_the_image_geometry(client, server):
    out, _ = client.infer("sam2_propagate", "mr", {"slice_range": list(MR_RANGE), "axis": "axial"}, label_in=str(server["mr_seed"]))
    image = sitk.ReadImage(str(server["studies"] / "mr.nii.gz"))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    assert np.allclose(np.diag(direction), [1, 1, 1]), "the MR fixture is expected in LPS (identity ITK direction)"
    _check_result(out, server["studies"] / "mr.nii.gz", server["mr_seed"], MR_RANGE, MR_SLICE)


def test_monailabel_start_server_runs_the_same_app(shared_data, random_checkpoint, tmp_path):
    """`monailabel start_server --app apps/sam2med` (MONAI Label's own routes) with a lazily loaded model."""
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(shared_data / "totalsegmentator" / "example_ct_sm.nii.gz", studies / "ct.nii.gz")
    seed = _seed_file(shared_data / "totalsegmentator" / "example_seg.nii.gz", [5], CT_SLICE, tmp_path / "seed.nii.gz")
    port = free_port()
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(REPO / "apps" / "sam2med"),
           "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port),
           "--conf", "checkpoint", str(random_checkpoint), "--conf", "model", "tiny", "--conf", "device", "cpu",
           "--conf", "image_size", "256", "--conf", "preload", "false"]
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = MONAILabelClient(f"http://127.0.0.1:{port}", tmpdir=str(tmp_path))
        deadline = time.time() + 120
        while True:
            try:
                info = client.info()
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"monailabel start_server did not answer: {(tmp_path / 'server.log').read_text()[-3000:]}")
                time.sleep(0.2)
        assert {"sam2_propagate", "sam2_points"} <= set(info["models"]) and info["sam2med"]["loaded"] is False
        status, body = _rejected(client, None, "sam2_propagate", "ct", {"slice_range": [0, 40]}, seed)
        assert status == 422 and "outside the volume" in body
        # sam2med's routes are installed here too: 'image' in params is dropped (the image read is 'ct', so the
        # range outside it is what fails), a session id must exist, and the log is not served
        status, body = _rejected(client, None, "sam2_propagate", "ct", {"image": "/etc/hostname", "slice_range": [0, 40]}, seed)
        assert status == 422 and "outside the volume" in body
        answer = requests.post(f"http://127.0.0.1:{port}/infer/sam2_propagate", params={"image": "ct", "session_id": "bogus"},
                               timeout=30)
        assert answer.status_code == 404 and "session 'bogus' does not exist" in answer.json()["detail"]
        assert requests.get(f"http://127.0.0.1:{port}/logs/", timeout=30).status_code == 403
        assert "loads lazily, on the first request" in (tmp_path / "server.log").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


def test_slicer_correction_loop_conditions_on_seeds_and_corrected_slices(client, server, shared_data):
    """As the Slicer plugin does it: Submit Label (tag final), Run, correct one slice of the result, Submit, Run."""
    params = {"slice_range": list(CT_RANGE)}
    client.save_label("ct3", str(server["ct_seed"]))  # no tag: the plugin's Submit Label saves `final`
    first_out, first = client.infer("sam2_propagate", "ct3", params)
    assert first["seed"] == "datastore:final" and first["seed_slices"] == [CT_SLICE] and first["correction"] is None
    result, result_image = _read_xyz(first_out)

    # the user redraws spleen (1) and liver (5) on the slice after the seed, leaves every other slice as returned
    fixed = CT_SLICE + 1
    truth, _ = _read_xyz(str(shared_data / "totalsegmentator" / "example_seg.nii.gz"))
    drawn = np.where(np.isin(truth[..., fixed], [1, 5]), truth[..., fixed], 0).astype(result.dtype)
    assert not np.array_equal(drawn == 5, result[..., fixed] == 5), "the correction must change the slice"
    corrected = result.copy()
    corrected[..., fixed] = drawn
    corrected_path = server["seeds"] / "ct3_corrected.nii.gz"
    written = sitk.GetImageFromArray(corrected.transpose(2, 1, 0))
    written.CopyInformation(result_image)
    sitk.WriteImage(written, str(corrected_path))
    client.save_label("ct3", str(corrected_path))

    second_out, second = client.infer("sam2_propagate", "ct3", params)
    assert second["seed_slices"] == [CT_SLICE, fixed]
    assert second["seed_slices_per_label"] == {"1": [CT_SLICE, fixed], "5": [CT_SLICE, fixed]}
    assert second["correction"] == {"changed_slices": {"1": [fixed], "5": [fixed]}, "kept_seed_slices": {"1": [CT_SLICE], "5": [CT_SLICE]}}
    again, _ = _read_xyz(second_out)
    assert second["kept_slices"] == {"spleen": [CT_SLICE, fixed], "liver": [CT_SLICE, fixed]}
    for value in (1, 5):
        np.testing.assert_array_equal(again[..., fixed] == value, drawn == value,
                                      err_msg=f"the corrected slice must come back as drawn ({value})")
        np.testing.assert_array_equal(again[..., CT_SLICE] == value, result[..., CT_SLICE] == value)
        seeds_flagged = {s["slice"] for s in second["labels"][str(value)]["slices"] if s["seed"]}
        assert seeds_flagged == {CT_SLICE, fixed}, "slices left as returned are propagated, not seeds"
    assert not again[..., : CT_RANGE[0]].any() and not again[..., CT_RANGE[1] + 1 :].any()
    # the states live on disk in the app's folder of the studies (they survive a restart), newest last, and are small
    files = list((server["studies"] / ".sam2med" / "corrections").glob("*.json"))
    kept = [json.loads(p.read_text()) for p in files]
    mine = [k for k in kept if k["image_id"] == "ct3"]
    assert len(mine) == 1 and len(mine[0]["states"]) == 2
    assert mine[0]["states"][-1]["seed_slices"] == {"1": [CT_SLICE, fixed], "5": [CT_SLICE, fixed]}
    assert all(p.stat().st_size < 20_000 * len(k["states"]) for p, k in zip(files, kept))
    assert second["state_id"] != first["state_id"]


def test_two_segments_drawn_on_different_slices_a_locked_one_and_start_end_reversed(client, server, shared_data):
    """As the OHIF panel sends it: the segments' own names, a locked segment, End before Start."""
    truth, _ = _read_xyz(str(shared_data / "totalsegmentator" / "example_seg.nii.gz"))
    seed = np.zeros(truth.shape, np.uint8)
    spleen = truth[..., 14] == 1
    spleen[::2, ::2] = False  # one-voxel holes, which a mask redrawn through SAM2's 64 px output cannot keep
    seed[..., 14][spleen] = 1
    seed[..., 17][truth[..., 17] == 5] = 5
    seed[20:70, 25:75, 15:17] = 3  # a finished segment across the body, between the two drawings
    seed[20:70, 25:75, 25] = 3  # and outside the range
    seed_path = server["seeds"] / "two_segments_locked.nii.gz"
    reference = sitk.ReadImage(str(server["studies"] / "ct.nii.gz"))
    written = sitk.GetImageFromArray(seed.transpose(2, 1, 0))
    written.CopyInformation(reference)
    sitk.WriteImage(written, str(seed_path))
    params = {"slice_range": [18, 14], "label_names": {"liver QA": 5, "3": "kidney done"}, "locked_labels": ["kidney done"]}
    out, report = client.infer("sam2_propagate", "ct", params, label_in=str(seed_path))
    label, _ = _read_xyz(out)
    assert report["slice_range"] == [14, 18] and report["overlap"] == "keep"
    np.testing.assert_array_equal(label[..., 14] == 1, spleen)  # drawn slices unchanged, voxel for voxel
    np.testing.assert_array_equal(label[..., 17] == 5, seed[..., 17] == 5)
    np.testing.assert_array_equal(label == 3, seed == 3)  # nothing written over the locked segment, nothing more of it
    outside = np.ones(label.shape[2], bool)
    outside[14:19] = False
    assert set(np.unique(label[..., outside])) <= {0, 3}, "only the locked segment outside the range"
    assert set(np.unique(label)) <= {0, 1, 3, 5}
    assert report["kept_slices"] == {"spleen": [14], "liver QA": [17]}
    assert report["locked_labels"] == {"kidney done": int((seed == 3).sum())}
    assert report["label_names"] == {"spleen": 1, "liver QA": 5} and report["labels"]["5"]["name"] == "liver QA"
    # errors name the segments by the names the request gave
    status, body = _rejected(client, server, "sam2_propagate", "ct", {**params, "slice_range": [16, 14]}, seed_path)
    assert status == 422 and json.loads(body)["detail"] == (
        "label 'liver QA' (value 5) is drawn on slice(s) [17], outside the slice range 14..16")
    status, body = _rejected(client, server, "sam2_propagate", "ct", {**params, "labels": "kidney done"}, seed_path)
    assert status == 422 and "label(s) ['kidney done' (value 3)] are locked" in json.loads(body)["detail"]


def test_ohif_routes_serve_the_extension_grid_and_progress(server):
    """The routes the sam2med OHIF mode relies on, through the live server (in front of MONAI Label's /ohif/)."""
    url = server["url"]
    config = requests.get(f"{url}/ohif/app-config.js", timeout=30)
    assert config.status_code == 200 and "/ohif/sam2med/sam2med-extension.js" in config.text
    assert "window.config = {" in config.text  # the bundled config is kept
    module = requests.get(f"{url}/ohif/sam2med/sam2med-geometry.js", timeout=30)
    assert module.status_code == 200 and module.headers["content-type"].startswith("application/javascript")
    assert "export function pixelMapping" in module.text
    assert requests.get(f"{url}/ohif/sam2med/nope.js", timeout=30).status_code == 404
    assert requests.get(f"{url}/ohif/index.html", timeout=30).status_code == 200  # the rest of OHIF as shipped

    grid = requests.get(f"{url}/sam2med/grid", params={"image": "mr"}, timeout=60).json()
    mr = sitk.ReadImage(str(server["studies"] / "mr.nii.gz"))
    assert grid["shape"] == list(mr.GetSize()) and np.allclose(grid["spacing"], mr.GetSpacing())
    assert np.allclose(grid["origin"], mr.GetOrigin()) and np.allclose(grid["direction"], mr.GetDirection())
    missing = requests.get(f"{url}/sam2med/grid", params={"image": "nope"}, timeout=30)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"] and str(server["root"]) not in missing.text

    progress_id = requests.post(f"{url}/sam2med/progress", timeout=30).json()["progress_id"]
    with open(server["ct_seed"], "rb") as seed:
        answer = requests.post(f"{url}/infer/sam2_propagate", params={"image": "ct", "output": "json"},
                               data={"params": json.dumps({"slice_range": list(CT_RANGE), "progress_id": progress_id})},
                               files={"label": ("seed.nii.gz", seed)}, timeout=600)
    assert answer.status_code == 200, answer.text
    progress = requests.get(f"{url}/sam2med/progress/{progress_id}", timeout=30).json()
    slices = CT_RANGE[1] - CT_RANGE[0] + 1
    assert {k: progress[k] for k in ("stage", "done", "total")} == {"stage": "done", "done": slices, "total": slices}
    assert requests.get(f"{url}/sam2med/progress/pytest-unknown-01", timeout=30).status_code == 404
    bad = requests.get(f"{url}/sam2med/progress/bad", timeout=30)
    assert 400 <= bad.status_code < 500 and "progress_id" in bad.json()["detail"]


def test_warmup_route_encodes_the_series_and_the_first_run_encodes_nothing_more(server):
    """POST /sam2med/warmup (what the OHIF panel sends when a series is shown): 202 at once, the slices encoded
    in the background, and then a Run over the whole series encodes no slice; bad input is a one-line 4xx."""
    url = server["url"]
    answer = requests.post(f"{url}/sam2med/warmup", json={"image": "mr", "axis": "axial", "center": MR_SLICE}, timeout=60)
    assert answer.status_code == 202 and answer.json() == {"scheduled": 20}, answer.text
    deadline = time.time() + 300
    while (status := requests.get(f"{url}/sam2med/warmup", params={"image": "mr"}, timeout=30).json())["state"] != "done":
        assert status["state"] in ("queued", "running") and time.time() < deadline, status
        time.sleep(0.5)
    assert status["encoded"] + status["cached"] == 20 and status["center"] == MR_SLICE
    with open(server["mr_seed"], "rb") as seed:
        run = requests.post(f"{url}/infer/sam2_propagate", params={"image": "mr", "output": "json"},
                            data={"params": json.dumps({"slice_range": [0, 19]})},
                            files={"label": ("seed.nii.gz", seed)}, timeout=600)
    assert run.status_code == 200, run.text
    assert (run.json()["cache"]["request_miss_slices"], run.json()["cache"]["request_hit_slices"]) == (0, 20)
    for body, status_code, words in [({"image": "mr", "axis": "oblique"}, 400, "axis must be one of"),
                                     ({"image": "nope"}, 404, "'nope' is not in the datastore"),
                                     ({"image": "mr", "center": 20}, 400, "center 20 is outside the 20 axial slices"),
                                     ({"image": "mr", "window": "??"}, 400, "unknown window")]:
        bad = requests.post(f"{url}/sam2med/warmup", json=body, timeout=30)
        assert bad.status_code == status_code and words in bad.json()["detail"], (body, bad.text)
        assert "\n" not in bad.json()["detail"] and str(server["root"]) not in bad.text
    not_json = requests.post(f"{url}/sam2med/warmup", data="{image", timeout=30)
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["detail"]
    assert requests.get(f"{url}/sam2med/warmup", params={"image": "ct2", "axis": "sagittal"}, timeout=30).status_code == 404


# The keys of the /infer/sam2_propagate JSON answer (output=json), pinned before the issue-25 refactor: viewers read them.
INFER_KEYS = {"axis", "cache", "changed_box", "correction", "cropped", "encode_seconds", "kept_slices", "label_names", "labels", "latencies", "locked_labels",
              "model_version", "overlap", "provenance", "review_slices", "seconds", "seed", "seed_slices", "seed_slices_per_label", "state_id",
              "slice_range", "slices_processed", "track_seconds"}
INFER_LABEL_KEYS = {"mean_iou", "mean_object_score", "means_exclude_seed_slices", "name", "seed_slices", "slice_range", "slices",
                    "volume_mm3", "voxels"}
INFER_SLICE_KEYS = {"area", "area_mm2", "iou", "object_score", "seed", "slice"}


def test_infer_json_answer_keys_are_pinned(server):
    with open(server["ct_seed"], "rb") as seed:
        answer = requests.post(f"{server['url']}/infer/sam2_propagate", params={"image": "ct", "output": "json"},
                               data={"params": json.dumps({"slice_range": list(CT_RANGE)})},
                               files={"label": ("seed.nii.gz", seed)}, timeout=600)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == INFER_KEYS
    for info in body["labels"].values():
        assert set(info) == INFER_LABEL_KEYS
        assert all(set(s) == INFER_SLICE_KEYS for s in info["slices"])


# --- issue 26: undo (state ids), live slices, refine ---------------------------------------------------------------

def _write_like(array_xyz: np.ndarray, reference: sitk.Image, path: Path) -> Path:
    written = sitk.GetImageFromArray(array_xyz.transpose(2, 1, 0))
    written.CopyInformation(reference)
    sitk.WriteImage(written, str(path))
    return path


def _redrawn(label: np.ndarray, truth: np.ndarray, slice_index: int, values=(1, 5)) -> np.ndarray:
    """`label` with `values` redrawn from the truth on one axial slice (the user's correction)."""
    corrected = label.copy()
    corrected[..., slice_index] = np.where(np.isin(truth[..., slice_index], values), truth[..., slice_index], 0)
    return corrected


def test_undo_a_correction_by_its_parent_state_and_only_the_last_50_states_are_kept(client, server, shared_data, tmp_path):
    """Run, correct, correct again; then the page's undo (the first correction's label with its parent state)
    gets the first correction's answer voxel for voxel, and its state id; a state 50 runs old is refused."""
    truth, _ = _read_xyz(str(shared_data / "totalsegmentator" / "example_seg.nii.gz"))
    reference = sitk.ReadImage(str(server["studies"] / "ct2.nii.gz"))
    params = {"slice_range": list(CT_RANGE)}
    out0, run0 = client.infer("sam2_propagate", "ct2", params, label_in=str(server["ct_seed"]))
    assert run0["correction"] is None and re.fullmatch(r"[0-9a-f]{32}", run0["state_id"])
    result0, _ = _read_xyz(out0)

    first = _write_like(_redrawn(result0, truth, CT_SLICE + 1), reference, tmp_path / "first.nii.gz")
    out1, run1 = client.infer("sam2_propagate", "ct2", {**params, "parent_state": run0["state_id"]}, label_in=str(first))
    assert run1["correction"]["changed_slices"] == {"1": [CT_SLICE + 1], "5": [CT_SLICE + 1]}
    assert run1["seed_slices"] == [CT_SLICE, CT_SLICE + 1]  # the rest of the submitted label is propagated again
    result1, _ = _read_xyz(out1)
    assert not np.array_equal(result1, _read_xyz(str(first))[0]), "the run must differ from the label it was given"

    second = _write_like(_redrawn(result1, truth, CT_SLICE - 1), reference, tmp_path / "second.nii.gz")
    out2, run2 = client.infer("sam2_propagate", "ct2", {**params, "parent_state": run1["state_id"]}, label_in=str(second))
    assert run2["correction"]["changed_slices"] == {"1": [CT_SLICE - 1], "5": [CT_SLICE - 1]}
    assert len({run0["state_id"], run1["state_id"], run2["state_id"]}) == 3

    # undo the second correction, then run the first one again: the page sends its label and parent state
    out_again, again = client.infer("sam2_propagate", "ct2", {**params, "parent_state": run0["state_id"]}, label_in=str(first))
    np.testing.assert_array_equal(_read_xyz(out_again)[0], result1)
    assert again["state_id"] == run1["state_id"] and again["correction"] == run1["correction"]

    # 50 newer states (one-slice runs of 50 different seeds) push run0's state out; run1's is the 50th-newest... then out too
    seed, _ = _read_xyz(str(server["ct_seed"]))
    single = {"slice_range": [CT_SLICE, CT_SLICE]}
    for k in range(50):
        varied = seed.copy()
        varied[k % 10 : k % 10 + 1 + k // 10, 0:2, CT_SLICE] = 1
        path = _write_like(varied, reference, tmp_path / f"seed{k}.nii.gz")
        if k == 48:  # run1's state is now the 50th-newest kept: still usable
            _, kept = client.infer("sam2_propagate", "ct2", {**params, "parent_state": run1["state_id"]}, label_in=str(second))
            assert kept["state_id"] == run2["state_id"]  # ... and its run is run2 again, saved as newest
        client.infer("sam2_propagate", "ct2", single, label_in=str(path))
    status, body = _rejected(client, server, "sam2_propagate", "ct2", {**params, "parent_state": run0["state_id"]}, first)
    assert status == 400 and json.loads(body)["detail"] == (
        f"parent_state {run0['state_id']} is not a state of image 'ct2' this server keeps (it keeps the last 50): "
        "run without parent_state")
    status, body = _rejected(client, server, "sam2_propagate", "ct2", {**params, "parent_state": "not-an-id"}, first)
    assert status == 400 and "parent_state must be a state_id" in json.loads(body)["detail"]


def _decode_live(entries: list[dict], shape: tuple[int, int]) -> dict[tuple[int, int], np.ndarray]:
    """The live entries applied in order: (slice, label) -> its (H, W) mask."""
    from sam2med.monailabel.progress import rle_decode

    assert [e["seq"] for e in entries] == list(range(len(entries)))
    return {(e["axis_index"], e["label"]): rle_decode(e["rle"], shape) for e in entries}


def test_live_slices_are_polled_before_the_answer_and_end_as_the_answer(server, tmp_path):
    url = server["url"]
    progress_id = requests.post(f"{url}/sam2med/progress", timeout=30).json()["progress_id"]
    client = MONAILabelClient(url, tmpdir=str(tmp_path))
    slice_range = (CT_RANGE[0] - 4, CT_RANGE[1] + 4)
    params = {"slice_range": list(slice_range), "progress_id": progress_id, "label_info": [
        {"name": "spleen", "idx": 3}, {"name": "liver", "idx": 9}]}  # the client's values: 3 and 9
    seed, seed_image = _read_xyz(str(server["ct_seed"]))
    seed_path = _write_like(np.select([seed == 1, seed == 5], [3, 9], 0).astype(np.uint8), seed_image, tmp_path / "seed39.nii.gz")
    deadline = time.time() + 300
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(client.infer, "sam2_propagate", "ct", params, label_in=str(seed_path))
        seen, before_answer, since = [], 0, 0
        while time.time() < deadline:
            answered = answer.done()
            polled = requests.get(f"{url}/sam2med/progress/{progress_id}", params={"since": since}, timeout=30).json()
            assert [e["seq"] for e in polled["slices"]] == list(range(since, polled["next"]))
            seen += polled["slices"]
            since = polled["next"]
            if not answered:
                before_answer = len(seen)
            if answered and polled["stage"] in ("done", "failed"):
                break
            time.sleep(0.05)
        out, report = answer.result()
    assert before_answer > 0, "no slice was published before the answer"
    label, _ = _read_xyz(out)
    height, width = label.shape[1], label.shape[0]  # axial slices: (y, x)
    assert polled["slice_shape"] == [height, width]
    live = _decode_live(seen, (height, width))
    assert {k for k, _ in live} == set(range(slice_range[0], slice_range[1] + 1))  # every tracked slice
    assert {v for _, v in live} == {3, 9}
    for (k, value), mask in live.items():
        np.testing.assert_array_equal(mask, label[..., k].T == value, err_msg=f"slice {k} label {value}")
    assert np.any([m.any() for m in live.values()])
    # the first published slices are the seed's, then tracking goes outward from it
    assert seen[0]["axis_index"] == CT_SLICE and report["seed_slices"] == [CT_SLICE]
