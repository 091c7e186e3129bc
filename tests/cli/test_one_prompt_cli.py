"""`main.py one-prompt` end to end over a folder of mixed 2D formats cut from ../shared/data (random weights).

Asserted: one mask per image on that image's grid, the prompt's mask is its seed, per-image errors in the
JSON for a corrupt, a 3D and a non-image file while the others are written, the selective memory's images in
the JSON; bad --prompt/--seed: one `error:` line, exit 2, nothing written.
"""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from conftest import TEST_IMAGE_SIZE
from sam2med.cli import main
from tests.test_images2d import (NIFTI_DIRECTION, NIFTI_ORIGIN, NIFTI_SPACING, copy_dicom, ct_slices, mr_slices, to_8bit,
                                 write_nifti2d, write_png)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def folder(shared_data, tmp_path_factory):
    """images/: PNG prompt and PNG, JPEG, CT NIfTI, MR NIfTI (another size), DICOM (512 px) images, and three bad
    files; the seed (liver 5 + spleen 1 on the prompt) lies outside the folder."""
    root = tmp_path_factory.mktemp("one_prompt")
    images = root / "images"
    images.mkdir()
    hu, labels = ct_slices(shared_data)
    write_png(images / "ct24.png", to_8bit(hu[24]))
    write_png(images / "ct16.png", to_8bit(hu[16]))
    Image.fromarray(to_8bit(hu[20])).save(images / "ct20.jpg", quality=92)
    write_nifti2d(images / "ct12.nii.gz", hu[12])
    mr, _ = mr_slices(shared_data)
    write_nifti2d(images / "mr10.nii", mr[10])
    copy_dicom(shared_data, 9, images / "dicom09.dcm")
    cut = (images / "ct16.png").read_bytes()
    (images / "broken.png").write_bytes(cut[: len(cut) // 3])
    (images / "readme.txt").write_text("slices for the one-prompt test")
    sitk.WriteImage(sitk.GetImageFromArray(hu[10:13]), str(images / "volume.nii.gz"))
    seed = np.where(np.isin(labels[24], [1, 5]), labels[24], 0).astype(np.uint8)
    write_png(root / "seed.png", seed)
    return root, images, seed


def _run(*args: str) -> int:
    return main(["one-prompt", *args, "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE)])


def test_one_prompt_writes_a_mask_per_image_on_its_grid(folder, random_checkpoint, tmp_path, capsys):
    root, images, seed = folder
    out = tmp_path / "masks"
    rc = _run("--images", str(images), "--prompt", str(images / "ct24.png"), "--seed", str(root / "seed.png"),
              "-o", str(out), "--checkpoint", str(random_checkpoint))
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "RANDOM weights" in printed.out and "3 failed" in printed.out

    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["ct24.png", "ct16.png", "ct20.png", "ct12.nii.gz", "mr10.nii", "dicom09.nii.gz", "one_prompt.json"])
    prompt_mask = Image.open(out / "ct24.png")
    assert prompt_mask.mode == "L" and prompt_mask.size == (122, 101)
    np.testing.assert_array_equal(np.asarray(prompt_mask), seed)  # the prompt gets its seed back, values kept
    for name in ("ct16.png", "ct20.png"):
        mask = Image.open(out / name)
        assert mask.format == "PNG" and mask.mode == "L" and mask.size == (122, 101)
        assert set(np.unique(np.asarray(mask))) <= {0, 1, 5}
    for name, size in (("ct12.nii.gz", (122, 101)), ("mr10.nii", (117, 91))):
        mask = sitk.ReadImage(str(out / name))
        assert mask.GetDimension() == 2 and mask.GetSize() == size, name
        assert mask.GetSpacing() == pytest.approx(NIFTI_SPACING) and mask.GetOrigin() == pytest.approx(NIFTI_ORIGIN)
        assert mask.GetDirection() == pytest.approx(NIFTI_DIRECTION)
    source, mask = sitk.ReadImage(str(images / "dicom09.dcm")), sitk.ReadImage(str(out / "dicom09.nii.gz"))
    assert mask.GetSize() == (512, 512, 1)
    for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(mask, getter)() == pytest.approx(getattr(source, getter)(), abs=1e-4), getter

    report = json.loads((out / "one_prompt.json").read_text())
    rows = {r["image"]: r for r in report["images"]}
    assert sorted(rows) == sorted(p.name for p in images.iterdir())
    assert {n for n, r in rows.items() if r["status"] == "failed"} == {"broken.png", "readme.txt", "volume.nii.gz"}
    assert "cannot read it as PNG" in rows["broken.png"]["error"]
    assert "not an image" in rows["readme.txt"]["error"]
    assert "3D volume (122x101x3)" in rows["volume.nii.gz"]["error"]
    assert report["counts"] == {"files": 9, "written": 6, "failed": 3}
    assert report["prompt"]["image"] == "ct24.png" and report["prompt"]["labels"] == [1, 5] and report["prompt"]["in_images"]
    assert rows["ct24.png"]["prompt"] and rows["ct24.png"]["labels"]["5"]["area"] == int((seed == 5).sum())
    assert rows["ct24.png"]["labels"]["5"]["iou"] is None
    assert rows["mr10.nii"]["tracked_size"] == [101, 122] and rows["mr10.nii"]["shape"] == [91, 117]
    assert rows["dicom09.dcm"]["output"] == "dicom09.nii.gz" and rows["dicom09.dcm"]["window"] == "window:40,400"
    assert rows["ct20.jpg"]["output"] == "ct20.png" and rows["ct20.jpg"]["window"] == "window:127.5,255"
    assert report["memory"]["policy"] == "selective"
    segmented = [r for r in report["images"] if r["status"] == "ok" and not r["prompt"]]
    assert len(segmented) == 5
    for row in segmented:
        for label in ("1", "5"):
            scores = row["labels"][label]
            assert 0 <= scores["object_score"] <= 1 and 0 <= scores["iou"] <= 1
            assert isinstance(scores["memory_images"], list) and "ct24.png" not in scores["memory_images"]
            assert set(scores["memory_images"]) <= {r["image"] for r in segmented} - {row["image"]}
    area = rows["ct12.nii.gz"]["labels"]["5"]
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct12.nii.gz")))
    assert area["area"] == int((written == 5).sum()) and area["area_mm2"] == pytest.approx(area["area"] * 0.8 * 1.3, abs=0.01)
    assert report["provenance"]["random_weights"] and report["provenance"]["inputs"]["seed"]["file"] == "seed.png"


def test_bad_prompt_or_seed_is_one_error_line_and_nothing_written(folder, random_checkpoint, tmp_path, capsys):
    root, images, seed = folder
    small = write_png(tmp_path / "small_seed.png", seed[:50])
    empty = write_png(tmp_path / "empty_seed.png", np.zeros_like(seed))
    cases = [
        (["--prompt", str(images / "missing.png"), "--seed", str(root / "seed.png")], "missing.png: no such file"),
        (["--prompt", str(images / "volume.nii.gz"), "--seed", str(root / "seed.png")], "3D volume"),
        (["--prompt", str(images / "ct24.png"), "--seed", str(small)], "the seed is 122x50 pixels but the prompt image is 122x101"),
        (["--prompt", str(images / "ct24.png"), "--seed", str(empty)], "the seed mask is empty"),
        (["--prompt", str(images / "ct24.png"), "--seed", str(images / "ct20.jpg")], "lossy"),
    ]
    out = tmp_path / "never"
    for args, message in cases:
        rc = _run("--images", str(images), *args, "-o", str(out), "--checkpoint", str(random_checkpoint))
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, err)
        assert not out.exists()
    rc = _run("--images", str(images), "--prompt", str(images / "ct24.png"), "--seed", str(root / "seed.png"),
              "-o", str(images), "--checkpoint", str(random_checkpoint))
    assert rc == 2 and "is the images folder" in capsys.readouterr().err


def test_nothing_but_bad_files_besides_the_prompt_exits_1_with_the_errors(folder, random_checkpoint, tmp_path, caplog):
    root, images, seed = folder
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(images / "ct24.png", only)
    shutil.copy(images / "broken.png", only)
    rc = _run("--images", str(only), "--prompt", str(only / "ct24.png"), "--seed", str(root / "seed.png"),
              "-o", str(tmp_path / "out"), "--json", str(tmp_path / "scores.json"), "--checkpoint", str(random_checkpoint))
    assert rc == 1
    report = json.loads((tmp_path / "scores.json").read_text())
    assert [(r["image"], r["status"]) for r in report["images"]] == [("broken.png", "failed"), ("ct24.png", "ok")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct24.png"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["broken.png: cannot read it as PNG (image file is truncated)"]  # one line, no traceback


def test_help_teaches_formats_outputs_and_examples(capsys):
    with pytest.raises(SystemExit) as done:
        main(["one-prompt", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "a JPEG mask would be lossy" in text and "selective memory" in text and "examples:" in text
    assert "python main.py one-prompt --images" in text and "one_prompt.json" in text


def test_a_prompt_outside_the_folder_conditions_but_is_not_written(folder, random_checkpoint, tmp_path):
    root, images, seed = folder
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(images / "ct16.png", only)
    rc = _run("--images", str(only), "--prompt", str(images / "ct24.png"), "--seed", str(root / "seed.png"),
              "-o", str(tmp_path / "out"), "--memory", "recent", "--checkpoint", str(random_checkpoint))
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct16.png", "one_prompt.json"]
    report = json.loads((tmp_path / "out" / "one_prompt.json").read_text())
    assert report["prompt"]["in_images"] is False and report["memory"] == {"policy": "recent"}
    assert [r["image"] for r in report["images"]] == ["ct16.png"]
    assert "memory_images" not in report["images"][0]["labels"]["5"]  # recent: sam2's own last frames
