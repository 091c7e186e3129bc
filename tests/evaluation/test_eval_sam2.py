"""`--propagator sam2` end to end with a RANDOM-weight SAM2.1-tiny: plumbing only, the numbers mean nothing."""

from __future__ import annotations

import csv
import json

import numpy as np

from conftest import TEST_IMAGE_SIZE
from eval_synthetic import moving_disc_case, write_case
from sam2med.cli import main
from sam2med.evaluation.pairing import Case
from sam2med.evaluation.propagators.sam2 import Sam2Propagator
from sam2med.evaluation.protocols import Protocol, RangeSpec
from sam2med.evaluation.runner import EvaluationConfig, evaluate_case
from sam2med.io import load_label

SHAPE = (40, 36, 4)


def test_cli_sam2_runs_end_to_end(tmp_path, random_checkpoint, capsys):
    volume, label = moving_disc_case(shape=SHAPE, slices=(1, 2))
    write_case(tmp_path / "images", tmp_path / "labels", "tiny", volume, label, image_name="tiny_0000")
    out = tmp_path / "out"
    code = main(["evaluate", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
                 "--propagator", "sam2", "--checkpoint", str(random_checkpoint), "--device", "cpu",
                 "--image-size", str(TEST_IMAGE_SIZE), "--label", "1", "--previews", "0", "--save-predictions", "--out", str(out)])
    assert code == 0
    (row,) = list(csv.DictReader(open(out / "results.csv")))
    assert row["case"] == "tiny" and row["propagator"] == "sam2" and row["status"] == "ok"
    assert 0.0 <= float(row["dice"]) <= 1.0 and float(row["seconds"]) > 0
    assert (row["range_start"], row["range_end"], row["slices"]) == ("1", "2", "2")
    assert int(row["truth_voxels"]) == int((label == 1).sum())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["propagator"] == "sam2" and summary["overall"]["n"] == 1
    assert not (out / "previews").exists()
    assert summary["seed_slices"]["counted"] is True  # and the seed slice is the truth there, as drawn:
    predicted = load_label(out / "predictions" / "tiny.nii.gz").array
    seed_slice = int(row["seed_slices"])
    np.testing.assert_array_equal(predicted[..., seed_slice] == 1, label[..., seed_slice] == 1)
    assert "note: RANDOM weights" in capsys.readouterr().out, "the console says the weights are random, as summary.md does"


def test_sam2_click_protocol_through_the_runner(tmp_path, propagator):
    volume, label = moving_disc_case(shape=SHAPE, slices=(1, 2))
    write_case(tmp_path / "images", tmp_path / "labels", "tiny", volume, label)
    config = EvaluationConfig(protocol=Protocol.parse("clicks:2"), range_spec=RangeSpec.parse("full"), labels=[1, 2])
    outcome = evaluate_case(Case("tiny", tmp_path / "images" / "tiny.nii.gz", tmp_path / "labels" / "tiny.nii.gz"),
                            Sam2Propagator(propagator=propagator), config)
    assert outcome.error is None and [t.label for t in outcome.targets] == [1, 2]
    assert all(t.ok and len(t.slice_range) == SHAPE[2] for t in outcome.targets), [t.error for t in outcome.targets]
    assert outcome.prediction.shape == SHAPE and set(np.unique(outcome.prediction)) <= {0, 1, 2}


def test_cli_sam2_range_auto_reports_the_tracked_slices(tmp_path, random_checkpoint, capsys):
    volume, label = moving_disc_case(shape=(40, 36, 6), slices=(1, 4))
    write_case(tmp_path / "images", tmp_path / "labels", "tiny", volume, label, image_name="tiny_0000")
    out = tmp_path / "out"
    base = ["evaluate", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--label", "1",
            "--previews", "0", "--out", str(out), "--range", "auto"]
    code = main(base + ["--propagator", "sam2", "--checkpoint", str(random_checkpoint), "--device", "cpu",
                        "--image-size", str(TEST_IMAGE_SIZE), "--max-slices", "1", "--absent-slices", "50",
                        "--min-object-score", "0", "--memory", "selective"])
    assert code == 0
    (row,) = list(csv.DictReader(open(out / "results.csv")))
    seed = int(row["seed_slices"])
    assert 1 <= seed <= 4  # the disc's slices: the bound stops both directions one slice away, inside the volume
    assert (int(row["range_start"]), int(row["range_end"]), int(row["slices"])) == (seed - 1, seed + 1, 3)
    assert json.loads((out / "summary.json").read_text())["config"]["range"] == "auto"
    capsys.readouterr()
    assert main(base + ["--propagator", "copy"]) == 2
    assert "use --propagator sam2" in capsys.readouterr().err
