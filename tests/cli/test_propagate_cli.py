"""`main.py propagate` end to end, and every bad input of the propagation issue: one line, exit 2, no file."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, TEST_IMAGE_SIZE
from sam2med.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ct_case(shared_data, tmp_path_factory):
    """The CT, and a seed of liver + spleen on the liver's largest axial slice."""
    d = shared_data / "totalsegmentator"
    seg = nib.load(str(d / "example_seg.nii.gz"))
    truth = np.asarray(seg.dataobj).astype(np.uint8)
    z = int(np.argmax((truth == 5).sum(axis=(0, 1))))
    seed = np.zeros_like(truth)
    seed[..., z] = np.where(np.isin(truth[..., z], [1, 5]), truth[..., z], 0)
    folder = tmp_path_factory.mktemp("cli")
    nib.save(nib.Nifti1Image(seed, seg.affine, seg.header), str(folder / "seed.nii.gz"))
    return d / "example_ct_sm.nii.gz", folder / "seed.nii.gz", z, folder


def test_propagate_writes_label_on_input_grid(ct_case, random_checkpoint, tmp_path):
    image, seed, z, _ = ct_case
    out, scores = tmp_path / "out.nii.gz", tmp_path / "scores.json"
    cmd = [sys.executable, str(REPO / "main.py"), "propagate", str(image), "--seed", str(seed), "--range", str(z - 1), str(z + 2),
           "--checkpoint", str(random_checkpoint), "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE), "-o", str(out), "--scores", str(scores)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # stderr is a pipe, as in a logged batch job
    assert done.returncode == 0, done.stderr
    assert "4 slices" in done.stdout and "label 5 (value 5)" in done.stdout
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr and "slice/s" not in done.stderr, "no progress bar in a pipe"
    assert "RANDOM weights" in done.stdout and len(done.stdout.splitlines()) <= 8
    source, written = nib.load(str(image)), nib.load(str(out))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
    label = np.asarray(written.dataobj)
    assert set(np.unique(label)) <= {0, 1, 5}
    assert not label[..., : z - 1].any() and not label[..., z + 3 :].any()
    report = json.loads(scores.read_text())
    assert set(report["labels"]) == {"1", "5"} and [s["slice"] for s in report["labels"]["5"]["slices"]] == [z - 1, z, z + 1, z + 2]
    liver = report["labels"]["5"]
    propagated = [s for s in liver["slices"] if not s["seed"]]
    assert liver["seed_slices"] == [z] and len(propagated) == 3
    assert liver["mean_object_score"] == pytest.approx(np.mean([s["object_score"] for s in propagated]), abs=1e-3)
    row_mm, col_mm = np.abs(np.diag(source.affine))[[1, 0]]
    for s in liver["slices"]:
        assert s["area_mm2"] == pytest.approx(s["area"] * row_mm * col_mm, rel=1e-3)
        assert s["area"] == int((label[..., s["slice"]] == 5).sum())
    prov = report["provenance"]
    assert prov["inputs"]["image"]["file"] == "example_ct_sm.nii.gz" and prov["inputs"]["seed"]["file"] == "seed.nii.gz"
    import hashlib

    assert prov["inputs"]["image"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert prov["checkpoint"] == {"file": random_checkpoint.name, "sha256": hashlib.sha256(random_checkpoint.read_bytes()).hexdigest()}
    assert prov["random_weights"] is True and prov["model"] == "SAM2.1 tiny" and prov["input_size"] == TEST_IMAGE_SIZE
    assert prov["window"] == "window:40,400" and set(prov["versions"]) == {"sam2med", "sam2", "torch"} and all(prov["versions"].values())


def test_per_label_ranges_and_names(ct_case, random_checkpoint, tmp_path, capsys, shared_data):
    image, seed, z, _ = ct_case
    out, scores = tmp_path / "out.nii.gz", tmp_path / "scores.json"
    code = main(["propagate", str(image), "--seed", str(seed), "--range", f"liver:{z - 1}-{z + 2}", "--range", f"1:{z}-{z + 1}",
                 "--labels-map", f"{shared_data}/totalsegmentator/labels.json:total", "--checkpoint", str(random_checkpoint),
                 "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE), "-o", str(out), "--scores", str(scores)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "spleen (value 1)" in printed and "liver (value 5)" in printed and f"{z - 1}..{z + 2}" in printed
    label = np.asarray(nib.load(str(out)).dataobj)
    spleen_slices = set(np.flatnonzero((label == 1).any(axis=(0, 1))))
    assert spleen_slices <= {z, z + 1} and z in spleen_slices, "the spleen stays inside its own range"
    assert not label[..., : z - 1].any() and not label[..., z + 3 :].any()
    report = json.loads(scores.read_text())
    assert report["labels"]["1"]["slice_range"] == [z, z + 1] and report["labels"]["5"]["slice_range"] == [z - 1, z + 2]
    assert [s["slice"] for s in report["labels"]["1"]["slices"]] == [z, z + 1]
    assert report["labels"]["1"]["name"] == "spleen"


def _error_line(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_inputs_fail_with_one_line_and_no_output(ct_case, random_checkpoint, tmp_path, capsys, monkeypatch):
    image, seed, z, folder = ct_case
    out = tmp_path / "out.nii.gz"
    base = ["propagate", str(image), "--seed", str(seed), "-o", str(out), "--checkpoint", str(random_checkpoint), "--device", "cpu"]

    unreadable = tmp_path / "broken.nii.gz"
    unreadable.write_bytes(b"\x00garbage")
    other_grid = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), np.eye(4)), str(other_grid))
    empty = tmp_path / "empty.nii.gz"
    ref = nib.load(str(seed))
    nib.save(nib.Nifti1Image(np.zeros(ref.shape, np.uint8), ref.affine, ref.header), str(empty))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    (folder / "scores.json").mkdir(exist_ok=True)
    (folder / "out_dir.nii.gz").mkdir(exist_ok=True)

    cases = {
        "cannot read": ["propagate", str(unreadable), "--seed", str(seed), "-o", str(out)],
        "not on the image grid": ["propagate", str(image), "--seed", str(other_grid), "-o", str(out)],
        "seed label is empty": ["propagate", str(image), "--seed", str(empty), "-o", str(out)],
        "outside the volume": base + ["--range", "0", "99"],
        "reversed": base + ["--range", str(z + 2), str(z - 2)],
        "outside the slice range": base + ["--range", str(z + 1), str(z + 3)],
        "unknown model 'giant'": base + ["--model", "giant"],
        "does not exist": ["propagate", str(image), "--seed", str(seed), "-o", str(out), "--checkpoint", str(tmp_path / "none.pt")],
        "no usable CUDA": base + ["--device", "cuda"],
        "not in the seed": base + ["--labels", "7"],
        "unsupported output format": ["propagate", str(image), "--seed", str(seed), "-o", str(tmp_path / "out.png")],
        "unknown window": base + ["--window", "sunset"],
        # issue 16.10: the output is checked first (the image does not even exist here), not after the propagation
        "is a folder": ["propagate", str(tmp_path / "missing.nii.gz"), "--seed", str(seed), "-o", str(folder / "out_dir.nii.gz")],
        "cannot write there": ["propagate", str(tmp_path / "missing.nii.gz"), "--seed", str(seed), "-o", "/proc/out.nii.gz"],
        "scores.json: is a folder": base + ["--scores", str(folder / "scores.json")],
        # argument errors come before the model (here: a missing checkpoint) is looked at
        "unknown window 'foo'": base[:-4] + ["--checkpoint", str(tmp_path / "none.pt"), "--window", "foo"],
        "--image-size must be a multiple of 32": base[:-4] + ["--checkpoint", str(tmp_path / "none.pt"), "--image-size", "300"],
        "--device 'gpu'": base[:-4] + ["--checkpoint", str(tmp_path / "none.pt"), "--device", "gpu"],
        "which are not propagated": base + ["--range", "7:1-3"],
        "give START END, LABEL:START-END": base + ["--range", "5:1"],
        f"outside the slice range {z + 1}..{z + 3}": base + ["--range", f"5:{z + 1}-{z + 3}"],
    }
    for expected, argv in cases.items():
        assert expected in _error_line(capsys, argv), expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.nii.gz", "empty.nii.gz", "other.nii.gz"]  # no output, no partial


def test_label_values_over_65535_are_kept(ct_case, random_checkpoint, tmp_path, capsys):
    """Issue 16.7: a seed value 70000 came out as 4464 (uint16 wrap)."""
    image, seed, z, _ = ct_case
    source = nib.load(str(seed))
    values = np.asarray(source.dataobj).astype(np.uint32)
    values[values == 5] = 70000
    big_seed, out = tmp_path / "seed70000.nii.gz", tmp_path / "out.nii.gz"
    nib.save(nib.Nifti1Image(values, source.affine), str(big_seed))
    code = main(["propagate", str(image), "--seed", str(big_seed), "--range", str(z - 1), str(z + 1), "-o", str(out),
                 "--checkpoint", str(random_checkpoint), "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE)])
    assert code == 0, capsys.readouterr().err
    label = np.asarray(nib.load(str(out)).dataobj)
    assert label.dtype == np.uint32 and set(np.unique(label)) <= {0, 1, 70000}
    seed_slice, result_slice = values[..., z] == 70000, label[..., z] == 70000
    assert 2 * np.count_nonzero(seed_slice & result_slice) / (seed_slice.sum() + result_slice.sum()) >= 0.95


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for command in ("propagate", "serve", "evaluate", "bench", "download", "samples"):
        assert command in text
    with pytest.raises(SystemExit):
        main(["propagate", "--help"])
    text = capsys.readouterr().out
    assert "--range START END" in text and "LABEL:START-END" in text


def test_every_option_has_help_and_no_default_is_said_twice():
    import argparse

    from sam2med.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
        for action in sub._actions:
            helped = (sub._get_formatter()._get_help_string(action) if action.help else "").replace("%(default)s", "X")
            assert helped.lower().count("default") <= 1, f"{name} {action.option_strings}: {helped}"


def test_cpu_advice_points_to_a_smaller_input_and_a_gpu():
    from sam2med.cli.common import cpu_advice

    advice = cpu_advice("cpu", 1024)
    assert "1024 px" in advice and "--image-size 512" in advice and "GPU" in advice
    assert cpu_advice("cpu", 512) is None and cpu_advice("cuda", 1024) is None


def test_summary_stays_a_few_lines_for_a_long_range():
    from sam2med.cli.propagate import summary_lines

    slices = [{"slice": s, "object_score": 0.3 if s in (40, 41, 42, 90) else 0.9, "iou": 0.8, "area": 0 if 60 <= s < 70 else s,
               "area_mm2": 0.0 if 60 <= s < 70 else 1.25 * s, "seed": s == 50} for s in range(10, 310)]
    report = {"labels": {"5": {"slices": slices, "voxels": 2900, "volume_mm3": 14500.0, "mean_object_score": 0.88,
                               "seed_slices": [50], "slice_range": [10, 309]}}}
    lines = summary_lines(report, {5: "liver"})
    assert len(lines) == 2
    assert "liver (value 5)" in lines[0] and "on slices 10-59, 70-309 of 10..309" in lines[0] and "seeds 50" in lines[0]
    assert "(largest: 386 mm2 on slice 309)" in lines[0]
    assert lines[1].endswith("below 0.5: 40-42, 90")


def test_range_auto_with_a_bound_and_selective_memory(ct_case, random_checkpoint, tmp_path, capsys):
    image, seed, z, _ = ct_case
    out, scores = tmp_path / "out.nii.gz", tmp_path / "scores.json"
    code = main(["propagate", str(image), "--seed", str(seed), "--range", "auto", "--max-slices", "2", "--absent-slices", "50",
                 "--min-object-score", "0", "--memory", "selective", "--checkpoint", str(random_checkpoint), "--device", "cpu",
                 "--image-size", str(TEST_IMAGE_SIZE), "-o", str(out), "--scores", str(scores)])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"5 slices ({z - 2}..{z + 2}" in printed and f"forward stopped at slice {z + 2} (bound reached)" in printed
    label = np.asarray(nib.load(str(out)).dataobj)
    assert not label[..., : z - 2].any() and not label[..., z + 3 :].any()
    report = json.loads(scores.read_text())
    assert report["auto_range"] == {"mode": "auto", "absent_slices": 50, "min_object_score": 0.0, "max_slices": 2}
    assert report["memory"]["policy"] == "selective"
    for value in ("1", "5"):
        stops = report["labels"][value]["auto_range"]
        assert (stops["forward"]["reason"], stops["forward"]["stopped_at"]) == ("bound_reached", z + 2)
        assert (stops["backward"]["reason"], stops["backward"]["stopped_at"]) == ("bound_reached", z - 2)
        slices = report["labels"][value]["slices"]
        assert [s["slice"] for s in slices] == list(range(z - 2, z + 3))
        assert all("memory_slices" in s for s in slices if not s["seed"])


def test_policy_options_are_checked_before_any_work(ct_case, random_checkpoint, tmp_path, capsys):
    image, seed, z, _ = ct_case
    out = tmp_path / "out.nii.gz"
    base = ["propagate", str(image), "--seed", str(seed), "-o", str(out), "--checkpoint", str(tmp_path / "none.pt")]
    cases = {
        "--absent-slices applies to --range auto only": base + ["--absent-slices", "3"],
        "--range auto and --range START END": base + ["--range", "auto", "--range", str(z), str(z + 1)],
        "at least 1": base + ["--range", "auto", "--absent-slices", "0"],
        "must lie in 0..1": base + ["--range", "auto", "--min-object-score", "2"],
    }
    for expected, argv in cases.items():
        assert expected in _error_line(capsys, argv), expected
    assert not out.exists()


def test_drawn_slices_kept_and_locked_label_untouched(ct_case, random_checkpoint, tmp_path, capsys, shared_data):
    """Liver drawn with fine holes on z, spleen on z - 2, a finished structure (9) locked on z - 1 and outside the range."""
    image, _, z, _ = ct_case
    seg = nib.load(str(shared_data / "totalsegmentator" / "example_seg.nii.gz"))
    truth = np.asarray(seg.dataobj).astype(np.uint8)
    seed = np.zeros_like(truth)
    liver = truth[..., z] == 5
    liver[::2, ::2] = False  # one-voxel holes: SAM2's 64 px mask of a 256 px input cannot hold them
    seed[..., z][liver] = 5
    seed[..., z - 2][truth[..., z - 2] == 1] = 1
    seed[30:60, 30:60, z - 1] = 9  # locked, across the middle of the body where the labels are propagated
    seed[30:60, 30:60, z + 4] = 9  # locked, outside the range
    seed_path, out, scores = tmp_path / "seed.nii.gz", tmp_path / "out.nii.gz", tmp_path / "scores.json"
    nib.save(nib.Nifti1Image(seed, seg.affine), str(seed_path))
    code = main(["propagate", str(image), "--seed", str(seed_path), "--range", str(z - 2), str(z + 1), "--lock", "finished",
                 "--labels-map", str(_labels_map(tmp_path)), "--checkpoint", str(random_checkpoint), "--device", "cpu",
                 "--image-size", str(TEST_IMAGE_SIZE), "-o", str(out), "--scores", str(scores)])
    printed = capsys.readouterr().out
    assert code == 0
    label = np.asarray(nib.load(str(out)).dataobj)
    np.testing.assert_array_equal(label[..., z] == 5, liver)  # voxel for voxel, holes included
    np.testing.assert_array_equal(label[..., z - 2] == 1, seed[..., z - 2] == 1)
    np.testing.assert_array_equal(label == 9, seed == 9)  # the locked structure, everywhere, and nothing else of value 9
    outside = np.ones(label.shape[2], bool)
    outside[z - 2 : z + 2] = False
    assert set(np.unique(label[..., outside])) <= {0, 9}, "only the locked structure outside the range"
    report = json.loads(scores.read_text())
    assert report["overlap"] == "keep" and report["kept_slices"] == {"liver": [z], "1": [z - 2]}
    assert report["locked_labels"] == {"finished": 2 * 30 * 30} and set(report["labels"]) == {"1", "5"}
    assert f"seeds {z} (kept as drawn)" in printed and "finished: locked, 1800 voxels kept as they were" in printed


def _labels_map(folder: Path) -> Path:
    path = folder / "names.json"
    path.write_text(json.dumps({"5": "liver", "9": "finished"}))
    return path


def test_overlap_and_lock_options_are_checked_before_any_work(ct_case, random_checkpoint, tmp_path, capsys):
    image, seed, z, _ = ct_case
    out = tmp_path / "out.nii.gz"
    base = ["propagate", str(image), "--seed", str(seed), "-o", str(out), "--checkpoint", str(random_checkpoint), "--device", "cpu"]
    cases = {
        "--overlap must be one of keep, overwrite, confidence, got 'union'": base + ["--overlap", "union"],
        "--lock 'kidney': not a positive label value or a name in the labels map (give --labels-map": base + ["--lock", "kidney"],
        "label(s) [5] are locked: a locked label is kept, not propagated": base + ["--lock", "5", "--labels", "5"],
        "every label of the seed is locked ([1, 5]): nothing to propagate": base + ["--lock", "1", "5"],
    }
    for expected, argv in cases.items():
        assert expected in _error_line(capsys, argv), expected
    assert not out.exists()
def test_plain_range_bounds_every_label_without_its_own(ct_case, random_checkpoint, tmp_path, capsys, shared_data):
    """--range START END with a label's own range: the other labels stay inside START..END (written voxels, --scores)."""
    image, seed, z, _ = ct_case
    out, scores = tmp_path / "out.nii.gz", tmp_path / "scores.json"
    code = main(["propagate", str(image), "--seed", str(seed), "--range", f"liver:{z - 2}-{z + 1}", "--range", str(z), str(z + 1),
                 "--labels-map", f"{shared_data}/totalsegmentator/labels.json:total", "--checkpoint", str(random_checkpoint),
                 "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE), "-o", str(out), "--scores", str(scores)])
    assert code == 0, capsys.readouterr().err
    label = np.asarray(nib.load(str(out)).dataobj)
    spleen_slices = set(np.flatnonzero((label == 1).any(axis=(0, 1))))
    assert spleen_slices <= {z, z + 1} and z in spleen_slices, f"the spleen (no range of its own) is on {sorted(spleen_slices)}"
    assert not (label == 5)[..., z + 2:].any() and not label[..., : z - 2].any()
    report = json.loads(scores.read_text())
    assert report["labels"]["1"]["slice_range"] == [z, z + 1] and report["labels"]["5"]["slice_range"] == [z - 2, z + 1]
    assert [s["slice"] for s in report["labels"]["1"]["slices"]] == [z, z + 1]


def test_labels_by_name_and_start_end_in_one_token(ct_case, random_checkpoint, tmp_path, capsys, shared_data):
    """--labels liver (a --labels-map name) and --range START-END, as manifests and the server take them."""
    image, seed, z, _ = ct_case
    out, scores = tmp_path / "out.nii.gz", tmp_path / "scores.json"
    code = main(["propagate", str(image), "--seed", str(seed), "--labels", "liver", "--range", f"{z}-{z + 1}",
                 "--labels-map", f"{shared_data}/totalsegmentator/labels.json:total", "--checkpoint", str(random_checkpoint),
                 "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE), "-o", str(out), "--scores", str(scores)])
    assert code == 0, capsys.readouterr().err
    label = np.asarray(nib.load(str(out)).dataobj)
    assert set(np.unique(label)) == {0, 5}, "only the liver is propagated"
    assert set(np.flatnonzero(label.any(axis=(0, 1)))) <= {z, z + 1}
    report = json.loads(scores.read_text())
    assert list(report["labels"]) == ["5"] and report["slice_range"] == [z, z + 1]
    line = _error_line(capsys, ["propagate", str(image), "--seed", str(seed), "--labels", "kidney", "-o", str(tmp_path / "x.nii.gz"),
                                "--labels-map", f"{shared_data}/totalsegmentator/labels.json:total"])
    assert "unknown label name 'kidney'" in line and "liver=5" in line and not (tmp_path / "x.nii.gz").exists()


def test_a_seed_drawn_along_another_axis_gets_a_one_line_hint(random_checkpoint, tmp_path, capsys):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    image = np.random.default_rng(0).normal(0, 100, (24, 24, 6)).astype(np.int16)
    seed = np.zeros(image.shape, np.uint8)
    seed[6:14, 8:12, 3] = 1  # drawn on axial slice 3: four coronal slices (y 8..11), each holding one line
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "image.nii.gz"))
    nib.save(nib.Nifti1Image(seed, affine), str(tmp_path / "seed.nii.gz"))
    code = main(["propagate", str(tmp_path / "image.nii.gz"), "--seed", str(tmp_path / "seed.nii.gz"), "--axis", "coronal",
                 "--range", "8", "11", "--checkpoint", str(random_checkpoint), "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE),
                 "-o", str(tmp_path / "out.nii.gz")])
    printed = capsys.readouterr().out
    assert code == 0
    hints = [line for line in printed.splitlines() if "did you mean" in line]
    assert hints == ["note: the seed lies on 1 axial slice (3) but on 4 coronal slices, a line on each: did you mean axis axial?"]


# The keys of the --scores JSON, pinned before the issue-25 refactor: clients read these, so a move must not change them.
SCORES_KEYS = {"axis", "cache", "encode_seconds", "kept_slices", "labels", "locked_labels", "overlap", "provenance", "seconds",
               "slice_range", "slices_processed", "track_seconds"}
SCORES_LABEL_KEYS = {"mean_iou", "mean_object_score", "means_exclude_seed_slices", "name", "seed_slices", "slice_range", "slices",
                     "volume_mm3", "voxels"}
SCORES_SLICE_KEYS = {"area", "area_mm2", "iou", "object_score", "seed", "slice"}


def test_scores_json_keys_are_pinned(ct_case, random_checkpoint, tmp_path, capsys):
    image, seed, z, _ = ct_case
    out, scores = tmp_path / "out.nii.gz", tmp_path / "scores.json"
    assert main(["propagate", str(image), "--seed", str(seed), "--range", str(z), str(z + 1), "--checkpoint", str(random_checkpoint),
                 "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE), "-o", str(out), "--scores", str(scores)]) == 0
    report = json.loads(scores.read_text())
    assert set(report) == SCORES_KEYS
    for info in report["labels"].values():
        assert set(info) == SCORES_LABEL_KEYS
        assert all(set(s) == SCORES_SLICE_KEYS for s in info["slices"])
