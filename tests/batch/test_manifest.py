"""Manifest parsing: CSV and JSONL, paths relative to the manifest, defaults, and every bad manifest refused."""

from __future__ import annotations

import json

import pytest

from sam2med.batch.manifest import read_manifest
from sam2med.prompts import range_groups
from sam2med.errors import InputError
from sam2med.geometry import Axis
from sam2med.prompts import RangeRequest


def write(path, text: str):
    path.write_text(text)
    return path


def test_csv_rows_with_relative_paths_defaults_and_every_column(tmp_path):
    (tmp_path / "cohort").mkdir()
    manifest = write(tmp_path / "cohort" / "rows.csv",
                     "image,seed,range,axis,window,labels,output\n"
                     "ct/a.nii.gz,seeds/a.nii.gz,20-60,coronal,lung,\"1,5\",a_liver.nrrd\n"
                     "/data/b_0000.nii.gz,b_seed.nii.gz,,,,,\n"
                     "\n"
                     "dicom/c,c.nii.gz,auto 5:3-9,sagittal,\"40,400\",2,\n")
    rows = read_manifest(manifest, tmp_path / "out")
    assert [r.number for r in rows] == [1, 2, 3]
    first, second, third = rows
    assert first.image == tmp_path / "cohort" / "ct" / "a.nii.gz" and first.seed == tmp_path / "cohort" / "seeds" / "a.nii.gz"
    assert first.output == tmp_path / "out" / "a_liver.nrrd"
    assert first.range == RangeRequest(plain=[20, 60]) and first.axis == Axis.CORONAL
    assert first.window == "lung" and first.labels == [1, 5]
    assert second.image.as_posix() == "/data/b_0000.nii.gz"  # absolute paths stay
    assert second.output == tmp_path / "out" / "b_0000_label.nii.gz"  # default: the image's name
    assert second.range == RangeRequest() and second.axis == Axis.AXIAL and second.window == "auto" and second.labels is None
    assert third.range == RangeRequest(specs=["5:3-9"], auto=True) and third.axis == Axis.SAGITTAL
    assert third.window == "40,400" and third.labels == [2]
    assert third.output == tmp_path / "out" / "c_label.nii.gz"


def test_jsonl_rows_take_lists_numbers_and_json_ranges(tmp_path):
    lines = [{"image": "a.nii.gz", "seed": "s.nii.gz", "range": {"5": [10, 40]}, "labels": [5], "output": "a.nii.gz"},
             {"image": "b.nii.gz", "seed": "s.nii.gz", "range": "3-7", "axis": None}]
    manifest = write(tmp_path / "rows.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    first, second = read_manifest(manifest, tmp_path / "out")
    assert first.range.specs == ['{"5": [10, 40]}'] and first.labels == [5] and first.image == tmp_path / "a.nii.gz"
    assert second.range.plain == [3, 7] and second.axis == Axis.AXIAL


def test_range_cells_become_the_range_option_groups():
    assert range_groups("") == []
    assert range_groups(" 10-40 ") == [["10", "40"]]
    assert range_groups("AUTO") == [["auto"]]
    assert range_groups("auto 2:3-9 liver:10-40") == [["auto"], ["2:3-9", "liver:10-40"]]
    assert range_groups('{"5": [1, 2]}') == [['{"5": [1, 2]}']]


@pytest.mark.parametrize("name, text, message", [
    ("rows.csv", "image,seed,colour\na,b,red\n", "unknown column(s) colour"),
    ("rows.csv", "image,seed\n", "the manifest has no rows"),
    ("rows.jsonl", "\n\n", "the manifest has no rows"),
    ("rows.csv", "image,seed\na.nii.gz,\n", "row 1: no seed"),
    ("rows.csv", "image,seed\na.nii.gz,s.nii.gz,extra\n", "more cells than the header"),
    ("rows.csv", "image,seed,axis\na.nii.gz,s.nii.gz,oblique\n", "row 1: unknown axis 'oblique'"),
    ("rows.csv", "image,seed,labels\na.nii.gz,s.nii.gz,liver\n", "row 1: labels must be integer label values"),
    ("rows.csv", "image,seed,range\na.nii.gz,s.nii.gz,40\n", "row 1: range 40: give START END"),
    ("rows.csv", "image,seed,range\na.nii.gz,s.nii.gz,auto 3-9\n", "row 1: range auto and range START END"),
    ("rows.csv", "image,seed,window\na.nii.gz,s.nii.gz,sunny\n", "row 1:"),
    ("rows.csv", "image,seed,output\na.nii.gz,s.nii.gz,../a.nii.gz\n", "must be a name inside the output folder"),
    ("rows.csv", "image,seed,output\na.nii.gz,s.nii.gz,a.png\n", "output 'a.png': use one of"),
    ("rows.csv", "image,seed\nx/a.nii.gz,s.nii.gz\ny/a.nii.gz,t.nii.gz\n", "rows 1 and 2 both write a_label.nii.gz"),
    ("rows.jsonl", '{"image": "a", "seed": "b"}\n[1, 2]\n', "line 2 is not a JSON object"),
    ("rows.jsonl", '{"image": "a", "seed": \n', "line 1 is not a JSON object"),
    ("rows.txt", "image,seed\na,b\n", "a manifest is a .csv"),
])
def test_bad_manifests_are_refused_with_one_line(tmp_path, name, text, message):
    with pytest.raises(InputError) as err:
        read_manifest(write(tmp_path / name, text), tmp_path / "out")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such manifest"):
        read_manifest(tmp_path / "absent.csv", tmp_path)
