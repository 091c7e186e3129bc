"""`main.py evaluate` end to end on synthetic cases: outputs, per-case failures, exit status."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from eval_synthetic import make_grid, moving_disc_case, write_case
from sam2med.cli import main
from sam2med.evaluation.metrics import TargetMetrics
from sam2med.evaluation.pairing import Case
from sam2med.evaluation.report import summarise
from sam2med.evaluation.runner import CaseOutcome, TargetResult
from sam2med.io import load_label


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_data")
    images, labels = root / "images", root / "labels"
    volume, label = moving_disc_case()
    write_case(images, labels, "good", volume, label)
    write_case(images, labels, "partial", volume, np.where(label == 1, 0, label).astype(np.uint8))
    write_case(images, labels, "shifted", volume, label, label_grid=make_grid(origin=(5.0, 0.0, 0.0)))
    write_case(images, labels, "orphan", volume, label)
    (labels / "orphan.nii.gz").unlink()
    return images, labels


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_registration_run_reports_each_failure_and_goes_on(dataset, tmp_path, capsys):
    images, labels = dataset
    out = tmp_path / "out"
    code = main(["evaluate", "--images", str(images), "--labels", str(labels), "--label", "1", "--label", "2",
                 "--propagator", "registration", "--protocol", "center-slice", "--range", "margin:1",
                 "--preview", "partial", "--save-predictions", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| **overall** | 3 |" in printed and "2 of 4 case(s) evaluated" in printed

    rows = read_rows(out / "results.csv")
    by_key = {(r["case"], r["label"]): r for r in rows}
    assert set(by_key) == {("good", "1"), ("good", "2"), ("partial", "1"), ("partial", "2")}
    assert by_key[("partial", "1")]["status"] == "failed" and "absent" in by_key[("partial", "1")]["error"]
    good = by_key[("good", "1")]
    assert good["status"] == "ok" and float(good["dice"]) > 0.8
    assert (good["truth_start"], good["truth_end"], good["range_start"], good["range_end"], good["slices"]) == ("1", "7", "0", "8", "9")
    assert good["seed_slices"] == "4"
    assert float(by_key[("good", "2")]["dice"]) > 0.95  # a still square is carried exactly

    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == {"total": 4, "evaluated": 2, "failed": ["orphan", "shifted"]}
    errors = {(f["case"], f["label"]): f["error"] for f in summary["failed"]}
    assert "grids differ" in errors[("shifted", None)] and "origin" in errors[("shifted", None)]
    assert "no label file" in errors[("orphan", None)]
    assert "absent" in errors[("partial", 1)]
    assert summary["overall"]["n"] == 3 and summary["targets"]["1 label 1"]["n"] == 1
    assert summary["config"]["propagator"] == "registration" and summary["config"]["range"] == "margin:1"
    assert "| **overall** | 3 |" in (out / "summary.md").read_text()
    assert summary["seed_slices"]["counted"] is True
    assert "Seed slices are counted in the metrics: metrics are over the whole volume, seed slices included" in (
        out / "summary.md").read_text()
    seed_slice = int(good["seed_slices"])  # as the note says: the prediction is the truth there
    predicted, truth = load_label(out / "predictions" / "good.nii.gz").array, load_label(labels / "good.nii.gz").array
    np.testing.assert_array_equal(predicted[..., seed_slice] == 1, truth[..., seed_slice] == 1)

    assert (out / "dice_by_organ.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("good", "partial"):  # the first case by default, and the one asked for
        assert (out / "previews" / f"{name}.gif").read_bytes()[:3] == b"GIF"
        assert (out / "previews" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    predicted = load_label(out / "predictions" / "good.nii.gz").array
    assert set(np.unique(predicted)) == {0, 1, 2}
    assert not [p for p in out.rglob(".*")]  # no temporary file left behind


def test_every_case_failing_exits_1(dataset, tmp_path):
    images, labels = dataset
    code = main(["evaluate", "--images", str(images), "--labels", str(labels), "--label", "7",
                 "--propagator", "copy", "--out", str(tmp_path / "out")])
    assert code == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cases"]["evaluated"] == 0 and len(summary["cases"]["failed"]) == 4


def test_empty_folder_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    code = main(["evaluate", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
                 "--propagator", "copy", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "empty" in err[-1]
    assert not (tmp_path / "out").exists()


def test_bad_protocol_is_exit_2(dataset, tmp_path):
    images, labels = dataset
    assert main(["evaluate", "--images", str(images), "--labels", str(labels), "--protocol", "clicks:0",
                 "--propagator", "copy", "--out", str(tmp_path / "out")]) == 2


def test_bad_window_is_found_before_the_model_loads(dataset, tmp_path, capsys):
    images, labels = dataset
    code = main(["evaluate", "--images", str(images), "--labels", str(labels), "--window", "foo",
                 "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [err[-1]] and "unknown window 'foo'" in err[-1], err
    assert not (tmp_path / "out").exists()


def test_summary_skips_infinite_distances_and_counts_them():
    def row(label, dice, hd):
        return TargetResult("c", label, "x", "copy", metrics=TargetMetrics(dice, dice, hd, hd, 1, 1), seconds=0.5)

    outcome = CaseOutcome(Case("c", None, None), targets=[row(1, 0.0, math.inf), row(1, 0.5, 2.0), row(1, 1.0, 4.0)])
    summary = summarise([outcome], {})
    target = summary["targets"]["1 x"]
    assert target["dice"]["mean"] == pytest.approx(0.5) and target["dice"]["median"] == 0.5
    assert target["hd95_mm"] == {"mean": 3.0, "median": 3.0, "std": 1.0, "n_inf": 1}


def test_min_slices_skips_targets_without_failing_them(dataset, tmp_path):
    images, labels = dataset
    out = tmp_path / "out"
    # label 1 is on 7 slices, label 2 on all 9: --min-slices 8 keeps label 2 only
    assert main(["evaluate", "--images", str(images), "--labels", str(labels), "--min-slices", "8",
                 "--propagator", "copy", "--previews", "0", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {(s["case"], s["label"], s["slices"]) for s in summary["skipped"]} == {("good", 1, 7)}
    assert list(summary["targets"]) == ["2 label 2"] and summary["targets"]["2 label 2"]["n"] == 2
    assert summary["cases"]["failed"] == ["orphan", "shifted"]
    # nothing long enough anywhere: nothing evaluated, nothing failed per target, exit 1
    assert main(["evaluate", "--images", str(images), "--labels", str(labels), "--min-slices", "10",
                 "--propagator", "copy", "--previews", "0", "--out", str(tmp_path / "none")]) == 1


def test_label_stored_flipped_is_reindexed_exactly(tmp_path):
    from sam2med.evaluation.protocols import Protocol
    from sam2med.evaluation.propagators import CopyPropagator
    from sam2med.evaluation.runner import EvaluationConfig, evaluate_case
    from sam2med.geometry import Grid

    volume, label = moving_disc_case()
    g = volume.grid
    # the same lattice stored with x reversed (LAS-like): origin at the far x end, direction -x
    flipped = Grid(shape=g.shape, spacing=g.spacing, origin=(g.origin[0] + (g.shape[0] - 1) * g.spacing[0], 0.0, 0.0),
                   direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_case(tmp_path / "i", tmp_path / "l", "f", volume, np.ascontiguousarray(label[::-1]), label_grid=flipped)
    case = Case("f", tmp_path / "i" / "f.nii.gz", tmp_path / "l" / "f.nii.gz")
    config = EvaluationConfig(protocol=Protocol.parse("largest-slice"))
    outcome = evaluate_case(case, CopyPropagator(), config)
    assert outcome.error is None
    np.testing.assert_array_equal(outcome.truth, label)  # back on the image grid, voxel for voxel
    assert {t.label: t.metrics.truth_voxels for t in outcome.targets} == {1: int((label == 1).sum()), 2: int((label == 2).sum())}


def test_same_folder_for_images_and_labels_is_refused(dataset, tmp_path, capsys):
    images, _ = dataset
    code = main(["evaluate", "--images", str(images), "--labels", str(images), "--propagator", "copy", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --images and --labels are the same folder"), err
    assert not (tmp_path / "out").exists()


def test_preview_label_compare_and_chart(dataset, tmp_path, capsys):
    from PIL import Image

    images, labels = dataset
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"disc": 1, "square": 2}))
    out = tmp_path / "out"
    code = main(["evaluate", "--images", str(images), "--labels", str(labels), "--labels-map", str(names),
                 "--propagator", "registration", "--compare", "copy", "--preview-label", "disc", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 1 disc |" in printed and "reference copy: Dice" in printed
    rows = read_rows(out / "results.csv")
    assert {(r["case"], r["name"], r["propagator"]) for r in rows if r["status"] == "ok"} == {
        (c, n, p) for c in ("good",) for n in ("disc", "square") for p in ("registration", "copy")} | {
        ("partial", "square", p) for p in ("registration", "copy")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["references"]["copy"]["overall"]["n"] == 3 and summary["overall"]["n"] == 3
    assert (out / "dice_by_organ.png").read_bytes()[:4] == b"\x89PNG"
    gif = Image.open(out / "previews" / "good.gif")
    assert gif.n_frames == 7  # the disc's slices 1..7 only: the square (on all 9) is not previewed


def test_frame_captions_name_case_slice_organs_and_seeds():
    from sam2med.evaluation.pictures import PRED_RGB, TRUTH_RGB, caption_frame, frame_captions
    from sam2med.geometry import Axis

    _, label = moving_disc_case()
    captions = frame_captions("good", Axis.AXIAL, [0, 4], 9, label, np.zeros_like(label), {1: "disc"}, {4: ["disc"]})
    assert captions == [["good  axial slice 0/8", "label 2"], ["good  axial slice 4/8  seed: disc", "disc, label 2"]]
    frame = np.zeros((60, 80, 3), np.uint8)
    captioned = caption_frame(frame, captions[1])
    assert captioned.shape[1] == 80 and captioned.shape[0] > 60
    header, legend = captioned[:-60 - 18], captioned[-18:]
    assert (header == 255).all(axis=-1).any(), "caption text is drawn"
    assert (legend == TRUTH_RGB).all(axis=-1).any() and (legend == PRED_RGB).all(axis=-1).any(), "legend colours"
