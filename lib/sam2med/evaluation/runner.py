"""Running an evaluation: for every case and target, prompt by the protocol, propagate, measure.

Each target is propagated on its own, with its own range. A label map stored as the same voxel lattice with other axis order or flips (an LAS label of an LPS
DICOM series) is re-indexed exactly onto the image grid. A failure (unreadable file, grids that differ,
a requested label absent from the case, a propagator error) is logged as one line and recorded; the
run goes on with the next target or case.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
from tqdm import tqdm

from sam2med.errors import InputError, Sam2MedError
from sam2med.evaluation.metrics import TargetMetrics, compute_metrics
from sam2med.evaluation.pairing import Case
from sam2med.evaluation.propagators import SlicePropagator
from sam2med.evaluation.protocols import Protocol, RangeSpec, make_prompt
from sam2med.geometry import Axis, reorient_to
from sam2med.io import Volume, label_dtype, load_label, load_volume
from sam2med.labelnames import label_name
from sam2med.progress import on_terminal
from sam2med.prompts import SliceRange

logger = logging.getLogger(__name__)


@dataclass
class EvaluationConfig:
    """What is evaluated and how; `labels` None means every label value present in a case."""

    protocol: Protocol = field(default_factory=lambda: Protocol("largest-slice"))
    range_spec: RangeSpec = field(default_factory=lambda: RangeSpec("truth"))
    axis: Axis = Axis.AXIAL
    labels: list[int] | None = None
    names: dict[int, str] = field(default_factory=dict)
    min_slices: int = 1
    seed: int = 0

    def to_json(self) -> dict:
        return {
            "protocol": str(self.protocol), "range": str(self.range_spec), "axis": self.axis.name.lower(),
            "labels": self.labels, "min_slices": self.min_slices, "seed": self.seed,
        }


@dataclass
class TargetResult:
    """One (case, target) row: its metrics when it ran, else the reason it failed."""

    case: str
    label: int | None
    name: str
    propagator: str
    metrics: TargetMetrics | None = None
    seconds: float | None = None
    slice_range: SliceRange | None = None
    extent: SliceRange | None = None
    seed_slices: list[int] = field(default_factory=list)
    error: str | None = None
    prompt: bool = False  # one-prompt protocol: the prompt case's own row (its seed is its truth), not in the means

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def scored(self) -> bool:
        """A row that counts in the statistics: it ran and it is not the prompt."""
        return self.ok and not self.prompt

    def row(self) -> dict:
        metrics = self.metrics.to_dict() if self.metrics else {}
        return {
            "case": self.case, "label": "" if self.label is None else self.label, "name": self.name,
            "propagator": self.propagator, "status": "failed" if not self.ok else "prompt" if self.prompt else "ok",
            "dice": metrics.get("dice", ""), "iou": metrics.get("iou", ""),
            "hd95_mm": metrics.get("hd95_mm", ""), "asd_mm": metrics.get("asd_mm", ""),
            "seconds": "" if self.seconds is None else round(self.seconds, 4),
            "slices": len(self.slice_range) if self.slice_range else "",
            "range_start": self.slice_range.start if self.slice_range else "",
            "range_end": self.slice_range.end if self.slice_range else "",
            "truth_start": self.extent.start if self.extent else "",
            "truth_end": self.extent.end if self.extent else "",
            "seed_slices": " ".join(str(s) for s in self.seed_slices),
            "pred_voxels": metrics.get("pred_voxels", ""), "truth_voxels": metrics.get("truth_voxels", ""),
            "error": self.error or "",
        }


@dataclass
class CaseOutcome:
    """Everything one case produced; `volume`, `truth` and `prediction` are kept for previews and outputs."""

    case: Case
    targets: list[TargetResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    error: str | None = None
    volume: Volume | None = None
    truth: np.ndarray | None = None
    prediction: np.ndarray | None = None  # label values of the evaluated targets (a later target wins overlaps)

    @property
    def evaluated(self) -> bool:
        return any(t.scored for t in self.targets)

    @property
    def failed(self) -> bool:
        """The case could not be read, or every target tried failed (a case whose targets were all skipped is not)."""
        return self.error is not None or (bool(self.targets) and not any(t.ok for t in self.targets))


def _target_name(label: int, names: dict[int, str]) -> str:
    return label_name(label, names)


def _load_case(case: Case) -> tuple[Volume, Volume]:
    if case.label is None:
        raise InputError(f"no label file named {case.name!r} next to the others")
    volume, truth = load_volume(case.image), load_label(case.label)
    on_grid = reorient_to(truth.array, truth.grid, volume.grid)
    if on_grid is None:
        raise InputError(f"label and image grids differ ({truth.grid.describe_difference(volume.grid)})")
    if on_grid is not truth.array:
        logger.info("case %s: label stored with another axis order or flips; re-indexed exactly onto the image grid", case.name)
    return volume, Volume(array=on_grid, grid=volume.grid, source=truth.source)


def _evaluate_target(case: Case, volume: Volume, truth: np.ndarray, label: int, method: SlicePropagator,
                     config: EvaluationConfig) -> tuple[TargetResult, np.ndarray | None]:
    result = TargetResult(case.name, label, _target_name(label, config.names), method.name)
    rng = np.random.default_rng([config.seed, label, zlib.crc32(case.name.encode())])
    prompt = make_prompt(truth, label, config.axis, config.protocol, rng)
    result.extent, result.seed_slices = prompt.extent, prompt.seed_slices
    result.slice_range = config.range_spec.resolve(prompt.extent, volume.grid.num_slices(config.axis))
    start = time.perf_counter()
    pred = method.propagate(volume, prompt.seeds, result.slice_range)
    result.slice_range = getattr(method, "tracked_range", None) or result.slice_range  # sam2 with --range auto stops early
    result.seconds = time.perf_counter() - start
    result.metrics = compute_metrics(pred, truth, volume.grid.spacing)
    return result, pred


def _slices_with(mask: np.ndarray, axis: Axis) -> int:
    other = tuple(a for a in range(3) if a != int(axis))
    return int(mask.any(axis=other).sum())


def evaluate_case(case: Case, method: SlicePropagator, config: EvaluationConfig) -> CaseOutcome:
    """Evaluate every target of one case; never raises for problems of the case itself."""
    outcome = CaseOutcome(case)
    try:
        volume, truth = _load_case(case)
    except Sam2MedError as err:
        outcome.error = str(err)
        logger.error("case %s failed: %s", case.name, err)
        return outcome
    present = [int(v) for v in np.unique(truth.array) if v != 0]
    wanted = present if config.labels is None else config.labels
    if not present and config.labels is None:
        outcome.error = "the label map is empty"
        logger.error("case %s failed: %s", case.name, outcome.error)
        return outcome
    outcome.volume, outcome.truth = volume, truth.array
    outcome.prediction = np.zeros(truth.array.shape, dtype=label_dtype(max(wanted, default=0)))
    for label in wanted:
        name = _target_name(label, config.names)
        if label not in present:
            error = f"label {label} ({name}) is absent from this case"
            logger.error("case %s: %s", case.name, error)
            outcome.targets.append(TargetResult(case.name, label, name, method.name, error=error))
            continue
        mask = truth.array == label
        slices = _slices_with(mask, config.axis)
        if slices < config.min_slices:
            logger.debug("case %s: label %d (%s) skipped: on %d slice(s) < --min-slices %d", case.name, label, name, slices, config.min_slices)
            outcome.skipped.append({"case": case.name, "label": label, "name": name, "slices": slices})
            continue
        try:
            result, pred = _evaluate_target(case, volume, mask, label, method, config)
        except Exception as err:  # one target's failure must not end the run
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            logger.error("case %s: label %d (%s) failed: %s", case.name, label, name, first)
            logger.debug("traceback", exc_info=not isinstance(err, Sam2MedError))
            outcome.targets.append(TargetResult(case.name, label, name, method.name, error=first))
            continue
        outcome.prediction[pred] = label
        outcome.targets.append(result)
    return outcome


def run_evaluation(cases: Iterable[Case], method: SlicePropagator, config: EvaluationConfig,
                   on_case: Callable[[CaseOutcome], None] | None = None, progress: bool = True) -> list[CaseOutcome]:
    """Evaluate `cases` in order with a progress bar; `on_case` sees each outcome (with its arrays) once."""
    cases = list(cases)
    outcomes: list[CaseOutcome] = []
    for case in tqdm(cases, desc=f"evaluate {method.name}", unit="case", disable=not (progress and on_terminal())):
        outcome = evaluate_case(case, method, config)
        if on_case is not None:
            on_case(outcome)
        outcome.volume = outcome.truth = outcome.prediction = None  # free the arrays; the rows stay
        outcomes.append(outcome)
    return outcomes


class CaseEvaluator:
    """One case at a time with the main propagator and the references, built once per process (a Ray actor):
    the same `evaluate_case` as the local run, so the rows are the same."""

    def __init__(self, name: str, window: str | None, sam2_kwargs: dict, references: list[str], config: EvaluationConfig):
        from sam2med.evaluation.propagators import make_propagator

        self.method = make_propagator(name, window=window, **sam2_kwargs)
        self.references = {ref: make_propagator(ref, window=window) for ref in references}
        self.config = config

    def describe(self) -> dict:
        """The main propagator's model (name, input size, checkpoint, device), for the summary."""
        from sam2med.provenance import model_provenance

        engine = getattr(self.method, "engine", None)
        return {"model": model_provenance(engine)} if engine is not None else {}

    def run(self, case: Case) -> dict[str, CaseOutcome]:
        """{propagator name: outcome}; only the main propagator's outcome keeps its arrays (for previews and predictions)."""
        outcomes = {self.method.name: evaluate_case(case, self.method, self.config)}
        for name, method in self.references.items():
            outcome = evaluate_case(case, method, self.config)
            outcome.volume = outcome.truth = outcome.prediction = None
            outcomes[name] = outcome
        return outcomes


def collect_outcomes(cases: list[Case], results: Iterable[tuple[Case, object]], names: list[str],
                     on_case: Callable[[CaseOutcome], None] | None = None) -> dict[str, list[CaseOutcome]]:
    """{propagator: outcomes in case order} from `CaseEvaluator.run` answers arriving in any order; an answer that
    is an exception (a lost worker) fails the case for every propagator with its message."""
    by_case: dict[str, dict[str, CaseOutcome]] = {}
    bar = tqdm(total=len(cases), desc=f"evaluate {names[0]}", unit="case", disable=not on_terminal())
    with bar:
        for case, answer in results:
            if isinstance(answer, BaseException):
                logger.error("case %s failed: %s", case.name, answer)
                answer = {name: CaseOutcome(case, error=str(answer)) for name in names}
            if on_case is not None:
                on_case(answer[names[0]])
            for outcome in answer.values():
                outcome.volume = outcome.truth = outcome.prediction = None
            by_case[case.name] = answer
            bar.update(1)
    return {name: [by_case[case.name][name] for case in cases] for name in names}
