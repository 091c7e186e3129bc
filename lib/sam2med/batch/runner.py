"""A batch from start to end: skip the rows already done, run the others grouped by image, write as they come."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tqdm import tqdm

from sam2med.batch.jobs import FAILED, SKIPPED, RowOutcome, RowRunner, existing_output_ok
from sam2med.batch.manifest import BatchRow
from sam2med.batch.results import ResultsLog, write_outcome
from sam2med.progress import on_terminal

logger = logging.getLogger(__name__)

# Runs groups of rows (all rows of one image in a group, in order) and yields each row's outcome as it completes.
Executor = Callable[[list[list[BatchRow]]], Iterable[RowOutcome]]


def group_by_image(rows: list[BatchRow]) -> list[list[BatchRow]]:
    """The rows of each image together, images in order of first appearance, rows in manifest order."""
    groups: dict[Path, list[BatchRow]] = {}
    for row in rows:
        groups.setdefault(row.image, []).append(row)
    return list(groups.values())


def local_executor(runner: RowRunner) -> Executor:
    """Every row in this process, one after the other, with `runner`'s propagator."""

    def execute(groups: list[list[BatchRow]]) -> Iterator[RowOutcome]:
        for group in groups:
            for row in group:
                yield runner.run(row)

    return execute


def stream_executor(stream: Callable[[list[list[BatchRow]], str], Iterable[tuple[BatchRow, object]]]) -> Executor:
    """Rows run elsewhere (`RayPool.stream` over `RowRunner.run`): a row whose worker was lost fails with that reason."""

    def execute(groups: list[list[BatchRow]]) -> Iterator[RowOutcome]:
        for row, result in stream(groups, "run"):
            yield result if isinstance(result, RowOutcome) else RowOutcome(row, FAILED, error=str(result))

    return execute


def skip_done(rows: list[BatchRow], log: ResultsLog) -> tuple[list[RowOutcome], list[BatchRow]]:
    """Log the rows whose valid output is already there as skipped; (their outcomes, the rows still to run)."""
    skipped: list[RowOutcome] = []
    todo: list[BatchRow] = []
    for row in rows:
        if existing_output_ok(row):
            skipped.append(write_outcome(RowOutcome(row, SKIPPED), log))
        else:
            todo.append(row)
    if skipped:
        logger.info("%d row(s) already done (valid outputs): skipped", len(skipped))
    return skipped, todo


def run_rows(rows: list[BatchRow], log: ResultsLog, execute: Executor) -> list[RowOutcome]:
    """Run `rows` grouped by image with `execute`, writing each output and results line as it arrives."""
    outcomes: list[RowOutcome] = []
    with tqdm(total=len(rows), desc="propagate-batch", unit="row", disable=not on_terminal()) as bar:
        for outcome in execute(group_by_image(rows)):
            outcomes.append(write_outcome(outcome, log))
            bar.update(1)
    return outcomes


def count_statuses(outcomes: list[RowOutcome]) -> Counter:
    return Counter(o.status for o in outcomes)
