"""`evaluate --protocol one-prompt` over 2D image/label pairs cut from ../shared/data (random weights).

Random weights cannot show quality: the metrics are checked on the right arrays instead, by a prediction
the test controls (the tracker's hook makes the liver fill every image: Dice and IoU are known) and by
recomputing results.csv from the saved predictions and the truth, with each image's pixel spacing.
"""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from conftest import TEST_IMAGE_SIZE
from sam2med.cli import main
from sam2med.evaluation.metrics import compute_metrics
from sam2med.evaluation.oneprompt import evaluate_one_prompt
from sam2med.evaluation.pairing import pair_cases
from tests.test_images2d import NIFTI_SPACING, ct_slices, to_8bit, write_nifti2d, write_png

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pairs(shared_data, tmp_path_factory):
    """images/ and labels/: caseA (slice 24, where liver and spleen are largest), caseB (16) as PNG, caseC (8) as
    2D NIfTI with anisotropic spacing, and caseD whose label has another size than its image."""
    root = tmp_path_factory.mktemp("pairs")
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    hu, truth = ct_slices(shared_data)
    organs = lambda s: np.where(np.isin(truth[s], [1, 5]), truth[s], 0).astype(np.uint8)  # noqa: E731
    for name, s in (("caseA", 24), ("caseB", 16)):
        write_png(images / f"{name}.png", to_8bit(hu[s]))
        write_png(labels / f"{name}.png", organs(s))
    write_nifti2d(images / "caseC.nii.gz", hu[8])
    write_nifti2d(labels / "caseC.nii.gz", organs(8))
    write_png(images / "caseD.png", to_8bit(hu[12]))
    write_png(labels / "caseD.png", organs(12)[:60])
    return root, images, labels, {"caseA": organs(24), "caseB": organs(16), "caseC": organs(8)}


def _truth(labels, name):
    path = labels / (f"{name}.png" if name != "caseC" else "caseC.nii.gz")
    return np.asarray(Image.open(path)) if name != "caseC" else sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_results_match_the_saved_predictions_and_the_prompt_row_is_apart(pairs, random_checkpoint, tmp_path):
    root, images, labels, organs = pairs
    out = tmp_path / "eval"
    rc = main(["evaluate", "--protocol", "one-prompt", "--images", str(images), "--labels", str(labels), "--out", str(out),
               "--save-predictions", "--checkpoint", str(random_checkpoint), "--device", "cpu",
               "--image-size", str(TEST_IMAGE_SIZE)])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    by_key = {(r["case"], r["label"]): r for r in rows}
    assert sorted(by_key) == [(c, l) for c in ("caseA", "caseB", "caseC") for l in ("1", "5")]
    for label in ("1", "5"):  # caseA holds the largest liver and spleen: the default prompt case
        prompt = by_key[("caseA", label)]
        assert prompt["status"] == "prompt" and float(prompt["dice"]) == 1.0 and prompt["hd95_mm"] == "0.0"
    for case in ("caseB", "caseC"):
        predicted = (np.asarray(Image.open(out / "predictions" / f"{case}.png")) if case == "caseB"
                     else sitk.GetArrayFromImage(sitk.ReadImage(str(out / "predictions" / "caseC.nii.gz"))))
        truth = _truth(labels, case)
        assert predicted.shape == truth.shape
        spacing = (1.0, 1.0) if case == "caseB" else (NIFTI_SPACING[1], NIFTI_SPACING[0])
        # each label is its own run; in the saved label map the later label (5) wins where both were predicted
        row = by_key[(case, "5")]
        expected = compute_metrics(predicted == 5, truth == 5, spacing)
        assert row["status"] == "ok"
        assert float(row["dice"]) == pytest.approx(expected.dice) and float(row["hd95_mm"]) == pytest.approx(expected.hd95_mm)
        assert float(row["asd_mm"]) == pytest.approx(expected.asd_mm)
        assert int(row["pred_voxels"]) == int((predicted == 5).sum()) and int(row["truth_voxels"]) == int((truth == 5).sum())
        spleen = by_key[(case, "1")]
        assert spleen["status"] == "ok" and int(spleen["truth_voxels"]) == int((truth == 1).sum())
        assert int(spleen["pred_voxels"]) >= int((predicted == 1).sum())
    predicted_a = np.asarray(Image.open(out / "predictions" / "caseA.png"))
    np.testing.assert_array_equal(predicted_a, organs["caseA"])  # the prompt case's prediction is its seed

    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n"] == 4  # caseB and caseC, two labels; not the prompt rows
    dice = [float(by_key[(c, l)]["dice"]) for c in ("caseB", "caseC") for l in ("1", "5")]
    assert summary["overall"]["dice"]["mean"] == pytest.approx(np.mean(dice))
    assert sorted((p["case"], p["label"], p["dice"]) for p in summary["prompts"]) == [("caseA", 1, 1.0), ("caseA", 5, 1.0)]
    assert summary["config"]["protocol"] == "one-prompt" and summary["config"]["prompt_cases"] == {"1": "caseA", "5": "caseA"}
    assert summary["config"]["memory"] == "selective"
    assert summary["cases"]["failed"] == ["caseD"] and "differs from the image's" in summary["failed"][0]["error"]
    assert "one-prompt" in (out / "summary.md").read_text()


def test_a_controlled_prediction_gives_its_known_metrics(pairs, propagator):
    """The hook makes SAM2 predict the liver over every whole image: Dice 2T/(T+HW), IoU T/HW on each case."""
    root, images, labels, organs = pairs
    propagator.frame_hook = lambda frame, label, out, mask: torch.full_like(mask, 10.0)
    try:
        outcomes = evaluate_one_prompt(pair_cases(images, labels, two_d=True), propagator, [5], {}, prompt_case="caseB")
    finally:
        propagator.frame_hook = None
    rows = {t.case: t for o in outcomes for t in o.targets}
    assert rows["caseB"].prompt and rows["caseB"].metrics.dice == 1.0
    for case in ("caseA", "caseC"):
        truth = int((organs[case] == 5).sum())
        pixels = organs[case].size
        metrics = rows[case].metrics
        assert not rows[case].prompt and metrics.pred_voxels == pixels and metrics.truth_voxels == truth
        assert metrics.dice == pytest.approx(2 * truth / (truth + pixels)) and metrics.iou == pytest.approx(truth / pixels)
    assert next(o for o in outcomes if o.case.name == "caseD").error


def test_options_of_the_3d_protocols_are_refused(pairs, random_checkpoint, tmp_path, capsys):
    root, images, labels, _ = pairs
    base = ["evaluate", "--protocol", "one-prompt", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "o"),
            "--checkpoint", str(random_checkpoint)]
    for extra, message in ((["--propagator", "copy"], "--propagator does not apply"),
                           (["--compare", "registration"], "--compare does not apply"),
                           (["--range", "auto"], "--range does not apply"),
                           (["--prompt-case", "nosuch"], "--prompt-case nosuch: no such case")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()
    assert main(["evaluate", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "o"),
                 "--prompt-case", "caseA", "--propagator", "copy"]) == 2
    assert "--prompt-case applies to --protocol one-prompt only" in capsys.readouterr().err


def test_images_without_a_requested_label_are_skipped_not_failed(pairs, propagator, tmp_path):
    """In a folder of 2D images most images lack most labels: with --label such a (case, label) is skipped,
    and a label that only one image holds has no other image to segment: skipped too, never a failure."""
    root, images, labels, organs = pairs
    folder_images, folder_labels = tmp_path / "images", tmp_path / "labels"
    folder_images.mkdir()
    folder_labels.mkdir()
    for name in ("caseA", "caseB"):
        (folder_images / f"{name}.png").write_bytes((images / f"{name}.png").read_bytes())
    write_png(folder_labels / "caseA.png", organs["caseA"])  # liver (5) and spleen (1)
    write_png(folder_labels / "caseB.png", np.where(organs["caseB"] == 5, 5, 0).astype(np.uint8))  # liver only
    outcomes = evaluate_one_prompt(pair_cases(folder_images, folder_labels, two_d=True), propagator, [1, 5], {})
    by_case = {o.case.name: o for o in outcomes}
    assert not any(o.failed or o.error for o in outcomes)
    assert [(t.case, t.label, t.prompt) for o in outcomes for t in o.targets] == [("caseA", 5, True), ("caseB", 5, False)]
    assert by_case["caseB"].skipped == [{"case": "caseB", "label": 1, "name": "label 1", "reason": "absent from this image"}]
    assert by_case["caseA"].skipped == [{"case": "caseA", "label": 1, "name": "label 1", "reason": "no other image holds it"}]
    assert by_case["caseB"].evaluated and not by_case["caseA"].evaluated
