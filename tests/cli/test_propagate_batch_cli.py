"""`main.py propagate-batch` on the real CT and MR: outputs on each image's grid, a bad row recorded while the
batch goes on, a re-run that skips what is done, the same labels through a local Ray cluster, Ctrl-C on Ray."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, TEST_IMAGE_SIZE
from sam2med.cli import main

pytestmark = pytest.mark.integration
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (requirements.txt pins it): the --ray runs cannot be tested")

CT, MR = "example_ct_sm.nii.gz", "example_mr_sm.nii.gz"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def seed_on_largest_slice(segmentation, value: int, path) -> int:
    """A seed of `value` on its largest axial slice, saved on the segmentation's grid; returns the slice."""
    truth = np.asarray(segmentation.dataobj).astype(np.uint8)
    z = int(np.argmax((truth == value).sum(axis=(0, 1))))
    seed = np.zeros_like(truth)
    seed[..., z] = np.where(truth[..., z] == value, value, 0)
    nib.save(nib.Nifti1Image(seed, segmentation.affine, segmentation.header), str(path))
    return z


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory):
    """A manifest beside its seeds: CT liver (5), MR spleen (1), and the MR seed given to the CT (another grid)."""
    d = shared_data / "totalsegmentator"
    folder = tmp_path_factory.mktemp("cohort")
    (folder / "seeds").mkdir()
    z_ct = seed_on_largest_slice(nib.load(str(d / "example_seg.nii.gz")), 5, folder / "seeds" / "ct_liver.nii.gz")
    z_mr = seed_on_largest_slice(nib.load(str(d / "example_seg_mr.nii.gz")), 1, folder / "seeds" / "mr_spleen.nii.gz")
    manifest = folder / "rows.csv"
    manifest.write_text("image,seed,range,labels,output\n"
                        f"{d / CT},seeds/ct_liver.nii.gz,{z_ct - 2}-{z_ct + 1},5,ct_liver.nii.gz\n"
                        f"{d / MR},seeds/mr_spleen.nii.gz,{z_mr - 3}-{z_mr},,\n"
                        f"{d / CT},seeds/mr_spleen.nii.gz,,,ct_bad.nii.gz\n")
    return {"manifest": manifest, "folder": folder, "data": d, "z": {"ct": z_ct, "mr": z_mr}}


def batch_args(manifest, out, checkpoint, *extra) -> list[str]:
    return ["propagate-batch", "--manifest", str(manifest), "-o", str(out), "--checkpoint", str(checkpoint),
            "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE), *extra]


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def local_run(cohort, random_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "labels"
    code = main(batch_args(cohort["manifest"], out, random_checkpoint))
    return code, out, records(out)


def test_rows_are_written_on_their_image_grid_and_a_bad_row_is_recorded(cohort, local_run):
    code, out, lines = local_run
    assert code == 1  # a row failed
    assert sorted(p.name for p in out.iterdir()) == ["ct_liver.nii.gz", "example_mr_sm_label.nii.gz", "results.jsonl"]
    by_output = {line["output"].rsplit("/", 1)[-1]: line for line in lines}
    assert {k: v["status"] for k, v in by_output.items()} == {"ct_liver.nii.gz": "ok", "example_mr_sm_label.nii.gz": "ok",
                                                             "ct_bad.nii.gz": "failed"}
    bad = by_output["ct_bad.nii.gz"]
    assert bad["row"] == 3 and "not on the image grid" in bad["error"] and "\n" not in bad["error"] and "report" not in bad
    for name, image, seed, value, kind, first, last in [
        ("ct_liver.nii.gz", CT, "ct_liver.nii.gz", 5, "ct", -2, 1),
        ("example_mr_sm_label.nii.gz", MR, "mr_spleen.nii.gz", 1, "mr", -3, 0),
    ]:
        z = cohort["z"][kind]
        source, written = nib.load(str(cohort["data"] / image)), nib.load(str(out / name))
        assert written.shape == source.shape
        np.testing.assert_allclose(written.header.get_zooms(), source.header.get_zooms(), atol=1e-4)  # spacing
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)  # origin and direction
        label = np.asarray(written.dataobj)
        seed = np.asarray(nib.load(str(cohort["folder"] / "seeds" / seed)).dataobj)
        assert set(np.unique(label)) == {0, value}  # the seed's value, kept
        assert dice(label[..., z] == value, seed[..., z] == value) >= 0.95  # the seed slice comes back
        assert not label[..., : z + first].any() and not label[..., z + last + 1 :].any()  # nothing outside the range
        report = by_output[name]["report"]
        assert report["slice_range"] == [z + first, z + last] and by_output[name]["seconds"] > 0
        slices = report["labels"][str(value)]["slices"]
        assert [s["slice"] for s in slices] == list(range(z + first, z + last + 1))
        assert [s["area"] for s in slices] == [int((label[..., s["slice"]] == value).sum()) for s in slices]
        assert all(0 <= s["object_score"] <= 1 for s in slices) and [s["slice"] for s in slices if s["seed"]] == [z]


def test_a_rerun_skips_the_rows_done_and_retries_the_failed_one(cohort, local_run, random_checkpoint, capsys):
    _, out, first = local_run
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    assert main(batch_args(cohort["manifest"], out, random_checkpoint)) == 1
    again = records(out)[len(first):]
    assert sorted((line["row"], line["status"]) for line in again) == [(1, "skipped"), (2, "skipped"), (3, "failed")]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == stamps  # untouched
    assert "0 ok, 2 skipped, 1 failed" in capsys.readouterr().out


@needs_ray
def test_one_thread_everywhere_gives_the_same_labels_with_and_without_ray(cohort, random_checkpoint, tmp_path, caplog):
    """--threads 1: the local run drops to 1 thread and the workers keep 1 (their share here). Whole volumes, bf16 on
    this CPU: the case where 1 and 2 threads differ most (958 CT and 572 MR voxels, docs/batch.md), so a local run
    left on its default 2 threads would fail this. A bad row fails on its worker as it does here."""
    import ray

    d = cohort["data"]
    manifest = tmp_path / "whole.csv"
    manifest.write_text("image,seed,output\n"
                        f"{d / CT},{cohort['folder'] / 'seeds' / 'ct_liver.nii.gz'},ct.nii.gz\n"
                        f"{d / MR},{cohort['folder'] / 'seeds' / 'mr_spleen.nii.gz'},mr.nii.gz\n"
                        f"{d / CT},{cohort['folder'] / 'seeds' / 'mr_spleen.nii.gz'},ct_bad.nii.gz\n")
    for run, extra in (("local", []), ("ray", ["--ray", "local", "--workers", "2"])):
        with caplog.at_level("INFO", logger="sam2med.distributed.ray_pool"):
            assert main(batch_args(manifest, tmp_path / run, random_checkpoint, "--threads", "1", *extra)) == 1
    assert not ray.is_initialized()  # the local instance is shut down
    assert f"running sam2med from {REPO / 'lib' / 'sam2med' / '__init__.py'}" in caplog.text  # this checkout, not another
    assert "2 worker(s)" in caplog.text
    assert sorted((line["row"], line["status"]) for line in records(tmp_path / "ray")) == [(1, "ok"), (2, "ok"), (3, "failed")]
    for name in ("ct.nii.gz", "mr.nii.gz"):
        (local, local_affine), (remote, remote_affine) = (
            (np.asarray(image.dataobj), image.affine) for image in (nib.load(str(tmp_path / run / name)) for run in ("local", "ray")))
        assert local.any() and np.count_nonzero(local != remote) == 0
        np.testing.assert_allclose(remote_affine, local_affine)


def test_manifest_errors_stop_before_any_work(tmp_path, capsys):
    (tmp_path / "rows.csv").write_text("image,seed,organ\na.nii.gz,b.nii.gz,liver\n")
    assert main(["propagate-batch", "--manifest", str(tmp_path / "rows.csv"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'rows.csv'}: unknown column(s) organ; the columns are image, seed, range, axis, "
                   "window, labels, output"]
    assert not (tmp_path / "out").exists()
    assert main(["propagate-batch", "--manifest", str(tmp_path / "rows.csv"), "-o", str(tmp_path / "out"), "--workers", "2"]) == 2
    assert "--workers applies to --ray only" in capsys.readouterr().err
    assert main(["propagate-batch", "--manifest", str(tmp_path / "rows.csv"), "-o", str(tmp_path / "out"), "--threads", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --threads must be at least 1, got 0"


@needs_ray
def test_ctrl_c_on_ray_leaves_complete_outputs_and_their_lines(cohort, random_checkpoint, tmp_path):
    d = cohort["data"]
    manifest = tmp_path / "rows.csv"
    manifest.write_text("image,seed,output\n" + "".join(
        f"{d / image},{cohort['folder'] / 'seeds' / seed},{kind}{i}.nii.gz\n"
        for i in range(4) for image, seed, kind in ((CT, "ct_liver.nii.gz", "ct"), (MR, "mr_spleen.nii.gz", "mr"))))
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "main.py"), *batch_args(manifest, out, random_checkpoint, "--ray", "local", "--workers", "2")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "lib"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    try:
        deadline = time.monotonic() + 240
        while not ((out / "results.jsonl").exists() and (out / "results.jsonl").read_text().count("\n") >= 1):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in stderr
    lines = records(out)
    done = {line["output"].rsplit("/", 1)[-1] for line in lines if line["status"] == "ok"}
    assert 1 <= len(done) < 8
    assert sorted(p.name for p in out.iterdir()) == sorted(done | {"results.jsonl"})  # no partial file, no row without line
    for name in done:
        assert nib.load(str(out / name)).shape == nib.load(str(d / (CT if name.startswith("ct") else MR))).shape


def test_the_local_path_never_imports_ray():
    code = ("import sys; from sam2med.cli import build_parser; build_parser(); "
            "import sam2med.batch.runner, sam2med.batch.results, sam2med.evaluation.runner, sam2med.cli.evaluate; "
            "sys.exit('ray' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "lib"), os.environ.get("PYTHONPATH", "")])}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0


def test_a_rows_plain_range_bounds_its_labels_without_their_own(shared_data, random_checkpoint, tmp_path):
    """range "START-END LABEL:START-END" and labels by name: the spleen (no range of its own) stays inside START-END."""
    d = shared_data / "totalsegmentator"
    segmentation = nib.load(str(d / "example_seg.nii.gz"))
    truth = np.asarray(segmentation.dataobj).astype(np.uint8)
    z = int(np.argmax((truth == 5).sum(axis=(0, 1))))
    seed = np.zeros_like(truth)
    seed[..., z] = np.where(np.isin(truth[..., z], [1, 5]), truth[..., z], 0)
    nib.save(nib.Nifti1Image(seed, segmentation.affine, segmentation.header), str(tmp_path / "seed.nii.gz"))
    manifest = tmp_path / "rows.csv"
    manifest.write_text(f'image,seed,range,labels,output\n{d / CT},seed.nii.gz,{z}-{z + 1} liver:{z - 2}-{z + 1},"liver,spleen",ct.nii.gz\n')
    out = tmp_path / "labels"
    code = main(batch_args(manifest, out, random_checkpoint, "--labels-map", f"{d / 'labels.json'}:total"))
    line, = records(out)
    assert code == 0, line
    label = np.asarray(nib.load(str(out / "ct.nii.gz")).dataobj)
    spleen = set(np.flatnonzero((label == 1).any(axis=(0, 1))))
    assert z in spleen and spleen <= {z, z + 1}, f"the spleen is written on slices {sorted(spleen)}"
    assert not label[..., : z - 2].any() and not label[..., z + 2:].any()
    labels = line["report"]["labels"]
    assert labels["1"]["slice_range"] == [z, z + 1] and labels["5"]["slice_range"] == [z - 2, z + 1]
