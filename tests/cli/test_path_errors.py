"""A path of the wrong kind gets one `error:` line that says what it is and what to give, before any work (issue 30.4)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from sam2med.cli import main


@pytest.fixture()
def files(tmp_path):
    """An image and a seed (small, on one grid), paired in images/ and labels/, an empty folder and a plain file."""
    image = sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16))
    sitk.WriteImage(image, str(tmp_path / "image.nii.gz"))
    seed = sitk.GetImageFromArray(np.pad(np.ones((1, 2, 2), np.uint8), ((1, 2), (3, 3), (3, 3))))
    sitk.WriteImage(seed, str(tmp_path / "seed.nii.gz"))
    (tmp_path / "folder").mkdir()
    for kind, name in (("images", "image.nii.gz"), ("labels", "seed.nii.gz")):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "case.nii.gz").symlink_to(tmp_path / name)
    (tmp_path / "file.txt").write_text("not a folder")
    return tmp_path


CASES = {
    "propagate --checkpoint FOLDER": (["propagate", "{d}/image.nii.gz", "--seed", "{d}/seed.nii.gz", "-o", "{d}/out.nii.gz",
                                       "--checkpoint", "{d}/folder/"], "{d}/folder: is a folder; give a checkpoint file"),
    "propagate --seed FOLDER": (["propagate", "{d}/image.nii.gz", "--seed", "{d}/folder/", "-o", "{d}/out.nii.gz"],
                                "{d}/folder: is a folder; give a seed label file"),
    "propagate -o FOLDER": (["propagate", "{d}/image.nii.gz", "--seed", "{d}/seed.nii.gz", "-o", "{d}/folder/"],
                            "{d}/folder: is a folder; give an output file (.nii.gz"),
    "propagate -o MISSING/x": (["propagate", "{d}/image.nii.gz", "--seed", "{d}/seed.nii.gz", "-o", "{d}/missing/x.nii.gz"],
                               "{d}/missing/x.nii.gz: folder {d}/missing does not exist; create it first"),
    "evaluate --images FILE": (["evaluate", "--images", "{d}/file.txt", "--labels", "{d}/folder", "--out", "{d}/eval",
                                "--propagator", "copy"], "{d}/file.txt: is a file; give an image folder"),
    "evaluate --labels FILE": (["evaluate", "--images", "{d}/images", "--labels", "{d}/file.txt", "--out", "{d}/eval",
                                "--propagator", "copy"], "{d}/file.txt: is a file; give a label folder"),
    "evaluate --out FILE": (["evaluate", "--images", "{d}/images", "--labels", "{d}/labels", "--out", "{d}/file.txt",
                             "--propagator", "copy"], "{d}/file.txt: is a file; give an output folder"),
    "finetune -o MISSING/x": (["finetune", "--images", "{d}/folder", "--labels", "{d}/folder", "--checkpoint", "{d}/seed.nii.gz",
                               "-o", "{d}/missing/ft.pt", "--json", "{d}/stats.json"],
                              "{d}/missing/ft.pt: folder {d}/missing does not exist; create it first"),
    "finetune --images FILE": (["finetune", "--images", "{d}/file.txt", "--labels", "{d}/folder", "--checkpoint", "{d}/seed.nii.gz",
                                "-o", "{d}/ft.pt", "--json", "{d}/stats.json"], "{d}/file.txt: is a file; give an image folder"),
    "propagate-batch -o FILE": (["propagate-batch", "--manifest", "{d}/rows.csv", "-o", "{d}/file.txt"],
                                "{d}/file.txt: is a file; give an output folder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_path_of_the_wrong_kind_is_one_line_saying_what_to_give(case, files, capfd):
    argv, expected = CASES[case]
    before = sorted(p.name for p in files.iterdir())
    code = main([arg.format(d=files) for arg in argv])
    err = capfd.readouterr().err.strip().splitlines()  # capfd: ITK's own messages on the process's stderr count too
    assert code == 2
    assert err == [f"error: {expected.format(d=files)}"] or (len(err) == 1 and err[0].startswith(f"error: {expected.format(d=files)}")), err
    assert sorted(p.name for p in files.iterdir()) == before, "nothing written"
