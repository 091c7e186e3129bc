"""The batch manifest: a CSV or JSON Lines file, one propagation per row.

Columns: image and seed (required), range, axis, window, labels, output. Paths are relative to the
manifest's folder. Every cell is checked here, before any volume or model is loaded; what can only be
checked against a volume (slice numbers, the seed's grid) fails the row later, not the batch.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from sam2med.errors import InputError, Sam2MedError
from sam2med.geometry import Axis
from sam2med.io import IMAGE_SUFFIXES, LABEL_SUFFIXES, check_regular_file
from sam2med.prompts import RangeRequest, parse_labels
from sam2med.windowing import Window

COLUMNS = ("image", "seed", "range", "axis", "window", "labels", "output")
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # about 100,000 rows; checked before the manifest is parsed
REQUIRED = ("image", "seed")


@dataclass(frozen=True)
class BatchRow:
    """One manifest row, its paths absolute (workers on other machines read them from shared storage)."""

    number: int  # 1-based data row of the manifest
    image: Path
    seed: Path
    output: Path
    range: RangeRequest
    axis: Axis
    window: str
    labels: list[int] | None

    def to_json(self) -> dict:
        return {"row": self.number, "image": str(self.image), "seed": str(self.seed), "output": str(self.output)}


def _read_records(path: Path) -> list[dict]:
    """The manifest's rows as dicts of text: CSV with a header line, or one JSON object per line."""
    if not path.exists() and not path.is_symlink():
        raise InputError(f"{path}: no such manifest")
    check_regular_file(path, "manifest file")  # a FIFO or a link to /dev/zero would never end
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise InputError(f"{path}: the manifest is {size / 2**20:.0f} MiB, over the {MAX_MANIFEST_BYTES / 2**20:.0f} MiB "
                         "limit; split it into several batches")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the manifest ({getattr(err, 'strerror', None) or err})") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise InputError(f"{path}: line {number} is not a JSON object") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}: line {number} is not a JSON object")
            records.append({str(k): _cell(v) for k, v in record.items()})
        return records
    if path.suffix.lower() != ".csv":
        raise InputError(f"{path}: a manifest is a .csv (with a header line) or a .jsonl file")
    reader = csv.DictReader(text.splitlines())
    unnamed = [f for f in reader.fieldnames or [] if not f or not f.strip()]
    if unnamed:
        raise InputError(f"{path}: the header line has an empty column name")
    records = []
    for record in reader:
        if None in record:
            raise InputError(f"{path}: line {reader.line_num} has more cells than the header names")
        if any((v or "").strip() for v in record.values()):
            records.append({k.strip(): (v or "") for k, v in record.items()})
    return records


def _cell(value: object) -> str:
    """A JSON value as the text a CSV cell would hold: lists as "1,5", objects as JSON."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _default_output(image: Path) -> str:
    name = image.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{name}_label.nii.gz"


def _row(record: dict, number: int, base: Path, out_dir: Path, values_by_name: Mapping[str, int]) -> BatchRow:
    cells = {k: record.get(k, "").strip() for k in COLUMNS}
    for column in REQUIRED:
        if not cells[column]:
            raise InputError(f"no {column}")
    image = (base / cells["image"]).absolute()
    output_name = cells["output"] or _default_output(image)
    if Path(output_name).is_absolute() or ".." in Path(output_name).parts:
        raise InputError(f"output {output_name!r} must be a name inside the output folder")
    if not output_name.lower().endswith(LABEL_SUFFIXES):
        raise InputError(f"output {output_name!r}: use one of {', '.join(LABEL_SUFFIXES)}")
    Window.parse(cells["window"] or "auto", "CT")
    return BatchRow(
        number=number, image=image, seed=(base / cells["seed"]).absolute(), output=(out_dir / output_name).absolute(),
        range=RangeRequest.from_text(cells["range"], option="range"),
        axis=Axis.parse(cells["axis"] or "axial"), window=cells["window"] or "auto", labels=parse_labels(cells["labels"] or None, values_by_name),
    )


def read_manifest(path: str | Path, out_dir: str | Path, names: Mapping[int, str] | None = None) -> list[BatchRow]:
    """Every row of the manifest at `path`, checked; outputs go under `out_dir`; `names` ({value: name}) lets the labels
    cell name labels. One bad row fails the whole manifest."""
    path = Path(path)
    records = _read_records(path)
    unknown = sorted({k for record in records for k in record} - set(COLUMNS))
    if unknown:
        raise InputError(f"{path}: unknown column(s) {', '.join(unknown)}; the columns are {', '.join(COLUMNS)}")
    if not records:
        raise InputError(f"{path}: the manifest has no rows")
    rows = []
    for number, record in enumerate(records, 1):
        try:
            rows.append(_row(record, number, path.parent.absolute(), Path(out_dir), {n: v for v, n in (names or {}).items()}))
        except Sam2MedError as err:
            raise InputError(f"{path}: row {number}: {err}") from None
    seen: dict[Path, int] = {}
    for row in rows:
        if row.output in seen:
            raise InputError(f"{path}: rows {seen[row.output]} and {row.number} both write {row.output.name}; "
                             "give each an output name")
        seen[row.output] = row.number
    check_outputs_are_not_inputs(rows, path)
    return rows


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same path after links are resolved, or the same inode (a hard link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.samefile(b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_outputs_are_not_inputs(rows: list[BatchRow], manifest: Path) -> None:
    """Refuse a manifest where a row's output would overwrite the image or seed of any row (its own or another's):
    the input would be replaced by a label, and later rows would run on it."""
    inputs = [(row, kind, getattr(row, kind)) for row in rows for kind in ("image", "seed")]
    resolved = {p.resolve(): (row, kind) for row, kind, p in reversed(inputs)}
    for row in rows:
        hit = resolved.get(row.output.resolve())
        if hit is None and row.output.exists():
            hit = next(((r, k) for r, k, p in inputs if _same_file(row.output, p)), None)
        if hit is not None:
            other, kind = hit
            whose = "its own" if other.number == row.number else f"row {other.number}'s"
            raise InputError(f"{manifest}: row {row.number}: output {row.output.name} is {whose} {kind} file; "
                             "give an output name or -o folder that no row reads from")
