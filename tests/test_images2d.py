"""2D images for one-prompt: each format read with its grid and written back on it; bad files named.

The images are axial slices cut from the real CT/MR in ../shared/data and single files of its DICOM
series; the builders here are shared with the one-prompt engine, CLI and evaluation tests.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from sam2med.errors import InputError
from sam2med.geometry import Axis, to_slices
from sam2med.images2d import (DICOM, JPEG, NIFTI, PNG, list_images, mask_name, read_image2d, read_label2d, save_mask2d,
                              window_image2d)
from sam2med.io import load_label, load_volume
from sam2med.windowing import PREPROCESSING

# A 2D NIfTI grid with nothing trivial about it: anisotropic spacing, an offset origin, a flipped row axis.
NIFTI_SPACING = (0.8, 1.3)
NIFTI_ORIGIN = (-12.5, 40.25)
NIFTI_DIRECTION = (1.0, 0.0, 0.0, -1.0)


def ct_slices(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The CT's axial slices (N, H, W) in HU and its organ labels (1 spleen, 5 liver, ...)."""
    d = shared_data / "totalsegmentator"
    image, truth = load_volume(d / "example_ct_sm.nii.gz"), load_label(d / "example_seg.nii.gz")
    return to_slices(image.array, Axis.AXIAL).copy(), to_slices(truth.array, Axis.AXIAL).copy()


def mr_slices(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    d = shared_data / "totalsegmentator"
    image, truth = load_volume(d / "example_mr_sm.nii.gz"), load_label(d / "example_seg_mr.nii.gz")
    return to_slices(image.array, Axis.AXIAL).copy(), to_slices(truth.array, Axis.AXIAL).copy()


def to_8bit(hu: np.ndarray) -> np.ndarray:
    """A CT slice as a display-windowed 8-bit picture (soft tissue, 40/400)."""
    return np.clip((hu.astype(np.float32) + 160.0) / 400.0 * 255.0, 0, 255).round().astype(np.uint8)


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def write_nifti2d(path: Path, array: np.ndarray) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(NIFTI_SPACING)
    image.SetOrigin(NIFTI_ORIGIN)
    image.SetDirection(NIFTI_DIRECTION)
    sitk.WriteImage(image, str(path))
    return path


def copy_dicom(shared_data: Path, index: int, path: Path) -> Path:
    """One file of the 20-file CT DICOM series (512 x 512) as a single DICOM image."""
    files = sorted((shared_data / "totalsegmentator" / "example_ct_dicom").iterdir())
    return Path(shutil.copy(files[index], path))


def test_each_format_is_read_on_its_grid_and_its_mask_written_back_on_it(shared_data, tmp_path):
    hu, labels = ct_slices(shared_data)
    png = write_png(tmp_path / "a.png", to_8bit(hu[20]))
    jpeg = tmp_path / "b.jpeg"
    Image.fromarray(to_8bit(hu[16])).convert("RGB").save(jpeg, quality=90)
    deep = write_png(tmp_path / "c16.png", (hu[12].astype(np.int32) + 1024).clip(0, 65535).astype(np.uint16))
    nifti = write_nifti2d(tmp_path / "d.nii.gz", hu[8])
    dicom = copy_dicom(shared_data, 7, tmp_path / "e.dcm")

    a, b, c, d, e = (read_image2d(p) for p in (png, jpeg, deep, nifti, dicom))
    assert [x.kind for x in (a, b, c, d, e)] == [PNG, JPEG, PNG, NIFTI, DICOM]
    assert a.shape == b.shape == c.shape == d.shape == hu[0].shape == (101, 122)
    assert e.shape == (512, 512) and e.modality == "CT" and e.spacing == pytest.approx((0.9765625, 0.9765625))
    assert a.eight_bit and b.eight_bit and not c.eight_bit and not d.eight_bit
    np.testing.assert_array_equal(a.array, to_8bit(hu[20]))
    np.testing.assert_array_equal(d.array, hu[8])
    assert d.spacing == pytest.approx((NIFTI_SPACING[1], NIFTI_SPACING[0]))  # (row, column) = (y, x)

    mask = np.where(np.isin(labels[20], [1, 5]), labels[20], 0).astype(np.uint8)
    out = tmp_path / "out"
    out.mkdir()
    assert [mask_name(x) for x in (a, b, c, d, e)] == ["a.png", "b.png", "c16.png", "d.nii.gz", "e.nii.gz"]
    for image in (a, b, d, e):
        save_mask2d(mask if image is not e else np.pad(mask, ((0, 411), (0, 390))), image, out / mask_name(image))
    for name in ("a.png", "b.png"):  # PNG masks of the image's size, values kept, lossless
        written = Image.open(out / name)
        assert written.mode == "L" and written.size == (122, 101)
        np.testing.assert_array_equal(np.asarray(written), mask)
    back = sitk.ReadImage(str(out / "d.nii.gz"))
    assert back.GetDimension() == 2 and back.GetSize() == (122, 101)
    assert back.GetSpacing() == pytest.approx(NIFTI_SPACING) and back.GetOrigin() == pytest.approx(NIFTI_ORIGIN)
    assert back.GetDirection() == pytest.approx(NIFTI_DIRECTION)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), mask)
    source, written = sitk.ReadImage(str(dicom)), sitk.ReadImage(str(out / "e.nii.gz"))
    assert written.GetSize() == source.GetSize() == (512, 512, 1)
    for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(written, getter)() == pytest.approx(getattr(source, getter)(), abs=1e-4), getter
    assert sitk.GetArrayFromImage(written)[0, :101, :122].tolist() == mask.tolist()
    # label values over 255: a 16-bit PNG
    save_mask2d(mask.astype(np.uint16) * 100, a, out / "wide.png")
    wide = Image.open(out / "wide.png")
    assert wide.mode.startswith("I") and int(np.asarray(wide).max()) == 500
    assert not [p for p in out.iterdir() if ".partial" in p.name]


def test_bad_files_are_named_with_what_is_wrong(shared_data, tmp_path):
    hu, _ = ct_slices(shared_data)
    good = write_png(tmp_path / "good.png", to_8bit(hu[10]))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:120])
    (tmp_path / "notes.txt").write_text("not an image")
    volume = sitk.GetImageFromArray(hu[:3])
    sitk.WriteImage(volume, str(tmp_path / "volume.nii.gz"))
    with pytest.raises(InputError, match="cannot read it as PNG"):
        read_image2d(cut)
    with pytest.raises(InputError, match="not an image"):
        read_image2d(tmp_path / "notes.txt")
    with pytest.raises(InputError, match=r"3D volume \(122x101x3\)"):
        read_image2d(tmp_path / "volume.nii.gz")
    with pytest.raises(InputError, match="no such file"):
        read_image2d(tmp_path / "missing.png")
    jpeg = tmp_path / "seed.jpg"
    Image.fromarray(np.full((8, 8), 5, np.uint8)).save(jpeg)
    with pytest.raises(InputError, match="lossy"):
        read_label2d(jpeg)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "colour.png")
    with pytest.raises(InputError, match="RGB colour label"):
        read_label2d(tmp_path / "colour.png")
    assert read_image2d(tmp_path / "colour.png").eight_bit  # as an image: its luminance
    palette = Image.fromarray(np.array([[0, 5], [7, 5]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0] * 5 + [255, 0, 0] + [0, 0, 0] + [0, 255, 0] + [0, 0, 0] * 248)
    palette.save(tmp_path / "palette.png")
    assert read_label2d(tmp_path / "palette.png").array.tolist() == [[0, 5], [7, 5]]  # the indices are the values
    assert read_image2d(tmp_path / "palette.png").array.tolist() == [[0, 76], [150, 76]]  # an image: luminance
    (tmp_path / "colour.png").unlink()
    (tmp_path / "palette.png").unlink()
    (tmp_path / ".hidden.png").write_bytes(good.read_bytes())
    (tmp_path / "sub").mkdir()
    assert [p.name for p in list_images(tmp_path, exclude={good})] == ["cut.png", "notes.txt", "seed.jpg", "volume.nii.gz"]


def test_windowing_per_image_8bit_linear_and_ct_by_modality(shared_data, tmp_path):
    hu, _ = ct_slices(shared_data)
    sam2 = PREPROCESSING["sam2"]
    png = read_image2d(write_png(tmp_path / "a.png", to_8bit(hu[20])))
    pixels, key = window_image2d(png, "auto", sam2)
    np.testing.assert_allclose(pixels, to_8bit(hu[20]) / 255.0, atol=1e-6)
    nifti = read_image2d(write_nifti2d(tmp_path / "b.nii.gz", hu[20]))
    pixels, key = window_image2d(nifti, "auto", sam2)
    assert key == "window:40,400"  # guessed CT (air at -1000 HU): soft tissue
    np.testing.assert_allclose(pixels, np.clip((hu[20] + 160.0) / 400.0, 0, 1), atol=1e-6)
    assert window_image2d(png, "bone", sam2)[1] == "window:127.5,255"  # an 8-bit picture is already windowed
