"""RTSTRUCT: the 31 organs of the example CT series written as contours and rasterised back on the series' grid,
and a synthetic slice with a hole and two islands, checked point by point in patient coordinates."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sam2med.dicom.rtstruct import read_rtstruct, roi_names, save_rtstruct, slice_contours, write_rtstruct
from sam2med.dicom.segment_map import coded_segments
from sam2med.dicom.series import read_series_files, repaired_copy
from sam2med.errors import InputError
from sam2med.io import load_label, read_grid
from sam2med.prompts import seed_on_image_grid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def organs_series(shared_data, tmp_path_factory):
    """The example series with repaired UIDs, its grid, the 31-organ label on it and the organ names."""
    d = shared_data / "totalsegmentator"
    folder = tmp_path_factory.mktemp("rt_series")
    repaired_copy(d / "example_ct_dicom", folder)
    grid = read_grid(folder)
    organs = load_label(d / "example_seg_dicom.nii.gz")
    names = {int(k): v for k, v in json.loads((d / "labels.json").read_text())["total"].items()}
    return folder, grid, seed_on_image_grid(organs.array, organs.grid, grid), names


@pytest.mark.integration
def test_rtstruct_of_the_ct_organs_reads_back_onto_the_series_grid(organs_series, tmp_path):
    folder, grid, organs, names = organs_series
    values = [int(v) for v in np.unique(organs) if v]
    assert len(values) == 31
    path = save_rtstruct(write_rtstruct(organs, grid, folder, names, segments=coded_segments(names)), tmp_path / "rt.dcm")
    written = pydicom.dcmread(path)
    source = {str(f.dataset.SOPInstanceUID): f.dataset for f in read_series_files(folder, pixels=False)}
    first = next(iter(source.values()))
    assert written.Modality == "RTSTRUCT" and written.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert written.StudyInstanceUID == first.StudyInstanceUID and written.PatientID == first.PatientID
    frame = written.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == first.FrameOfReferenceUID
    referenced = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in referenced.ContourImageSequence} == set(source)

    # every contour lies on the plane of the image it references, in patient coordinates
    for roi in written.ROIContourSequence:
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            assert len(points) == contour.NumberOfContourPoints
            image = source[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            assert np.allclose(points[:, 2], float(image.ImagePositionPatient[2]), atol=1e-3)
            assert image.ImagePositionPatient[0] - 1 <= points[:, 0].min() and points[:, 0].max() <= (
                image.ImagePositionPatient[0] + 512 * image.PixelSpacing[1])

    rois = {int(r.ROINumber): r for r in written.StructureSetROISequence}
    assert sorted(rois) == values and rois[5].ROIName == "liver" and rois[5].ROIGenerationAlgorithm == "SEMIAUTOMATIC"
    assert rois[5].ReferencedFrameOfReferenceUID == first.FrameOfReferenceUID
    observations = {int(o.ReferencedROINumber): o for o in written.RTROIObservationsSequence}
    for value, code in ((5, "10200004"), (1, "78961009")):  # liver, spleen (SNOMED CT, the TotalSegmentator mapping)
        assert observations[value].RTROIInterpretedType == "ORGAN"
        assert observations[value].RTROIIdentificationCodeSequence[0].CodeValue == code
        assert observations[value].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    colours = {int(r.ReferencedROINumber): list(r.ROIDisplayColor) for r in written.ROIContourSequence}
    assert colours[5] == list(coded_segments({5: "liver"})[5].color)

    back, back_names = read_rtstruct(path, grid)
    assert back_names == {v: names[v] for v in values}
    scores = {v: dice(organs == v, back == v) for v in values}
    # measured: every ROI comes back exactly (min = mean = 1.0): the contours are the 0.5 iso-lines around the voxel
    # centres and filling them takes exactly the centres inside
    assert min(scores.values()) >= 0.98, scores
    print(f"RTSTRUCT round trip, 31 ROIs: Dice min {min(scores.values()):.4f} mean {np.mean(list(scores.values())):.4f}, "
          f"{int((back != organs).sum())} voxels differ")
    assert np.array_equal(back, organs)


def make_series(folder, shape=(24, 20, 3), spacing=(0.5, 0.8, 2.5), origin=(-10.0, 30.0, 100.0)):
    """A small CT series on an LPS-aligned grid, one file per slice, written with pydicom."""
    nx, ny, nz = shape
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(nz):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.Modality, ds.InstanceNumber = "Synthetic^Ring", "ring1", "CT", k + 1
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.zeros((ny, nx), np.int16).tobytes()
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(folder / f"{k:03d}.dcm", write_like_original=False)
    return folder


def test_a_hole_and_two_islands_are_three_contours_read_back_even_odd(tmp_path):
    folder = make_series(tmp_path / "ring")
    grid = read_grid(folder)
    assert grid.shape == (24, 20, 3) and np.allclose(grid.spacing, (0.5, 0.8, 2.5))
    label = np.zeros(grid.shape, np.uint8)
    label[2:12, 3:15, 1] = 3  # a ring: a square ...
    label[5:9, 6:11, 1] = 0  # ... with a hole
    label[15:20, 4:8, 1] = 3  # a second island
    label[14, 12, 1] = 3  # a single voxel: a third island
    label[4:6, 4:6, 0] = 7  # another label on another slice
    rt = write_rtstruct(label, grid, folder, {3: "ring"})
    by_roi = {int(r.ReferencedROINumber): r.ContourSequence for r in rt.ROIContourSequence}
    assert len(by_roi[3]) == 4 and len(by_roi[7]) == 1  # outer, hole, island, single voxel; one square
    ring_points = [np.asarray(c.ContourData, float).reshape(-1, 3) for c in by_roi[3]]
    assert all(np.allclose(p[:, 2], 100.0 + 2.5) for p in ring_points)  # slice 1 at origin z + 1 * 2.5 mm
    # the outer boundary passes half a voxel outside the outermost voxel centres, in mm
    outer = max(ring_points, key=lambda p: np.ptp(p[:, 0]))
    assert np.isclose(outer[:, 0].min(), -10.0 + 1.5 * 0.5) and np.isclose(outer[:, 0].max(), -10.0 + 11.5 * 0.5)
    assert np.isclose(outer[:, 1].min(), 30.0 + 2.5 * 0.8) and np.isclose(outer[:, 1].max(), 30.0 + 14.5 * 0.8)
    hole = [p for p in ring_points if -10.0 + 4.5 * 0.5 - 1e-6 <= p[:, 0].min() and p[:, 0].max() <= -10.0 + 8.5 * 0.5 + 1e-6]
    assert len(hole) == 1 and len(hole[0]) == 8  # collinear points dropped: four sides and four corners cut at 45 degrees
    references = {c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in by_roi[3]}
    slice1 = pydicom.dcmread(folder / "001.dcm", stop_before_pixels=True).SOPInstanceUID
    assert references == {slice1}

    path = save_rtstruct(rt, tmp_path / "ring_rt.dcm")
    back, names = read_rtstruct(path, grid)
    assert names == {3: "ring", 7: "label 7"}
    assert np.array_equal(back, label)  # the hole stays empty (even-odd), both islands come back


def test_diagonal_touching_voxels_and_bad_rtstruct_input(tmp_path):
    mask = np.zeros((6, 6), bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # 8-connected: one region
    assert len(slice_contours(mask)) == 1
    folder = make_series(tmp_path / "s", shape=(6, 6, 2))
    grid = read_grid(folder)
    label = np.zeros(grid.shape, np.uint8)
    label[:, :, 0] = mask
    back, _ = read_rtstruct(write_rtstruct(label, grid, folder), grid)
    assert np.array_equal(back, label)
    with pytest.raises(InputError, match="empty"):
        write_rtstruct(np.zeros(grid.shape, np.uint8), grid, folder)
    with pytest.raises(InputError, match="not an RTSTRUCT"):
        read_rtstruct(folder / "000.dcm", grid)
    assert roi_names(write_rtstruct(label, grid, folder, {1: "dots"})) == {1: "dots"}
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(folder.iterdir())]
    del headers[1].ImagePositionPatient
    with pytest.raises(InputError, match="1 file.* without ImagePositionPatient"):
        write_rtstruct(label, grid, headers)
    with pytest.raises(InputError, match="does not match the series grid"):
        write_rtstruct(label[:, :, :1], grid, folder)
