"""`main.py export`: a label on the example CT series as DICOM-SEG (read back exactly, codes present) or RTSTRUCT
(coded from a CSV label map); coded label maps and the TotalSegmentator SNOMED CT codes; bad input is one
`error:` line, exit 2 and no file."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from sam2med.cli import main
from sam2med.dicom.rtstruct import read_rtstruct
from sam2med.dicom.seg import read_seg
from sam2med.dicom.segment_map import coded_segments, read_segment_map
from sam2med.dicom.series import read_series_files, repair_series
from sam2med.errors import InputError
from sam2med.io import load_label, read_grid, save_label
from sam2med.prompts import seed_on_image_grid

LABELS = "labels.json"


@pytest.fixture(scope="module")
def case(shared_data):
    """The raw example series (blank UIDs, as shipped), its grid, the organ label on it, and the names."""
    d = shared_data / "totalsegmentator"
    series = d / "example_ct_dicom"
    grid = read_grid(series)
    organs = load_label(d / "example_seg_dicom.nii.gz")
    names = {int(k): v for k, v in json.loads((d / LABELS).read_text())["total"].items()}
    return d, series, grid, seed_on_image_grid(organs.array, organs.grid, grid), names


def run_export(capsys, *args) -> tuple[int, str, str]:
    code = main(["export", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


@pytest.mark.integration
def test_seg_export_reads_back_exactly_with_codes(case, tmp_path, capsys):
    d, series, grid, organs, names = case
    out = tmp_path / "organs_seg.dcm"
    code, stdout, err = run_export(capsys, d / "example_seg_dicom.nii.gz", "--reference", series, "--format", "seg", "-o", out,
                                   "--labels", f"{d / LABELS}:total", "--algorithm-version", "sam2.1_hiera_tiny sha256:0123abcd")
    assert code == 0, err
    assert "DICOM-SEG with 31 segment(s)" in stdout and "liver" in stdout
    back, _ = read_seg(out, grid)
    assert np.array_equal(back, organs)  # the NIfTI stored LAS, the series LPS: re-indexed exactly, no voxel lost

    seg = pydicom.dcmread(out)
    # the series' blank UIDs are referenced as an upload fills them (deterministic repair)
    files = read_series_files(series, pixels=False)
    repair_series(files)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == files[0].dataset.SeriesInstanceUID
    assert seg.StudyInstanceUID == files[0].dataset.StudyInstanceUID
    items = {int(item.SegmentNumber): item for item in seg.SegmentSequence}
    assert items[5].SegmentLabel == "liver" and items[1].SegmentLabel == "spleen"
    for value, type_code in ((5, "10200004"), (1, "78961009"), (8, "23451007")):  # liver, spleen, adrenal gland (SNOMED CT)
        item = items[value]
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == type_code
        assert item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
        assert item.SegmentAlgorithmType == "SEMIAUTOMATIC" and item.SegmentAlgorithmName == "sam2med"
        assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "sam2.1_hiera_tiny sha256:0123abcd"
    right = items[8].SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
    assert (right.CodeValue, right.CodeMeaning) == ("24028007", "Right")  # adrenal_gland_right: Adrenal gland, modifier Right


@pytest.mark.integration
def test_rtstruct_export_with_a_coded_csv_label_map(case, tmp_path, capsys):
    d, series, grid, organs, _ = case
    label = np.where(np.isin(organs, (5, 1)), organs, 0).astype(np.uint8)
    label_path = save_label(label, grid, tmp_path / "liver_spleen.nii.gz")
    codes = tmp_path / "codes.csv"
    codes.write_text("# dcmqi-style columns\n"
                     "LabelID,Structure,SegmentedPropertyCategoryCodeSequence.CodingSchemeDesignator,"
                     "SegmentedPropertyCategoryCodeSequence.CodeValue,SegmentedPropertyCategoryCodeSequence.CodeMeaning,"
                     "SegmentedPropertyTypeCodeSequence.CodingSchemeDesignator,SegmentedPropertyTypeCodeSequence.CodeValue,"
                     "SegmentedPropertyTypeCodeSequence.CodeMeaning,DicomRGBColor\n"
                     "5,Liver QA,SCT,123037004,Anatomical Structure,SCT,10200004,Liver,\"10,20,30\"\n"
                     "1,spleen,,,,,,,\n")
    out = tmp_path / "rt.dcm"
    code, stdout, err = run_export(capsys, label_path, "--reference", series, "--format", "rtstruct", "-o", out, "--labels", codes)
    assert code == 0, err
    assert "RTSTRUCT with 2 ROI(s) (spleen, Liver QA)" in stdout
    rt = pydicom.dcmread(out)
    rois = {int(r.ROINumber): r.ROIName for r in rt.StructureSetROISequence}
    assert rois == {1: "spleen", 5: "Liver QA"}
    colours = {int(r.ReferencedROINumber): list(r.ROIDisplayColor) for r in rt.ROIContourSequence}
    assert colours[5] == [10, 20, 30]
    codes_by_roi = {int(o.ReferencedROINumber): o.RTROIIdentificationCodeSequence[0].CodeValue for o in rt.RTROIObservationsSequence}
    assert codes_by_roi == {5: "10200004", 1: "78961009"}  # the spleen's from the TotalSegmentator table
    back, _ = read_rtstruct(out, grid)
    assert np.array_equal(back, label)


def test_totalsegmentator_names_have_snomed_codes(shared_data):
    every = json.loads((shared_data / "totalsegmentator" / LABELS).read_text())
    for key in ("total", "total_mr"):
        names = {int(v): n for v, n in every[key].items()}
        assert set(coded_segments(names)) == set(names), key  # every name of both tasks is coded
    coded = coded_segments({5: "liver", 1: "spleen", 2: "kidney_right", 23: "kidney_cyst_left", 31: "vertebrae_L1"})
    assert (coded[5].type.value, coded[5].type.meaning) == ("10200004", "Liver")
    assert (coded[1].type.value, coded[1].type.meaning) == ("78961009", "Spleen")
    assert coded[2].type.value == "64033007" and coded[2].modifier.value == "24028007"  # Kidney, Right
    assert coded[23].category.value == "49755003" and coded[23].region.value == "64033007"  # a cyst of the kidney
    assert coded[31].type.value == "66794005"
    assert all(s.category.scheme == "SCT" and s.type.scheme == "SCT" for s in coded.values())


def test_coded_json_label_map_and_its_errors(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"liver": {"value": 5, "category": "123037004", "type": "10200004", "scheme": "SCT"},
                                "lesion": {"value": 7, "type": "SCT:108369006:Neoplasm",
                                           "category": "SCT:49755003:Morphologically Altered Structure", "color": [1, 2, 3]},
                                "spleen": 1, "9": "my structure"}))
    segments = read_segment_map(str(path))
    assert segments[5].type.meaning == "Liver" and segments[5].category.meaning == "Anatomical Structure"
    assert segments[7].category.value == "49755003" and segments[7].color == (1, 2, 3)
    assert segments[1].type.value == "78961009"  # a bare TotalSegmentator name is coded
    assert segments[9].type.value == "91723000" and segments[9].name == "my structure"  # generic anatomical structure
    bad = {
        '{"liver": {"value": 5, "typ": "10200004"}}': "unknown key",
        '{"liver": {"type": "10200004"}}': "needs a \"value\"",
        '{"liver": {"value": 0}}': "1..65535",
        '{"x": {"value": 5, "type": "999999"}}': None,  # an unknown code value: its meaning is the name, accepted
        '{"x": {"value": 5, "type": "10200004", "category": "999999"}}': "needs its meaning",
        '{"liver": 5, "spleen": 5}': "given twice",
        '{"x": {"value": 5, "color": [1, 2]}}': "colour",
    }
    for text, message in bad.items():
        path.write_text(text)
        if message is None:
            assert read_segment_map(str(path))[5].type.meaning == "x"
            continue
        with pytest.raises(InputError, match=message):
            read_segment_map(str(path))
    csv = tmp_path / "map.csv"
    csv.write_text("name,type\nliver,SCT:10200004:Liver\n")
    with pytest.raises(InputError, match="value column"):
        read_segment_map(str(csv))
    csv.write_text("value,name,type\n5,liver,SCT-10200004\n")
    with pytest.raises(InputError, match="row 2"):
        read_segment_map(str(csv))


@pytest.mark.integration
def test_bad_export_input_is_one_line_and_no_file(case, tmp_path, capsys):
    d, series, grid, organs, _ = case
    out = tmp_path / "out.dcm"
    empty = save_label(np.zeros(grid.shape, np.uint8), grid, tmp_path / "empty.nii.gz")
    liver = save_label(np.where(organs == 5, 5, 0).astype(np.uint8), grid, tmp_path / "liver.nii.gz")
    no_positions = tmp_path / "no_positions"
    no_positions.mkdir()
    for i, path in enumerate(sorted(series.iterdir())):
        ds = pydicom.dcmread(path)
        if i == 3:
            del ds.ImagePositionPatient
        ds.save_as(no_positions / path.name)
    cases = {
        "another grid": ((d / "example_seg.nii.gz", series, "seg"), "not on the reference DICOM series' grid (shape 122x101x30 vs 512x512x20)"),
        "empty rtstruct": ((empty, series, "rtstruct"), "is empty"),
        "empty seg": ((empty, series, "seg"), "is empty"),
        "no positions": ((liver, no_positions, "rtstruct"), "1 of 20 DICOM files have no ImagePositionPatient"),
        "bad format": ((liver, series, "nrrd"), "format 'nrrd': use seg or rtstruct"),
        "no series": ((liver, tmp_path / "missing", "seg"), "reference DICOM series folder does not exist"),
    }
    for name, ((label, reference, fmt), message) in cases.items():
        code, stdout, err = run_export(capsys, label, "--reference", reference, "--format", fmt, "-o", out)
        assert code == 2, (name, stdout, err)
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, (name, err)
        assert not out.exists() and not any(p.name.startswith(".out.dcm") for p in tmp_path.iterdir()), name
