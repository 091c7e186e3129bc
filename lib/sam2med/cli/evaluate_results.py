"""What `main.py evaluate` prints when it is done (3D protocols and one-prompt alike): table, references, counts."""

from __future__ import annotations

import logging
from pathlib import Path

from sam2med.cli.common import cpu_advice
from sam2med.provenance import RANDOM_WEIGHTS_NOTE

logger = logging.getLogger("sam2med.cli.evaluate")


def print_results(summary: dict, cases: int, out: Path, model: dict | None) -> int:
    """The table, the references' lines and the counts on stdout; the exit status (1 when no case was evaluated).
    `model`: the SAM2 model's provenance (`provenance.model_provenance`), None for the weight-free propagators."""
    # late: the CLI imports every command to build its parser; the evaluation stack loads when evaluate runs
    from sam2med.evaluation.report import markdown_table

    print(markdown_table(summary), end="")
    for name, part in summary.get("references", {}).items():
        dice = part["overall"]["dice"]
        if dice["mean"] is not None:
            print(f"reference {name}: Dice {dice['mean']:.3f} ± {dice['std']:.3f} (median {dice['median']:.3f}) over {part['overall']['n']} target(s)")
    if model and model.get("random_weights"):
        print(RANDOM_WEIGHTS_NOTE)
    advice = cpu_advice(model["device"].split(":")[0], model["input_size"]) if model else None
    if advice:
        print(advice)
    evaluated = summary["cases"]["evaluated"]
    print(f"{evaluated} of {cases} case(s) evaluated, {len(summary['failed'])} failure(s), "
          f"{len(summary['skipped'])} target(s) skipped; results in {out}/")
    if evaluated == 0:
        logger.error("no case was evaluated (every case failed or all its targets were skipped); see %s", out / "summary.md")
        return 1
    return 0
