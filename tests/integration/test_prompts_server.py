"""`prompts` and `crop_to_change` of POST /infer/sam2_propagate on the real server (`main.py serve`), through
MONAI Label's own client, as the OHIF panel sends them: voxel points (x, y, z), gestures per label.

Random weights (SAM2.1-tiny at 256 px): the assertions are about the slices whose output is fixed by the
prompts (a lasso's fill, a seed minus a negative lasso), the grid and the cropped file's place in space.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from monailabel.client import MONAILabelClient

from live_server import http_error, running_server, small_server_args
from test_server import _write_like

pytestmark = pytest.mark.integration

SLICE, RANGE = 16, [14, 18]


def _square(x0: float, x1: float, y0: float, y1: float, z: int) -> list[list[float]]:
    return [[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]]


def _fill(shape: tuple[int, int, int], x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """(x, y) bool of the voxel centres strictly inside the square (its corners are at half voxels)."""
    xs, ys = np.arange(shape[0])[:, None], np.arange(shape[1])[None, :]
    return (xs > x0) & (xs < x1) & (ys > y0) & (ys < y1)


def _read_xyz(path: str) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), image


@pytest.fixture(scope="module")
def server(shared_data, random_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("prompts_server")
    studies = root / "studies"
    studies.mkdir()
    ts = shared_data / "totalsegmentator"
    shutil.copy(ts / "example_ct_sm.nii.gz", studies / "ct.nii.gz")
    truth, label = _read_xyz(str(ts / "example_seg.nii.gz"))
    seed = np.zeros_like(truth, dtype=np.uint8)
    seed[..., SLICE][truth[..., SLICE] == 5] = 5  # the liver on one axial slice
    _write_like(seed, label, root / "seed.nii.gz")
    args = small_server_args(studies, random_checkpoint, '{"spleen": 1, "liver": 5}')
    with running_server(args, root / "server.log", {"TMPDIR": str(root)}) as url:
        yield {"url": url, "image": studies / "ct.nii.gz", "seed": root / "seed.nii.gz", "seed_xyz": seed,
               "truth": ts / "example_seg.nii.gz"}


@pytest.fixture()
def client(server, tmp_path) -> MONAILabelClient:
    return MONAILabelClient(server["url"], tmpdir=str(tmp_path))


def test_prompts_alone_condition_the_run_without_a_seed(server, client):
    lasso = _square(30.5, 60.5, 40.5, 70.5, SLICE)
    params = {"slice_range": RANGE, "prompts": [
        {"label": "liver", "kind": "lasso", "positive": True, "points": lasso},
        {"label": 1, "kind": "click", "positive": True, "points": [[95.0, 50.0, 15.2]]},
    ]}
    out, report = client.infer("sam2_propagate", "ct", params)
    label, result = _read_xyz(out)
    image = sitk.ReadImage(str(server["image"]))
    assert result.GetSize() == image.GetSize()
    np.testing.assert_allclose(result.GetOrigin(), image.GetOrigin(), atol=1e-4)
    # the lasso-only slice is the filled polygon, exactly where it was drawn
    np.testing.assert_array_equal(label[..., SLICE] == 5, _fill(label.shape, 30.5, 60.5, 40.5, 70.5))
    assert not label[..., : RANGE[0]].any() and not label[..., RANGE[1] + 1 :].any()
    assert report["seed"] is None and report["prompts"] == 2
    assert report["seed_slices_per_label"] == {"1": [15], "5": [SLICE]}
    assert report["kept_slices"] == {"liver": [SLICE]}
    changed = np.argwhere(label != 0)
    assert report["changed_box"] == [changed.min(axis=0).tolist(), changed.max(axis=0).tolist()] and not report["cropped"]


def test_prompts_and_seed_combine_per_label_and_slice_and_crop_to_change_places_the_box(server, client):
    seed = server["seed_xyz"]
    liver = np.argwhere(seed[..., SLICE] == 5)
    cx, cy = (int(v) for v in liver.mean(axis=0))
    hole = (cx - 6.5, cx + 6.5, cy - 5.5, cy + 5.5)
    params = {"slice_range": RANGE, "result_extension": ".nrrd", "prompts": [
        {"label": 5, "kind": "lasso", "positive": False, "points": _square(*hole, SLICE)},
        {"label": "spleen", "kind": "lasso", "positive": True, "points": _square(cx - 3.5, cx + 3.5, cy - 2.5, cy + 2.5, SLICE)},
    ]}
    out, report = client.infer("sam2_propagate", "ct", params, label_in=str(server["seed"]))
    full, _ = _read_xyz(out)
    expected_liver = (seed[..., SLICE] == 5) & ~_fill(seed.shape, *hole)
    assert (seed[..., SLICE] == 5).sum() > expected_liver.sum() > 0
    np.testing.assert_array_equal(full[..., SLICE] == 5, expected_liver)  # the seed, less the negative lasso
    np.testing.assert_array_equal(full[..., SLICE] == 1, _fill(seed.shape, cx - 3.5, cx + 3.5, cy - 2.5, cy + 2.5))
    assert report["seed"] == "upload" and report["seed_slices_per_label"] == {"1": [SLICE], "5": [SLICE]}

    low, high = report["changed_box"]
    changed = np.argwhere(full != seed)
    assert [changed.min(axis=0).tolist(), changed.max(axis=0).tolist()] == [low, high]

    out_crop, cropped_report = client.infer("sam2_propagate", "ct", {**params, "crop_to_change": True}, label_in=str(server["seed"]))
    assert out_crop.endswith(".nrrd") and cropped_report["cropped"] and cropped_report["changed_box"] == [low, high]
    cropped, crop_image = _read_xyz(out_crop)
    box = tuple(slice(a, b + 1) for a, b in zip(low, high))
    assert cropped.shape == tuple(b - a + 1 for a, b in zip(low, high))
    np.testing.assert_array_equal(cropped, full[box])
    image = sitk.ReadImage(str(server["image"]))
    # every cropped voxel lies at the patient position of the same voxel of the whole image
    np.testing.assert_allclose(crop_image.GetOrigin(), image.TransformIndexToPhysicalPoint([int(v) for v in low]), atol=1e-4)
    np.testing.assert_allclose(crop_image.TransformIndexToPhysicalPoint([int(v) for v in np.subtract(high, low)]),
                               image.TransformIndexToPhysicalPoint([int(v) for v in high]), atol=1e-4)
    np.testing.assert_allclose(crop_image.GetSpacing(), image.GetSpacing())
    np.testing.assert_allclose(crop_image.GetDirection(), image.GetDirection())


def test_a_sagittal_lasso_propagates_along_x_and_is_drawn_at_its_y_z(client):
    x, (y0, y1), (z0, z1) = 60, (40.5, 60.5), (10.5, 20.5)
    lasso = [[x, y0, z0], [x, y1, z0], [x, y1, z1], [x, y0, z1]]
    out, report = client.infer("sam2_propagate", "ct", {"axis": "sagittal", "slice_range": [x - 1, x + 1],
                                                         "prompts": [{"label": 5, "kind": "lasso", "points": lasso}]})
    label, _ = _read_xyz(out)
    ys, zs = np.arange(label.shape[1])[:, None], np.arange(label.shape[2])[None, :]
    np.testing.assert_array_equal(label[x] == 5, (ys > y0) & (ys < y1) & (zs > z0) & (zs < z1))
    assert not label[: x - 1].any() and not label[x + 2 :].any()  # only the x range
    assert report["axis"] == "sagittal" and report["seed_slices_per_label"] == {"5": [x]}


@pytest.mark.parametrize("params, detail", [
    ({"prompts": [{"label": 5, "kind": "click", "points": [[10, 10, 16]]},
                  {"label": 5, "kind": "scribble", "points": [[10, 10, 16], [12, 10, 17.6]]}]}, "prompt 1: its points lie on axial slices 16..18"),
    ({"prompts": [{"label": 5, "kind": "box", "positive": False, "points": [[1, 1, 16], [9, 9, 16]]}]}, "prompt 0: a box is positive only"),
    ({"prompts": [{"label": "kidney", "kind": "click", "points": [[10, 10, 16]]}]}, "prompt 0: unknown label name 'kidney'"),
    ({"prompts": [{"label": 5, "kind": "tap", "points": [[10, 10, 16]]}]}, "prompt 0: kind must be one of click, box, scribble, lasso"),
    ({"prompts": [{"label": 5, "kind": "click", "points": [[10, 10, 99]]}]}, "prompt 0: point [10.0, 10.0, 99.0] is outside the image"),
    ({"prompts": {"label": 5}}, "prompts must be a list"),
    ({"slice_range": RANGE, "prompts": [{"label": 5, "kind": "click", "points": [[10, 10, 25]]}]}, "outside the slice range 14..18"),
    ({"prompts": [{"label": 5, "kind": "click", "positive": False, "points": [[10, 10, 16]]}]}, "has only negative prompts"),
    ({"labels": "spleen", "prompts": [{"label": 5, "kind": "click", "points": [[10, 10, 16]]}]}, "prompts for label(s) ['liver' (value 5)], which are not in labels ['spleen' (value 1)]"),
    ({"locked_labels": "liver", "prompts": [{"label": 5, "kind": "click", "points": [[10, 10, 16]]}]}, "are locked"),
    ({"slice_range": RANGE}, "no seed"),
])
def test_bad_prompts_are_a_one_line_4xx_naming_the_prompt(client, params, detail):
    with pytest.raises(Exception) as caught:
        client.infer("sam2_propagate", "ct", params)
    status, body = http_error(caught.value)
    assert status == 422 and detail in body and "\\n" not in body


def test_prompts_alone_ignore_a_stored_label_unless_its_seed_tag_is_named(server, client, tmp_path):
    """The OHIF panel sends prompts and no label when nothing is painted: a label saved earlier (another
    client's, named otherwise) must not become part of the seed, nor its label_info the client's names."""
    import requests

    stored = np.zeros_like(server["seed_xyz"])
    stored[20:40, 20:40, SLICE] = 7  # a label value the app does not name, saved with a name of its own
    stored_path = str(_write_like(stored, sitk.ReadImage(str(server["image"])), tmp_path / "stored.nii.gz"))
    client.save_label("ct", stored_path, tag="final", params={"label_info": [{"name": "kidney", "idx": 7}]})
    try:
        lasso = _square(60.5, 80.5, 40.5, 70.5, SLICE)
        params = {"slice_range": RANGE, "prompts": [{"label": 5, "kind": "lasso", "positive": True, "points": lasso}]}
        out, report = client.infer("sam2_propagate", "ct", params)
        label, _ = _read_xyz(out)
        assert report["seed"] is None and report["seed_slices_per_label"] == {"5": [SLICE]}
        np.testing.assert_array_equal(label[..., SLICE], np.where(_fill(label.shape, 60.5, 80.5, 40.5, 70.5), 5, 0))

        # named, the stored label joins the prompts; its saved names map the client's values to the app's
        out, report = client.infer("sam2_propagate", "ct", {**params, "seed_tag": "final", "prompts": [
            {"label": 7, "kind": "lasso", "positive": True, "points": lasso}]})
        label, _ = _read_xyz(out)
        assert report["seed"] == "datastore:final"
        np.testing.assert_array_equal(label[..., SLICE] == 7, (stored[..., SLICE] == 7) | _fill(label.shape, 60.5, 80.5, 40.5, 70.5))
        assert set(np.unique(label)) <= {0, 7}

        with pytest.raises(Exception) as caught:  # a prompt's value that the stored names do not give
            client.infer("sam2_propagate", "ct", {**params, "seed_tag": "final"})
        status, body = http_error(caught.value)
        assert status == 422 and "prompts for label value(s) 5 that label_info does not name (it names 7)" in body
    finally:
        requests.delete(f"{server['url']}/datastore/label", params={"id": "ct", "tag": "final"}, timeout=30).raise_for_status()


def test_a_box_with_slices_is_its_labels_range_and_bounds_it_on_its_slice(client):
    """The box-and-z-range gesture (a box on the middle slice plus the z-extent): the liver is tracked over the
    box's slices only, inside the box on its slice; the spleen's click, with no range of its own, over slice_range."""
    x0, x1, y0, y1 = 40.0, 90.0, 30.0, 80.0
    params = {"slice_range": [12, 20], "prompts": [
        {"label": "liver", "kind": "box", "points": [[x0, y0, SLICE], [x1, y1, SLICE]], "slices": [SLICE + 2, SLICE - 1]},
        {"label": "spleen", "kind": "click", "points": [[95.0, 50.0, 13]]}]}
    out, report = client.infer("sam2_propagate", "ct", params)
    label, _ = _read_xyz(out)
    liver_z = sorted({int(z) for z in np.nonzero(label == 5)[2]})
    assert liver_z and set(liver_z) <= set(range(SLICE - 1, SLICE + 3)), liver_z
    xs, ys = np.nonzero(label[..., SLICE] == 5)
    assert len(xs) and xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1
    spleen_z = {int(z) for z in np.nonzero(label == 1)[2]}
    assert spleen_z <= set(range(12, 21)) and 13 in spleen_z
    assert report["slice_range"] == [12, 20]


@pytest.mark.parametrize("prompts, extra, detail", [
    ([{"label": 5, "kind": "click", "points": [[10, 10, 16]], "slices": [14, 18]}], {}, "prompt 0: only a box takes slices"),
    ([{"label": 5, "kind": "box", "points": [[1, 1, 16], [9, 9, 16]], "slices": [14]}], {}, "prompt 0: slices must be [first, last]"),
    ([{"label": 5, "kind": "box", "points": [[1, 1, 16], [9, 9, 16]], "slices": [14, 99]}], {}, "prompt 0: slices 14..99 lie outside"),
    ([{"label": 5, "kind": "box", "points": [[1, 1, 16], [9, 9, 16]], "slices": [14, 18]},
      {"label": 5, "kind": "box", "points": [[1, 1, 17], [9, 9, 17]], "slices": [15, 18]}], {}, "label 'liver' (value 5) has two z-ranges"),
    ([{"label": 5, "kind": "box", "points": [[1, 1, 16], [9, 9, 16]], "slices": [17, 19]}], {}, "outside"),
    ([{"label": 5, "kind": "box", "points": [[1, 1, 16], [9, 9, 16]], "slices": [14, 18]}], {"slice_range": "liver:12-18"}, "give one"),
    ([{"label": 5, "kind": "box", "points": [[1, 1, 16], [9, 9, 16]], "slices": [14, 18]}], {"slice_range": "auto"}, "not with slice_range auto"),
])
def test_bad_box_slices_are_a_one_line_422(client, prompts, extra, detail):
    with pytest.raises(Exception) as caught:
        client.infer("sam2_propagate", "ct", {"prompts": prompts, **extra})
    status, body = http_error(caught.value)
    assert status == 422 and detail in body and "\\n" not in body, body


def test_refine_reruns_only_the_band_a_correction_can_change_and_keeps_the_rest(server, client, tmp_path):
    """Liver seeds on slices 12 and 20, spleen on 14; the result corrected on liver slice 16 and sent back with
    parent_state and refine: the liver is propagated again over 12..20 only (between the kept seeds around the
    correction), every other voxel is the submitted label, and the unchanged spleen is kept as submitted."""
    truth, _ = _read_xyz(str(server["truth"]))
    like = sitk.ReadImage(str(server["image"]))
    seed = np.zeros(truth.shape, dtype=np.uint8)
    for k in (12, 20):
        seed[..., k][truth[..., k] == 5] = 5
    seed[..., 14][truth[..., 14] == 1] = 1
    first_out, first = client.infer("sam2_propagate", "ct", {"slice_range": [8, 24]},
                                    label_in=str(_write_like(seed, like, tmp_path / "seed.nii.gz")))
    result, _ = _read_xyz(first_out)
    corrected = result.copy()
    redrawn = corrected[..., 16]  # the liver redrawn on slice 16, the spleen's voxels left as returned
    redrawn[redrawn == 5] = 0
    redrawn[(truth[..., 16] == 5) & (redrawn == 0)] = 5
    redrawn[40:60, 40:60][redrawn[40:60, 40:60] == 0] = 5  # surely not what was returned
    assert (corrected[..., 16] != result[..., 16]).any() and np.array_equal(corrected == 1, result == 1)
    params = {"slice_range": [8, 24], "parent_state": first["state_id"], "refine": True}
    out, report = client.infer("sam2_propagate", "ct", params,
                               label_in=str(_write_like(corrected, like, tmp_path / "corrected.nii.gz")))
    label, _ = _read_xyz(out)
    assert report["refine"] == {"bands": {"5": [12, 20]}, "unchanged_labels": [1]}, report["refine"]
    assert report["correction"]["changed_slices"] == {"1": [], "5": [16]} and report["labels"]["5"]["slice_range"] == [12, 20]
    assert report["seed_slices_per_label"] == {"5": [12, 16, 20]}
    outside = np.r_[0:12, 21:label.shape[2]]
    np.testing.assert_array_equal(label[..., outside], corrected[..., outside])  # the rest is as submitted
    np.testing.assert_array_equal(label == 1, corrected == 1)  # the unchanged spleen, everywhere
    for k in (12, 16, 20):  # the conditioning slices come back as drawn
        np.testing.assert_array_equal(label[..., k] == 5, corrected[..., k] == 5)
    assert report["slices_processed"] <= 9, report["slices_processed"]


def test_refine_with_prompts_alone_reruns_the_band_of_the_new_prompt(client):
    """No label sent, the prompts sent again with one more: the new click's slice is the change, the box's slice
    the kept seed; the liver is propagated from the box's slice to the range's end beyond the click only."""
    box = {"label": 5, "kind": "box", "points": [[40.0, 30.0, SLICE], [90.0, 80.0, SLICE]]}
    first_out, first = client.infer("sam2_propagate", "ct", {"slice_range": [10, 22], "prompts": [box]})
    click = {"label": 5, "kind": "click", "points": [[60.0, 50.0, 19]]}
    params = {"slice_range": [10, 22], "prompts": [box, click], "parent_state": first["state_id"], "refine": True}
    out, report = client.infer("sam2_propagate", "ct", params)
    assert report["correction"] == {"changed_slices": {"5": [19]}, "kept_seed_slices": {"5": [SLICE]}}, report["correction"]
    assert report["refine"] == {"bands": {"5": [SLICE, 22]}, "unchanged_labels": []}
    assert report["labels"]["5"]["slice_range"] == [SLICE, 22] and report["slices_processed"] == 22 - SLICE + 1
    label, _ = _read_xyz(out)
    assert not label[..., :SLICE].any()  # nothing was sent there: the client keeps what it shows (the OHIF panel paints the band)
    first_label, _ = _read_xyz(first_out)
    np.testing.assert_array_equal(label[..., SLICE] == 5, first_label[..., SLICE] == 5)  # the box's slice: the same prompt
    # the state remembers both prompts: sent again unchanged, nothing is new, and the run is a plain one
    again = client.infer("sam2_propagate", "ct", {**params, "parent_state": report["state_id"]})[1]
    assert "refine" not in again and again["correction"] == {"changed_slices": {"5": []}, "kept_seed_slices": {"5": [SLICE, 19]}}
