"""Pairing images with labels by name, and label names from --labels-map."""

from __future__ import annotations

import json

import pytest

from sam2med.errors import InputError
from sam2med.evaluation.labelmap import read_labels_map, resolve_labels
from sam2med.evaluation.pairing import pair_cases


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_pairs_by_name_nnunet_and_dicom_folder(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    touch(images / "a.nii.gz"), touch(labels / "a.nii.gz")
    touch(images / "b_0000.nii.gz"), touch(labels / "b.nrrd")
    touch(images / "c" / "IM0001.dcm"), touch(labels / "c.nii")
    touch(images / "d.nii.gz")  # no label: kept, reported as failed later
    touch(labels / "e.nii.gz")  # no image: ignored with a warning
    touch(images / ".hidden.nii.gz"), touch(images / "notes.txt")
    cases = {c.name: c for c in pair_cases(images, labels)}
    assert sorted(cases) == ["a", "b", "c", "d"]
    assert cases["b"].image.name == "b_0000.nii.gz" and cases["b"].label.name == "b.nrrd"
    assert cases["c"].image.is_dir() and cases["c"].label.name == "c.nii"
    assert cases["d"].label is None


def test_empty_or_unpairable_folders_are_input_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    touch(tmp_path / "labels" / "x.nii.gz")
    with pytest.raises(InputError, match="empty"):
        pair_cases(tmp_path / "empty", tmp_path / "labels")
    with pytest.raises(InputError, match="does not exist"):
        pair_cases(tmp_path / "missing", tmp_path / "labels")
    touch(tmp_path / "images" / "y.nii.gz")
    with pytest.raises(InputError, match="same name"):
        pair_cases(tmp_path / "images", tmp_path / "labels")


def test_labels_map_forms(tmp_path):
    flat_names = tmp_path / "names.json"
    flat_names.write_text(json.dumps({"liver": 5, "spleen": 1}))
    flat_values = tmp_path / "values.json"
    flat_values.write_text(json.dumps({"5": "liver", "1": "spleen"}))
    nested = tmp_path / "labels.json"
    nested.write_text(json.dumps({"total": {"5": "liver"}, "total_mr": {"6": "stomach"}}))
    assert read_labels_map(str(flat_names)) == {5: "liver", 1: "spleen"}
    assert read_labels_map(str(flat_values)) == {5: "liver", 1: "spleen"}
    assert read_labels_map(f"{nested}:total_mr") == {6: "stomach"}
    with pytest.raises(InputError, match="several maps"):
        read_labels_map(str(nested))
    with pytest.raises(InputError, match="no map named"):
        read_labels_map(f"{nested}:ct")
    with pytest.raises(InputError, match="not found"):
        read_labels_map(str(tmp_path / "none.json"))


def test_shared_labels_json(shared_data):
    names = read_labels_map(f"{shared_data}/totalsegmentator/labels.json:total")
    assert names[5] == "liver" and names[1] == "spleen"


def test_resolve_labels_by_value_or_name():
    names = {5: "liver", 1: "spleen"}
    assert resolve_labels(None, names) is None
    assert resolve_labels(["Liver", "1", "5"], names) == [5, 1]
    with pytest.raises(InputError, match="kidney"):
        resolve_labels(["kidney"], names)
    with pytest.raises(InputError, match="labels-map"):
        resolve_labels(["liver"], {})


def test_a_file_is_never_paired_with_itself(tmp_path):
    folder = tmp_path / "ts"
    touch(folder / "example_ct_sm.nii.gz"), touch(folder / "example_seg.nii.gz")
    with pytest.raises(InputError, match="same folder .* paired with itself"):
        pair_cases(folder, folder)
    with pytest.raises(InputError, match="same folder"):
        pair_cases(folder, tmp_path / "." / "ts")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "example_ct_sm.nii.gz").symlink_to(folder / "example_ct_sm.nii.gz")
    with pytest.raises(InputError, match="example_ct_sm: the image and the label map are the same file"):
        pair_cases(folder, tmp_path / "labels")
