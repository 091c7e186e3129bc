"""Results tables: `results.csv` (one row per case and target), `summary.json` and `summary.md`.

Statistics are over the (case, target) rows that ran ("ok"; the one-prompt protocol's prompt rows, status
"prompt", are listed apart and not counted): mean, median and population std per target
and overall, every row weighing the same. Dice and IoU are always finite. HD95 and ASD are infinite when
the prediction is empty; their statistics are taken over the finite values and `n_inf` counts the others.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from sam2med.evaluation.runner import CaseOutcome, TargetResult
from sam2med.io import write_atomically, write_json_atomic

METRICS = ("dice", "iou", "hd95_mm", "asd_mm", "seconds")
CSV_FIELDS = ("case", "label", "name", "propagator", "status", "dice", "iou", "hd95_mm", "asd_mm", "seconds", "slices",
              "range_start", "range_end", "truth_start", "truth_end", "seed_slices", "pred_voxels", "truth_voxels", "error")
def seed_policy(protocol: str | None) -> dict:
    """Whether the seed slices are counted in the metrics, and what the prediction holds on them."""
    text = str(protocol or "")
    if text == "one-prompt":
        return {"counted": False, "note": "the prompt case (its seed is its truth) is listed apart and not in the means; "
                                          "every other case is predicted whole"}
    if text.startswith("clicks"):
        return {"counted": True, "note": "metrics are over the whole volume, the clicked slice included: it is predicted "
                                         "from the clicks"}
    return {"counted": True, "note": "metrics are over the whole volume, seed slices included: there every propagator "
                                     "returns the seed mask (the truth) as drawn, which raises Dice most for targets on few slices"}


DISTANCE_POLICY = ("hd95_mm and asd_mm are infinite when the prediction is empty; their mean/median/std are over the "
                   "finite values and n_inf counts the infinite ones. Dice and IoU of an empty prediction are 0.")


def write_text_atomic(text: str, path: Path) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text))


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """A text cell a spreadsheet would run as a formula (`=HYPERLINK(...)`, `@SUM`, `-2+3`) prefixed with `'`;
    numbers are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_results_csv(results: list[TargetResult], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow({key: csv_safe(value) for key, value in result.row().items()})
    return write_text_atomic(buffer.getvalue(), path)


def _stats(values: list[float]) -> dict:
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    n_inf = len(values) - finite.size
    if finite.size == 0:
        return {"mean": None, "median": None, "std": None, "n_inf": n_inf}
    return {"mean": float(finite.mean()), "median": float(np.median(finite)), "std": float(finite.std()), "n_inf": n_inf}


def _group_stats(results: list[TargetResult]) -> dict:
    values = {
        "dice": [r.metrics.dice for r in results], "iou": [r.metrics.iou for r in results],
        "hd95_mm": [r.metrics.hd95_mm for r in results], "asd_mm": [r.metrics.asd_mm for r in results],
        "seconds": [float(r.seconds) for r in results],
    }
    return {"n": len(results), **{name: _stats(vals) for name, vals in values.items()}}


def summarise(outcomes: list[CaseOutcome], config: dict) -> dict:
    """The summary.json content: per-target and overall statistics, failed cases and targets, skipped targets."""
    results = [t for o in outcomes for t in o.targets]
    ok = [r for r in results if r.scored]
    per_target: dict[str, list[TargetResult]] = {}
    for result in sorted(ok, key=lambda r: r.label):
        per_target.setdefault(f"{result.label} {result.name}", []).append(result)
    failed = [{"case": o.case.name, "label": None, "error": o.error} for o in outcomes if o.error]
    failed += [{"case": r.case, "label": r.label, "name": r.name, "error": r.error} for r in results if not r.ok]
    return {
        "config": config,
        "cases": {
            "total": len(outcomes),
            "evaluated": sum(1 for o in outcomes if o.evaluated),
            "failed": sorted({o.case.name for o in outcomes if o.failed}),
        },
        "targets": {key: _group_stats(rows) for key, rows in per_target.items()},
        "overall": _group_stats(ok),
        "failed": failed,
        "skipped": [s for o in outcomes for s in o.skipped],
        "distance_policy": DISTANCE_POLICY,
        **({"seed_slices": seed_policy(config["protocol"])} if config.get("protocol") else {}),
        **({"prompts": [{"case": r.case, "label": r.label, "name": r.name, "dice": r.metrics.dice}
                        for r in results if r.ok and r.prompt]} if any(r.prompt for r in results) else {}),
    }


def _fmt(stat: dict, digits: int = 3) -> str:
    """"mean ± std (median)", or the value alone when there is one, with the count of infinite values."""
    if stat["mean"] is None:
        return "n/a" + (f" ({stat['n_inf']} inf)" if stat["n_inf"] else "")
    single = stat["std"] == 0 and stat["mean"] == stat["median"]
    text = f"{stat['mean']:.{digits}f}" if single else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f} ({stat['median']:.{digits}f})"
    return text + (f" [{stat['n_inf']} inf]" if stat["n_inf"] else "")


def markdown_table(summary: dict) -> str:
    """Per-target rows and an overall row: mean ± std (median) of each metric."""
    lines = [
        "| target | n | Dice | IoU | HD95 mm | ASD mm | seconds |",
        "| --- | ---: | --- | --- | --- | --- | --- |",
    ]
    rows = list(summary["targets"].items()) + [("**overall**", summary["overall"])]
    for key, group in rows:
        if not group["n"]:
            continue
        lines.append(f"| {key} | {group['n']} | {_fmt(group['dice'])} | {_fmt(group['iou'])} | {_fmt(group['hd95_mm'], 1)} | "
                     f"{_fmt(group['asd_mm'], 1)} | {_fmt(group['seconds'], 2)} |")
    return "\n".join(lines) + "\n"


def _model_line(model: dict | None) -> str:
    """Which model made the predictions (SAM2 runs), so that two runs' summaries say what they compare."""
    if not model:
        return ""
    weights = ", RANDOM weights: no quality meaning" if model.get("random_weights") else ""
    return (f"Model: {model['model']} at {model['input_size']} px, checkpoint {model['checkpoint']['file']} "
            f"(sha256 {model['checkpoint']['sha256'][:12]}){weights}.\n\n")


def write_summary(summary: dict, out: Path) -> tuple[Path, Path]:
    """summary.json and summary.md (the config, the table, failures) in `out`."""
    config = summary["config"]
    header = (f"# Evaluation: {config.get('propagator')} propagator, protocol {config.get('protocol')}, "
              f"range {config.get('range')}, axis {config.get('axis')}\n\n"
              + _model_line(config.get("model")) +
              f"Cases: {summary['cases']['total']} ({summary['cases']['evaluated']} evaluated, "
              f"{len(summary['cases']['failed'])} failed). Cells: mean ± std (median) over (case, target) rows.\n\n")
    failures = "".join(f"- {f['case']}" + (f" label {f['label']}" if f.get("label") is not None else "") + f": {f['error']}\n"
                       for f in summary["failed"])
    seeds = summary.get("seed_slices")
    if seeds:
        header += f"Seed slices {'are' if seeds['counted'] else 'are not'} counted in the metrics: {seeds['note']}.\n\n"
    text = header + markdown_table(summary) + ("\n## Failed\n\n" + failures if failures else "") + f"\n{DISTANCE_POLICY}\n"
    return write_json_atomic(_json_safe(summary), out / "summary.json"), write_text_atomic(text, out / "summary.md")


def _json_safe(value):
    """Infinite floats as the string "inf" (JSON has no infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else None)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
