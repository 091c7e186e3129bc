"""The `ordered` strategy and the guarded datastore, on a real MONAI Label local datastore."""

from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk
from fastapi import HTTPException

from sam2med.monailabel.datastore import GuardedLocalDatastore
from sam2med.monailabel.strategies import Ordered, natural_key


def _image(path, shape=(6, 5, 4)):
    image = sitk.GetImageFromArray(np.zeros(shape[::-1], np.int16))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture()
def store(tmp_path):
    for name in ("case10", "case2", "case1", "case3"):
        _image(tmp_path / f"{name}.nii.gz")
    return GuardedLocalDatastore(str(tmp_path), extensions=["*.nii.gz"], auto_reload=False)


def test_natural_order():
    assert sorted(["case10", "case2", "Case1"], key=natural_key) == ["Case1", "case2", "case10"]


def test_ordered_follows_the_last_labeled_image_and_wraps(store, tmp_path):
    strategy = Ordered()
    first = strategy({"strategy": "ordered"}, store)
    assert first["id"] == "case1" and "no image is labeled yet" in first["reason"]
    label = _image(tmp_path / "label.nii.gz")
    store.save_label("case3", str(label), "final", {})
    assert strategy({}, store)["id"] == "case10"
    time.sleep(1.1)  # label timestamps are in seconds
    store.save_label("case10", str(label), "final", {})
    wrapped = strategy({}, store)
    assert wrapped["id"] == "case1" and "wrapped" in wrapped["reason"]


def test_raw_ohif_label_is_stored_as_nifti_on_the_image_grid(store, tmp_path):
    raw = np.zeros((6, 5, 4), np.uint8)
    raw[1, 2, 3] = 7
    path = tmp_path / "tmplabel.bin"
    raw.ravel(order="F").tofile(path)
    store.save_label("case2", str(path), "final", {})
    saved = store.get_label_uri("case2", "final")
    assert saved.endswith("case2.nii.gz")
    image = sitk.ReadImage(saved)
    assert image.GetDirection() == (-1, 0, 0, 0, -1, 0, 0, 0, 1)
    assert np.array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), raw)


def test_tags_and_ids_cannot_leave_the_datastore(store, tmp_path):
    label = _image(tmp_path / "label.nii.gz")
    with pytest.raises(HTTPException) as caught:
        store.save_label("case2", str(label), "../../outside", {})
    assert caught.value.status_code == 422 and "tag" in caught.value.detail
    with pytest.raises(HTTPException) as caught:
        store.save_label("nope", str(label), "final", {})
    assert caught.value.status_code == 404
    with pytest.raises(HTTPException) as caught:
        store.add_image("../escape", str(label), {})
    assert caught.value.status_code == 403
    assert not (tmp_path.parent / "outside").exists()


def _scores(store, image_id, object_score):
    from sam2med.monailabel.strategies import SCORES_KEY
    from sam2med.monailabel.uncertainty import score_record

    labels = {"1": [{"slice": 0, "object_score": 1.0, "iou": None, "area": 9, "seed": True},
                    {"slice": 1, "object_score": object_score, "iou": 0.9, "area": 8, "seed": False}]}
    store.update_image_info(image_id, {SCORES_KEY: score_record(labels, "tiny:test", "axial", 1)})


def test_uncertain_picks_the_least_confident_unreviewed_image_else_ordered(store, tmp_path):
    from sam2med.monailabel.strategies import Uncertain

    strategy = Uncertain()
    fallback = strategy({}, store)
    assert fallback["id"] == "case1" and fallback["reason"].startswith("no unreviewed image has SAM2 scores of the current model yet; ordered:")
    assert fallback["uncertainty"] is None and fallback["review_slices"] == []
    _scores(store, "case3", 0.9)
    _scores(store, "case10", 0.6)  # less confident
    picked = strategy({}, store)
    assert picked["id"] == "case10" and picked["uncertainty"] == pytest.approx(round(1 - 0.6 * 0.9, 4))
    assert picked["model_version"] == "tiny:test" and [r["slice"] for r in picked["review_slices"]] == [1]
    assert "least confident of 2" in picked["reason"]
    store.save_label("case10", str(_image(tmp_path / "label.nii.gz")), "final", {})  # submitted: reviewed
    assert store.get_image_info("case10")["sam2med_reviewed"]["ts"] > 0
    assert strategy({}, store)["id"] == "case3"
    store.save_label("case3", str(_image(tmp_path / "label.nii.gz")), "final", {})
    assert strategy({}, store)["reason"].startswith("no unreviewed image has SAM2 scores of the current model yet")


class _Versions:
    """A rescorer that knows the current version and re-scores nothing (the live-server tests run the real one)."""

    def __init__(self, version):
        self.version = version

    def current_version(self):
        return self.version

    def rescore_stale(self, image_ids, datastore, budget_seconds, is_stale):
        return [], [i for i in image_ids if is_stale(i)]


def test_uncertain_ranks_only_scores_of_the_current_model(store):
    from sam2med.monailabel.strategies import Uncertain

    _scores(store, "case3", 0.9)
    _scores(store, "case10", 0.1)  # far less confident, but scored by a model that is no longer served
    store.update_image_info("case10", {"sam2med_scores": {**store.get_image_info("case10")["sam2med_scores"],
                                                          "model_version": "tiny:old"}})
    picked = Uncertain(_Versions("tiny:test"))({}, store)
    assert picked["id"] == "case3" and "least confident of 1" in picked["reason"]
    assert "1 image(s) scored by an older model could not be re-scored yet" in picked["reason"]


def test_deleting_the_final_label_clears_reviewed(store, tmp_path):
    store.save_label("case2", str(_image(tmp_path / "label.nii.gz")), "final", {})
    assert "sam2med_reviewed" in store.get_image_info("case2")
    store.remove_label("case2", "final")
    assert "sam2med_reviewed" not in store.get_image_info("case2")
    assert "case2" in store.get_unlabeled_images("final")


def test_nan_in_the_datastore_file_reads_as_missing_and_is_never_written(store, tmp_path):
    import json

    store.update_image_info("case2", {"sam2med_scores": {"uncertainty": float("nan"), "x": [float("inf"), 1.0]}})
    written = (tmp_path / ".monailabel" / "datastore_v2.json").read_text() if (tmp_path / ".monailabel").is_dir() else \
        next(tmp_path.rglob("datastore_v2.json")).read_text()
    assert "NaN" not in written and "Infinity" not in written
    path = next(tmp_path.rglob("datastore_v2.json"))
    data = json.loads(path.read_text())
    data["objects"]["case3"]["image"]["info"]["sam2med_scores"] = {"uncertainty": float("nan")}
    path.write_text(json.dumps(data))  # NaN written by an older version
    reread = GuardedLocalDatastore(str(tmp_path), extensions=["*.nii.gz"], auto_reload=False)
    assert reread.get_image_info("case3")["sam2med_scores"] == {"uncertainty": None}
    assert reread.get_image_info("case2")["sam2med_scores"] == {"uncertainty": None, "x": [None, 1.0]}
    json.dumps(reread.json(), allow_nan=False)  # what /datastore/?output=all serves
