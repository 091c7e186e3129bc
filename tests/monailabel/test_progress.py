"""Live slices on the progress board: run lengths, `since`, and the settling that makes them end as the answer."""

import numpy as np
import pytest

from sam2med.errors import InputError
from sam2med.monailabel.progress import ProgressBoard, rle_decode, rle_encode


@pytest.mark.parametrize("mask", [
    np.zeros((3, 4), bool), np.ones((3, 4), bool), np.eye(3, 4, dtype=bool), np.eye(3, 4, k=1, dtype=bool),
    np.random.default_rng(0).random((17, 23)) > 0.5,
])
def test_run_lengths_start_with_background_and_read_rows_first(mask):
    counts = rle_encode(mask)
    assert sum(counts) == mask.size and all(c > 0 for c in counts[1:])
    np.testing.assert_array_equal(rle_decode(counts, mask.shape), mask)


def test_run_lengths_by_hand():
    mask = np.array([[1, 1, 0], [0, 0, 1]], bool)  # C order: 1 1 0 0 0 1
    assert rle_encode(mask) == [0, 2, 3, 1]
    assert rle_encode(np.zeros((2, 3), bool)) == [6]
    with pytest.raises(InputError):
        rle_decode([1, 2], (2, 3))


def test_since_returns_entries_from_that_sequence_number_and_settle_republishes_what_changed():
    board = ProgressBoard()
    progress_id = board.issue()
    reporter = board.reporter(progress_id)
    reporter.values = {1: 7}  # the engine's 1 is the client's 7
    frame = np.zeros((2, 3), np.uint8)
    frame[0, :2] = 1
    frame[1, 2] = 5
    reporter.slice_done(4, frame, [1, 5])
    reporter.slice_done(3, np.zeros((2, 3), np.uint8), [1, 5])
    assert "slices" not in board.get(progress_id)  # a plain poll stays small
    first = board.get(progress_id, since=0)
    assert [(e["seq"], e["axis_index"], e["label"]) for e in first["slices"]] == [(0, 4, 7), (1, 4, 5), (2, 3, 7), (3, 3, 5)]
    assert first["slices"][0]["rle"] == [0, 2, 4] and first["next"] == 4 and first["slice_shape"] == [2, 3]
    assert board.get(progress_id, since=3)["slices"] == first["slices"][3:]
    final = np.zeros((6, 2, 3), np.uint8)  # the answer cleared label 7 on slice 4 (e.g. beyond an auto-range stop)
    final[4, 1, 2] = 5
    assert board.settle(progress_id, final) == 1
    later = board.get(progress_id, since=4)
    assert [(e["seq"], e["axis_index"], e["label"], e["rle"]) for e in later["slices"]] == [(4, 4, 7, [6])]
    assert board.get(progress_id, since=99)["slices"] == [] and board.get(progress_id, since=99)["next"] == 99
    with pytest.raises(InputError, match="since"):
        board.get(progress_id, since=-1)
    board.finish(progress_id)
    board.finish(progress_id, "failed")  # a done entry stays done
    assert board.get(progress_id)["stage"] == "done"
