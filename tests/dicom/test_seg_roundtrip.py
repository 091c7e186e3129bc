"""DICOM-SEG without dcmqi: write the organ label of the example series, read it back, compare with the NIfTI."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from sam2med.dicom.seg import read_seg, save_seg, segment_names, write_seg
from sam2med.dicom.segment_map import describe_segments
from sam2med.dicom.segments import Algorithm, Code, Segment
from sam2med.dicom.series import decompress, read_series_files, repair_series, repaired_copy, write_series
from sam2med.errors import InputError
from sam2med.io import load_label, load_volume
from sam2med.prompts import seed_on_image_grid

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def series(shared_data, tmp_path_factory):
    """The example series with repaired UIDs, its volume, and the organ label on its grid."""
    d = shared_data / "totalsegmentator"
    folder = tmp_path_factory.mktemp("series")
    paths, report = repaired_copy(d / "example_ct_dicom", folder)
    assert len(paths) == 20 and report.changed["StudyInstanceUID"] == 20 and report.changed["SOPClassUID"] == 20
    volume = load_volume(folder)
    organs = load_label(d / "example_seg_dicom.nii.gz")
    names = {int(k): v for k, v in json.loads((d / "labels.json").read_text())["total"].items()}
    return folder, volume, seed_on_image_grid(organs.array, organs.grid, volume.grid), names


def test_repair_is_consistent_and_deterministic(shared_data):
    source = shared_data / "totalsegmentator/example_ct_dicom"
    first, second = read_series_files(source, pixels=False), read_series_files(source, pixels=False)
    repair_series(first), repair_series(second)
    uids = [(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in (f.dataset for f in first)]
    assert uids == [(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in (f.dataset for f in second)]
    assert len({u[0] for u in uids}) == 1 and len({u[1] for u in uids}) == 1 and len({u[2] for u in uids}) == 20
    assert all(f.dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" for f in first)  # CT Image Storage
    assert all(pydicom.uid.UID(u).is_valid for u in uids[0])


def test_decompress_keeps_stored_values(shared_data, tmp_path):
    files = read_series_files(shared_data / "totalsegmentator/example_ct_dicom")
    repair_series(files)
    assert files[0].dataset.file_meta.TransferSyntaxUID.is_compressed  # JPEG 2000 lossless
    assert all(decompress(f) for f in files)
    write_series(files, tmp_path)
    decompressed, original = load_volume(tmp_path), load_volume(shared_data / "totalsegmentator/example_ct_dicom")
    assert decompressed.grid == original.grid and np.array_equal(decompressed.array, original.array)
    first = pydicom.dcmread(next(tmp_path.iterdir()))
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_seg_round_trip_matches_nifti_label(series, tmp_path):
    folder, volume, organs, names = series
    seg = write_seg(organs, volume.grid, folder, names)
    path = save_seg(seg, tmp_path / "organs.dcm")
    source = read_series_files(folder, pixels=False)
    written = pydicom.dcmread(path)
    assert written.Modality == "SEG" and written.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert written.StudyInstanceUID == source[0].dataset.StudyInstanceUID
    assert written.FrameOfReferenceUID == source[0].dataset.FrameOfReferenceUID
    referenced = written.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source[0].dataset.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == {f.dataset.SOPInstanceUID for f in source}

    back, grid = read_seg(path, volume.grid)
    assert grid.matches(volume.grid)
    assert np.array_equal(back, organs)
    assert segment_names(path)[5] == "liver" and set(segment_names(path)) == set(np.unique(organs)) - {0}


def test_seg_of_a_partial_label_maps_back_onto_the_series_grid(series, tmp_path):
    folder, volume, organs, _ = series
    liver = np.where(organs == 5, 5, 0).astype(np.uint8)
    liver[:, :, :6] = 0  # frames only for slices 6..19: the SEG's own extent is smaller than the series
    path = save_seg(write_seg(liver, volume.grid, folder, {5: "liver"}), tmp_path / "liver.dcm")
    own, own_grid = read_seg(path)
    assert own_grid.shape[2] == 14
    back, _ = read_seg(path, volume.grid)
    assert np.array_equal(back, liver)


def test_seg_errors_are_clear(series, shared_data, tmp_path):
    folder, volume, organs, _ = series
    with pytest.raises(InputError, match="empty"):
        write_seg(np.zeros_like(organs), volume.grid, folder)
    with pytest.raises(InputError, match="blank StudyInstanceUID"):
        write_seg(organs, volume.grid, shared_data / "totalsegmentator/example_ct_dicom")
    with pytest.raises(InputError, match="not a DICOM-SEG"):
        read_seg(next(folder.iterdir()))


def test_monailabel_converter_replacement_writes_seg(series, tmp_path):
    """The drop-in for MONAI Label's dcmqi-based nifti_to_dicom_seg (used by /infer?output=dicom_seg)."""
    from sam2med.monailabel.dicomweb import nifti_to_dicom_seg
    from sam2med.io import save_label

    folder, volume, organs, _ = series
    label = save_label(np.where(organs == 5, 1, 0).astype(np.uint8), volume.grid, tmp_path / "result.nii.gz")
    path = nifti_to_dicom_seg(str(folder), str(label), [{"name": "liver", "idx": 1}])
    back, _ = read_seg(path, volume.grid)
    assert np.array_equal(back, np.where(organs == 5, 1, 0)) and segment_names(path) == {1: "liver"}


def test_seg_records_given_segments_and_algorithm(series, tmp_path):
    folder, volume, organs, names = series
    values = sorted(int(v) for v in np.unique(organs) if v)[:2]
    label = np.where(np.isin(organs, values), organs, 0)
    liver = Segment(values[0], "liver QA", (12, 34, 56), category=Code("123037004", "SCT", "Anatomical Structure"),
                    type=Code("10200004", "SCT", "Liver"))
    seg = write_seg(label, volume.grid, folder, names, segments={values[0]: liver},
                    algorithm=Algorithm("sam2med", "sam2.1_hiera_tiny sha256:0123abcd"))
    seg = pydicom.dcmread(save_seg(seg, tmp_path / "coded.dcm"))
    items = {int(item.SegmentNumber): item for item in seg.SegmentSequence}
    assert sorted(items) == values
    first, second = items[values[0]], items[values[1]]
    assert first.SegmentLabel == "liver QA"
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Liver"
    assert first.SegmentAlgorithmType == "SEMIAUTOMATIC" and first.SegmentAlgorithmName == "sam2med"
    algorithm = first.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmVersion == "sam2.1_hiera_tiny sha256:0123abcd"
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
    assert second.SegmentLabel == names[values[1]][:64] == "liver"  # described from the names: a TotalSegmentator
    assert second.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # name gets its SNOMED CT code (Liver)
    # colours are stored as CIELab; the given one differs from the default cycle's
    assert list(first.RecommendedDisplayCIELabValue) != list(second.RecommendedDisplayCIELabValue)
    array, _ = read_seg(seg, volume.grid)
    assert np.array_equal(array, label)


def test_segment_descriptions_reject_bad_values():
    with pytest.raises(InputError, match="colour"):
        Segment(1, "liver", (0, 0, 300))
    with pytest.raises(InputError, match="outside"):
        Segment(0, "liver", (0, 0, 0))
    with pytest.raises(InputError, match="says value 3"):
        describe_segments([2], {}, {2: Segment(3, "x", (0, 0, 0))})
    generic, coded = describe_segments([4, 5], {4: "my organ", 5: "Liver"})
    assert generic.type.value == "91723000" and generic.category.value == "123037004"  # not a TotalSegmentator name
    assert coded.type.value == "10200004" and coded.name == "Liver"
