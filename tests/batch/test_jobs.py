"""Resuming: an existing output counts as done only when it reads back whole and lies on its image's grid."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from sam2med.batch.jobs import existing_output_ok
from sam2med.batch.manifest import read_manifest
from sam2med.batch.results import ResultsLog
from sam2med.batch.runner import skip_done
from sam2med.geometry import Grid
from sam2med.io import save_label

GRID = Grid(shape=(20, 16, 12), spacing=(0.8, 0.8, 2.5), origin=(-10.0, 5.0, 30.0), direction=(1, 0, 0, 0, -1, 0, 0, 0, 1))


@pytest.fixture
def row(tmp_path):
    image = np.arange(np.prod(GRID.shape), dtype=np.int16).reshape(GRID.shape)
    save_label(image.astype(np.uint16), GRID, tmp_path / "image.nii.gz")  # any scalar volume on GRID
    (tmp_path / "rows.csv").write_text("image,seed,output\nimage.nii.gz,seed.nii.gz,out.nii.gz\n")
    (tmp_path / "out").mkdir()
    return read_manifest(tmp_path / "rows.csv", tmp_path / "out")[0]


def label() -> np.ndarray:
    out = np.zeros(GRID.shape, dtype=np.uint8)
    out[4:9, 3:7, 5] = 5
    return out


def test_a_whole_output_on_the_image_grid_is_done(row):
    assert not existing_output_ok(row)  # no output yet
    save_label(label(), GRID, row.output)
    assert existing_output_ok(row)


def test_a_truncated_output_is_redone(row):
    save_label(label(), GRID, row.output)
    data = row.output.read_bytes()
    row.output.write_bytes(data[: len(data) // 2])  # a copy cut short
    assert not existing_output_ok(row)


def test_an_output_cut_inside_a_whole_gzip_stream_is_redone(row):
    save_label(label(), GRID, row.output)
    raw = gzip.decompress(row.output.read_bytes())
    row.output.write_bytes(gzip.compress(raw[: len(raw) - 500]))  # gzip intact, voxels missing
    assert not existing_output_ok(row)


def test_garbage_and_outputs_on_another_grid_are_redone(row):
    row.output.write_bytes(b"not an image at all")
    assert not existing_output_ok(row)
    other = Grid(shape=GRID.shape, spacing=(0.8, 0.8, 3.0), origin=GRID.origin, direction=GRID.direction)
    save_label(label(), other, row.output)
    assert not existing_output_ok(row)
    shifted = Grid(shape=GRID.shape, spacing=GRID.spacing, origin=(-10.0, 5.0, 31.0), direction=GRID.direction)
    save_label(label(), shifted, row.output)
    assert not existing_output_ok(row)


def test_skip_done_logs_skipped_rows_and_keeps_the_others(row, tmp_path):
    log = ResultsLog(tmp_path / "out" / "results.jsonl")
    skipped, todo = skip_done([row], log)
    assert skipped == [] and todo == [row] and not log.path.exists()
    save_label(label(), GRID, row.output)
    before = os.stat(row.output).st_mtime_ns
    skipped, todo = skip_done([row], log)
    assert [o.status for o in skipped] == ["skipped"] and todo == []
    assert log.path.read_text().count("\n") == 1 and '"status":"skipped"' in log.path.read_text()
    assert os.stat(row.output).st_mtime_ns == before
