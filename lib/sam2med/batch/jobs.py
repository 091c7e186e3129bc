"""Running batch rows: one loaded propagator per worker, a row in, its label and report (or one error line) out."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam2med.batch.manifest import BatchRow
from sam2med.engine.policies import AutoRange, SelectiveMemory
from sam2med.errors import Sam2MedError
from sam2med.geometry import Grid
from sam2med.io import Volume, check_file, load_label, load_volume, read_grid
from sam2med.labelnames import label_name
from sam2med.prompts import seed_prompt

logger = logging.getLogger(__name__)

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class RowOutcome:
    """What one row gave: its label on the image's grid and the engine's report when it ran, else why not."""

    row: BatchRow
    status: str
    seconds: float = 0.0
    error: str | None = None
    report: dict | None = None  # PropagationResult.to_json: per-label, per-slice confidence
    label: np.ndarray | None = None
    grid: Grid | None = None

    def record(self) -> dict:
        """The row's results.jsonl line (without the arrays)."""
        return {**self.row.to_json(), "status": self.status, "seconds": round(self.seconds, 3),
                **({"error": self.error} if self.error else {}), **({"report": self.report} if self.report else {})}


def first_line(err: BaseException) -> str:
    """An exception as one readable line."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def existing_output_ok(row: BatchRow) -> bool:
    """Whether `row`'s output is already done: a readable, complete label map on its image's grid."""
    if not row.output.is_file():
        return False
    try:
        return load_label(row.output).grid.matches(read_grid(row.image))
    except Sam2MedError as err:
        logger.info("row %d: existing %s is redone (%s)", row.number, row.output.name, err)
        return False


class RowRunner:
    """Propagates rows with one propagator, loaded once; rows of one image in a row reuse its features."""

    def __init__(self, propagator_kwargs: dict, auto: AutoRange | None = None, memory: SelectiveMemory | None = None,
                 names: dict[int, str] | None = None):
        from sam2med.engine import Propagator

        self.propagator = Propagator(**propagator_kwargs)
        self.auto, self.memory, self.names = auto, memory, names or {}
        self._image: tuple[Path, float, Volume] | None = None  # the last image read, reused by the next row of it

    def _load_image(self, path: Path) -> Volume:
        stamp = path.stat().st_mtime if path.exists() else -1.0
        if self._image is None or self._image[:2] != (path, stamp):
            self._image = (path, stamp, load_volume(path))
        return self._image[2]

    def run(self, row: BatchRow) -> RowOutcome:
        """Propagate one row; any failure of the row is returned as its one-line error, never raised."""
        start = time.perf_counter()
        try:
            image = self._load_image(row.image)
            seed = load_label(check_file(row.seed, "seed label"))
            prompt = seed_prompt(seed.array, seed.grid, image.grid, row.axis, row.range, row.labels, self.names)
            if prompt.hint:
                logger.warning("row %d: %s", row.number, prompt.hint)
            result = self.propagator.propagate(image, prompt.seeds, prompt.slice_range, window=row.window,
                                               label_ranges=prompt.label_ranges, memory=self.memory,
                                               auto=self.auto if row.range.auto else None)
        except Exception as err:  # one row's failure must not end the batch
            logger.debug("row %d failed", row.number, exc_info=not isinstance(err, Sam2MedError))
            return RowOutcome(row, FAILED, time.perf_counter() - start, error=first_line(err))
        report = result.to_json()
        for label, info in report["labels"].items():
            info["name"] = label_name(int(label), self.names)
        return RowOutcome(row, OK, time.perf_counter() - start, report=report, label=result.label, grid=image.grid)
