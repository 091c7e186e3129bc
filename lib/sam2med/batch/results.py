"""Writing a batch's results as rows complete: the output label first (atomically), then its results.jsonl line."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from sam2med.batch.jobs import FAILED, OK, RowOutcome, first_line
from sam2med.errors import Sam2MedError
from sam2med.io import save_label

logger = logging.getLogger(__name__)

RESULTS_NAME = "results.jsonl"


class ResultsLog:
    """`results.jsonl`: one JSON object per row, each appended by a single write and flushed to disk, so an
    interrupted batch leaves whole lines only; a re-run appends its own lines after the earlier ones."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def write_outcome(outcome: RowOutcome, log: ResultsLog) -> RowOutcome:
    """Save an ok row's label (a failed save fails the row), then log the row; the arrays are dropped."""
    if outcome.status == OK:
        try:
            save_label(outcome.label, outcome.grid, outcome.row.output)
        except (Sam2MedError, OSError) as err:
            outcome.status, outcome.error, outcome.report = FAILED, f"cannot write the output: {first_line(err)}", None
    if outcome.status == FAILED:
        logger.error("row %d (%s): %s", outcome.row.number, outcome.row.image.name, outcome.error)
    log.append(outcome.record())
    outcome.label = None
    return outcome
