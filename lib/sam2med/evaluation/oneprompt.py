"""The one-prompt protocol over 2D image/label pairs (MedSAM-2's one-prompt segmentation, evaluated).

For each target label: one prompt case (`--prompt-case`, else the case where the label is largest; ties: the
first by name), its truth mask as the seed; every other case holding the label is segmented from that one
prompt (`segment_unordered`, selective memory by default) and measured against its truth in 2D, with the
image's pixel spacing (pixels for PNG/JPEG). The prompt case's own row has status "prompt": its mask is its
seed, so it is listed apart and not counted in the means. A case that cannot be read, or whose label and
image sizes differ, fails on its own. A (case, label) is skipped, not failed, when the image lacks the label
(with --label) or when no other image holds it: listed under `skipped` in summary.json.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
from tqdm import tqdm

from sam2med.engine.oneprompt import Frame, segment_unordered
from sam2med.errors import InputError, Sam2MedError
from sam2med.evaluation.metrics import compute_metrics
from sam2med.evaluation.pairing import Case
from sam2med.evaluation.runner import CaseOutcome, TargetResult
from sam2med.images2d import Image2D, read_image2d, read_label2d, window_image2d
from sam2med.io import label_dtype
from sam2med.labelnames import label_name
from sam2med.progress import on_terminal

logger = logging.getLogger(__name__)

PROTOCOL = "one-prompt"
PROMPT_CHOICE = "largest"  # the default prompt case of a label: where its area is largest


@dataclass
class Case2D:
    """A readable 2D case: its image, its pixels for SAM2 and its truth (H, W)."""

    outcome: CaseOutcome
    image: Image2D
    pixels: np.ndarray
    truth: np.ndarray

    @property
    def name(self) -> str:
        return self.outcome.case.name


def load_case_2d(case: Case, window: str | None, preprocessing) -> tuple[Image2D, np.ndarray, np.ndarray]:
    """The case's image, windowed pixels and truth; an `InputError` when it cannot be evaluated."""
    if case.label is None:
        raise InputError(f"no label file named {case.name!r} next to the others")
    image, truth = read_image2d(case.image), read_label2d(case.label)
    if truth.shape != image.shape:
        raise InputError(f"label size {truth.shape[1]}x{truth.shape[0]} differs from the image's {image.shape[1]}x{image.shape[0]}")
    pixels, _ = window_image2d(image, window, preprocessing)
    return image, pixels, truth.array


def choose_prompt_case(label: int, holders: list[Case2D], prompt_case: str | None) -> Case2D:
    """The prompt case of `label`: `prompt_case` when given (it must hold the label), else the largest one."""
    if prompt_case is not None:
        chosen = next((c for c in holders if c.name == prompt_case), None)
        if chosen is None:
            raise InputError(f"--prompt-case {prompt_case}: that case does not hold label {label} (or could not be read)")
        return chosen
    return max(holders, key=lambda c: int((c.truth == label).sum()))  # holders are in name order: ties go to the first


def _evaluate_label(label: int, name: str, holders: list[Case2D], propagator, prompt_case: str | None,
                    memory: str | None) -> None:
    prompt = choose_prompt_case(label, holders, prompt_case)
    others = [c for c in holders if c is not prompt]
    seed = np.where(prompt.truth == label, label, 0).astype(label_dtype(label))
    result = segment_unordered(propagator, Frame(prompt.name, prompt.pixels), seed,
                               [Frame(c.name, c.pixels) for c in others], memory)
    per_image = result.seconds / len(result.frames)
    for case, frame in zip([prompt, *others], result.frames):
        pred = frame.mask == label
        row = TargetResult(case.name, label, name, "sam2", metrics=compute_metrics(pred, case.truth == label, case.image.spacing),
                           seconds=per_image, seed_slices=[0] if frame.prompt else [], prompt=frame.prompt)
        case.outcome.targets.append(row)
        case.outcome.prediction[pred] = label


# Why a (case, label) is skipped: in a folder of 2D images most images lack most labels, which is no failure.
ABSENT, ALONE = "absent from this image", "no other image holds it"


def _skip(case: Case2D, label: int, name: str, reason: str) -> None:
    logger.debug("case %s: label %d (%s) skipped: %s", case.name, label, name, reason)
    case.outcome.skipped.append({"case": case.name, "label": label, "name": name, "reason": reason})


def evaluate_one_prompt(cases: list[Case], propagator, labels: list[int] | None, names: dict[int, str],
                        prompt_case: str | None = None, window: str | None = "auto", memory: str | None = "selective",
                        on_case: Callable[[CaseOutcome, Image2D], None] | None = None) -> list[CaseOutcome]:
    """Evaluate every label by the one-prompt protocol; `on_case` sees each readable case's outcome with its
    prediction (H, W) once all labels ran."""
    outcomes = [CaseOutcome(case) for case in cases]
    loaded: list[Case2D] = []
    for outcome in outcomes:
        try:
            image, pixels, truth = load_case_2d(outcome.case, window, propagator.preprocessing)
        except Sam2MedError as err:
            outcome.error = str(err)
            logger.error("case %s failed: %s", outcome.case.name, err)
            continue
        loaded.append(Case2D(outcome, image, pixels, truth))
    if prompt_case is not None and prompt_case not in {c.name for c in loaded}:
        raise InputError(f"--prompt-case {prompt_case}: no readable case of that name")
    present = sorted({int(v) for c in loaded for v in np.unique(c.truth) if v != 0})
    wanted = present if labels is None else labels
    for case in loaded:
        case.outcome.prediction = np.zeros(case.truth.shape, dtype=label_dtype(max(wanted, default=0)))
    for label in tqdm(wanted, desc="one-prompt labels", unit="label", disable=not on_terminal()):
        name = label_name(label, names)
        holders = [c for c in loaded if (c.truth == label).any()]
        for case in (c for c in loaded if c not in holders and labels is not None):
            _skip(case, label, name, ABSENT)
        if len(holders) < 2:
            logger.warning("label %d (%s): %d case(s) hold it; one-prompt needs a prompt case and at least one other",
                           label, name, len(holders))
            for case in holders:
                _skip(case, label, name, ALONE)
            continue
        try:
            _evaluate_label(label, name, holders, propagator, prompt_case, memory)
        except Exception as err:  # one label's failure must not end the run
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            logger.error("label %d (%s) failed: %s", label, name, first)
            logger.debug("traceback", exc_info=not isinstance(err, Sam2MedError))
            for case in holders:
                case.outcome.targets.append(TargetResult(case.name, label, name, "sam2", error=first))
    for case in loaded:
        if on_case is not None:
            on_case(case.outcome, case.image)
        case.outcome.prediction = None
    return outcomes
