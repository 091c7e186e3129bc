"""The 3D Slicer MONAI Label plugin's requests, replayed as its code sends them, against the real server.

The server has named, non-consecutive labels ({"liver": 5, "spleen": 1}); the plugin creates one segment
per name of /info/ `labels`, exports segment k as value k with `label_info` naming each value, sends every
option of the model's table (Options) with the first choice of a list, and imports an answer by mapping
value k to the k-th name of `label_names` sorted by value (`ImportLabelmapToSegmentationNode` with those
segment ids), or, for a SmartEdit click, value 1 to the clicked segment. Random weights at 256 px: these
tests check values, names, slices and boxes, never segmentation quality.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from monailabel.client import MONAILabelClient

from live_server import http_error, running_server, small_server_args
from test_server import _dice, _read_xyz

pytestmark = pytest.mark.integration

SEEDS, FIXED, RANGE = (15, 17), 16, "14-18"
LIVER, SPLEEN = 5, 1  # values of the TotalSegmentator label map (and of the server's --labels)


@pytest.fixture(scope="module")
def server(shared_data, random_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("slicer")
    studies = root / "studies"
    studies.mkdir()
    ts = shared_data / "totalsegmentator"
    shutil.copy(ts / "example_ct_sm.nii.gz", studies / "ct.nii.gz")
    shutil.copy(ts / "example_ct_sm.nii.gz", studies / "unlabelled.nii.gz")
    labels = '{"liver": 5, "spleen": 1}'
    with running_server(small_server_args(studies, random_checkpoint, labels), root / "server.log", {}) as url:
        yield {"url": url, "studies": studies, "root": root, "truth": _read_xyz(str(ts / "example_seg.nii.gz"))[0]}


@pytest.fixture()
def client(server, tmp_path) -> MONAILabelClient:
    return MONAILabelClient(server["url"], tmpdir=str(tmp_path))


def options(info: dict, section: str, name: str, **edited) -> dict:
    """`getParamsFromConfig`: the table's values (a list stands for its first choice), with the user's edits."""
    params = {k: v[0] if isinstance(v, list) else v for k, v in info[section][name]["config"].items()}
    params.update(edited)
    return params


def run(client: MONAILabelClient, model: str, image: str, params: dict) -> tuple[str | None, dict]:
    """`MONAILabelLogic.infer`: the plugin always asks for a uint8 NRRD."""
    return client.infer(model, image, {**params, "result_extension": ".nrrd", "result_dtype": "uint8"})


def export(segments: dict[str, np.ndarray], reference: Path, path: Path) -> list[dict]:
    """`onSaveLabel`: segment k (in the segmentation's order) as value k, and its `label_info`."""
    label = np.zeros(next(iter(segments.values())).shape, np.uint8)
    label_info = []
    for idx, (name, mask) in enumerate(segments.items()):
        label[mask] = idx + 1
        label_info.append({"name": name, "idx": idx + 1})
    image = sitk.GetImageFromArray(label.transpose(2, 1, 0))
    image.CopyInformation(sitk.ReadImage(str(reference)))
    sitk.WriteImage(image, str(path))
    return label_info


def import_answer(result_file: str, names: list[str], segments: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`updateSegmentationMask`: value k replaces the segment named `names[k-1]`; a name with no segment is dropped."""
    label, _ = _read_xyz(result_file)
    imported = dict(segments)
    for k, name in enumerate(names, start=1):
        if name in imported:
            imported[name] = label == k
    return imported


def sorted_names(label_names: dict) -> list[str]:
    return [k for k, _ in sorted(label_names.items(), key=lambda item: item[1])]


def test_named_segments_round_trip_through_submit_run_correct_and_train(client, server, tmp_path):
    info = client.info()
    segment_names = info["labels"]  # the plugin's segments, created from /info/ in this order
    assert segment_names == ["spleen", "liver"]
    truth, ct = server["truth"], server["studies"] / "ct.nii.gz"
    drawn = {"spleen": np.zeros(truth.shape, bool), "liver": np.zeros(truth.shape, bool)}
    for s in SEEDS:
        drawn["spleen"][..., s] = truth[..., s] == SPLEEN
        drawn["liver"][..., s] = truth[..., s] == LIVER
    label_info = export(drawn, ct, tmp_path / "submitted.nrrd")
    assert label_info == [{"name": "spleen", "idx": 1}, {"name": "liver", "idx": 2}]  # liver exported as 2, not 5
    client.save_label("ct", str(tmp_path / "submitted.nrrd"), params={"label_info": label_info, "model": "sam2_propagate"})

    # Run (Auto Segmentation), slice_range typed into Options
    out, answer = run(client, "sam2_propagate", "ct", options(info, "models", "sam2_propagate", slice_range=RANGE))
    assert answer["label_names"] == {"spleen": 1, "liver": 2}
    assert answer["label_info"] == [{"name": "spleen", "value": 1, "server_value": 1},
                                    {"name": "liver", "value": 2, "server_value": 5}]
    assert {k: v["name"] for k, v in answer["labels"].items()} == {"1": "spleen", "2": "liver"}
    segments = import_answer(out, sorted_names(answer["label_names"]), {name: np.zeros(truth.shape, bool) for name in segment_names})
    for name in segment_names:
        other = "liver" if name == "spleen" else "spleen"
        for s in SEEDS:
            assert _dice(segments[name][..., s], drawn[name][..., s]) >= 0.9, f"{name} on its drawn slice {s}"
            assert not (segments[name][..., s] & drawn[other][..., s]).any(), f"{name} on {other}'s voxels"
        assert not segments[name][..., :14].any() and not segments[name][..., 19:].any()

    # correct the liver on one slice (away from the spleen), leave everything else as imported, Submit Label, Run
    corrected = {name: mask.copy() for name, mask in segments.items()}
    corrected["liver"][..., FIXED] = (truth[..., FIXED] == LIVER) & ~segments["spleen"][..., FIXED]
    assert not np.array_equal(corrected["liver"][..., FIXED], segments["liver"][..., FIXED])
    label_info = export(corrected, ct, tmp_path / "corrected.nrrd")
    client.save_label("ct", str(tmp_path / "corrected.nrrd"), params={"label_info": label_info, "model": "sam2_propagate"})
    out, again = run(client, "sam2_propagate", "ct", options(info, "models", "sam2_propagate", slice_range=RANGE))
    assert again["correction"] == {"changed_slices": {"1": [], "2": [FIXED]},
                                   "kept_seed_slices": {"1": list(SEEDS), "2": list(SEEDS)}}
    assert again["seed_slices_per_label"] == {"1": list(SEEDS), "2": sorted([*SEEDS, FIXED])}
    rerun = import_answer(out, sorted_names(again["label_names"]), corrected)
    # the corrected slice comes back in the liver segment, not another one (where the propagated spleen does not
    # overlap it: that is the overlap policy's matter); its mask passes through the 256 px model input
    drawn_liver = corrected["liver"][..., FIXED]
    came_back = rerun["liver"][..., FIXED] | (rerun["spleen"][..., FIXED] & drawn_liver)
    assert _dice(came_back, drawn_liver) >= 0.8 and (rerun["liver"][..., FIXED] & drawn_liver).sum() > drawn_liver.sum() / 2

    # Train (the plugin sends the trainer's table): both named labels are learned from the submitted values
    client.train_start("sam2_finetune", options(info, "trainers", "sam2_finetune", max_epochs=2, val_fraction=0))
    deadline = time.time() + 300
    while client.train_status(check_if_running=True) is True or client.train_status().get("status") in ("SUBMITTED", "RUNNING"):
        assert time.time() < deadline, "training did not finish"
        time.sleep(0.5)
    assert client.train_status()["status"] == "DONE", client.train_status()
    stats = client.info()["train_stats"]["sam2_finetune"]
    assert stats["labels"] == {"spleen": 1, "liver": 1}, stats
    assert "best_metric" not in stats, "no validation image: no accuracy to draw (never a negative loss)"


def _plugin_roi(reference: Path, low_ijk: tuple[int, int, int], high_ijk: tuple[int, int, int]) -> list[int]:
    """`getROIPointsXYZ` for an ROI drawn around voxels low..high: its RAS corners back to IJK, [x0, x1, y0, y1, z0, z1]."""
    image = sitk.ReadImage(str(reference))
    corners_lps = [image.TransformContinuousIndexToPhysicalPoint([v + d for v in corner])
                   for corner, d in ((low_ijk, -0.5), (high_ijk, 0.5))]
    ras = [[-p[0], -p[1], p[2]] for p in corners_lps]
    ras_min = [min(a, b) for a, b in zip(*ras)]
    ras_max = [max(a, b) for a, b in zip(*ras)]
    to_ijk = [image.TransformPhysicalPointToContinuousIndex([-c[0], -c[1], c[2]]) for c in (ras_min, ras_max)]
    mins, maxs = [round(v) for v in to_ijk[0]], [round(v) for v in to_ijk[1]]
    return [v for pair in zip(mins, maxs) for v in pair]


def test_smartedit_click_with_the_roi_tool_stays_in_the_box_and_lands_in_the_segment(client, server):
    info = client.info()
    truth, ct = server["truth"], server["studies"] / "ct.nii.gz"
    liver = truth == LIVER
    xs, ys = np.nonzero(liver[..., FIXED])
    low, high = (int(xs.min()) - 2, int(ys.min()) - 2, FIXED - 1), (int(xs.max()) + 2, int(ys.max()) + 2, FIXED + 1)
    roi = _plugin_roi(ct, low, high)
    click = [int(np.median(xs)), int(np.median(ys)), FIXED]
    assert liver[click[0], click[1], FIXED]
    params = {"label": "liver", "foreground": [click], "background": [],
              **options(info, "models", "sam2_points"), "roi": roi}
    assert params["roi_order"] == "x0,x1,y0,y1,z0,z1" and params["slice_range"] == "" and params["label_value"] == 1
    out, answer = run(client, "sam2_points", "ct", params)
    assert answer["roi_order"] == "x0,x1,y0,y1,z0,z1" and answer["label_names"] == {"liver": 1}
    label, _ = _read_xyz(out)
    assert set(np.unique(label)) <= {0, 1}, "one segment: value 1, imported into the clicked segment"
    segment = import_answer(out, ["liver"], {"liver": np.zeros(truth.shape, bool)})["liver"]
    (x0, x1), (y0, y1), (z0, z1) = [sorted(roi[i : i + 2]) for i in (0, 2, 4)]
    inside = np.zeros(truth.shape, bool)
    inside[x0 : x1 + 1, y0 : y1 + 1, z0 : z1 + 1] = True
    for a, (first, last) in enumerate(((x0, x1), (y0, y1), (z0, z1))):  # the drawn box, give or take the plugin's rounding
        assert low[a] - 1 <= first <= low[a] and high[a] <= last <= high[a] + 1
    assert not (segment & ~inside).any(), "the result stays inside the roi box"
    assert answer["slice_range"] == [z0, z1] and answer["prompt_slices"] == list(range(z0, z1 + 1))

    # a click with no range and no roi: a bounded neighbourhood, said in the answer
    params = {"label": "liver", "foreground": [click], "background": [], **options(info, "models", "sam2_points")}
    out, answer = run(client, "sam2_points", "ct", params)
    assert answer["slice_range"] == [FIXED - 10, min(29, FIXED + 10)] and "10 slices either side" in answer["message"]
    label, _ = _read_xyz(out)
    assert not label[..., : FIXED - 10].any()


def test_auto_run_on_an_unlabelled_sample_is_a_no_op_with_a_message(client, server):
    info = client.info()
    out, answer = run(client, "sam2_propagate", "unlabelled", options(info, "models", "sam2_propagate"))
    assert answer["seed"] is None and "no seed" in answer["message"] and "nothing was run" in answer["message"]
    # the plugin needs a file (its save_result iterates the answer's files); an empty one, named only background,
    # which updateSegmentationMask drops: no segment is cleared or added
    label, image = _read_xyz(out)
    assert not label.any() and label.shape == server["truth"].shape
    assert [n for n in sorted_names(answer["label_names"]) if n != "background"] == []
    with pytest.raises(Exception) as caught:  # a REST client that does not say no_seed: a 422
        client.infer("sam2_propagate", "unlabelled", {})
    status, body = http_error(caught.value)
    assert status == 422 and "no seed" in json.loads(body)["detail"]


def test_label_info_that_is_not_one_is_refused_at_submit(client, server, tmp_path):
    ct = server["studies"] / "ct.nii.gz"
    export({"liver": server["truth"] == LIVER}, ct, tmp_path / "l.nrrd")
    with pytest.raises(Exception) as caught:
        client.save_label("unlabelled", str(tmp_path / "l.nrrd"),
                          params={"label_info": [{"name": "liver", "idx": 1}, {"name": "liver", "idx": 2}]})
    status, body = http_error(caught.value)
    assert status == 422 and json.loads(body)["detail"] == "label_info names 'liver' twice"
    assert "final" not in client.datastore()["objects"]["unlabelled"]["labels"]


def test_label_info_sent_with_an_uploaded_seed_answers_in_the_clients_values(client, server, tmp_path):
    truth, ct = server["truth"], server["studies"] / "ct.nii.gz"
    drawn = {"liver": np.zeros(truth.shape, bool), "spleen": np.zeros(truth.shape, bool)}
    drawn["liver"][..., FIXED], drawn["spleen"][..., FIXED] = truth[..., FIXED] == LIVER, truth[..., FIXED] == SPLEEN
    export(drawn, ct, tmp_path / "seed.nii.gz")  # liver 1, spleen 2
    params = {"slice_range": [FIXED - 1, FIXED + 1], "label_info": {"liver": 1, "spleen": 2}, "labels": "liver"}
    out, answer = client.infer("sam2_propagate", "ct", params, label_in=str(tmp_path / "seed.nii.gz"))
    label, _ = _read_xyz(out)
    assert set(np.unique(label)) == {0, 1}, "`labels` names the server's label; the answer holds the client's value"
    # spleen keeps its place (value 2) under a name no segment has: the plugin leaves the spleen segment alone
    assert answer["label_names"] == {"liver": 1, "spleen (not in this result)": 2} and answer["labels"]["1"]["name"] == "liver"
    imported = import_answer(out, sorted_names(answer["label_names"]), drawn)
    assert _dice(imported["liver"][..., FIXED], drawn["liver"][..., FIXED]) >= 0.9
    np.testing.assert_array_equal(imported["spleen"], drawn["spleen"])
    with pytest.raises(Exception) as caught:
        client.infer("sam2_propagate", "ct", {**params, "label_info": {"liver": 1}}, label_in=str(tmp_path / "seed.nii.gz"))
    status, body = http_error(caught.value)
    assert status == 422 and json.loads(body)["detail"] == \
        "the seed holds label value(s) 2 that label_info does not name (it names 1)"
