"""Label maps that carry coded meaning, and the SNOMED CT codes of the TotalSegmentator names.

A label map names label values and may code them. Accepted files:

- JSON, one entry per structure: `{"liver": 5}` or `{"5": "liver"}` (a name only), or
  `{"liver": {"value": 5, "type": "10200004", "category": "123037004", "scheme": "SCT", "color": [221, 130, 101]}}`.
  A code is a code value (its scheme from "scheme", default SCT), a `SCHEME:VALUE:MEANING` string, or an
  object `{"value", "scheme", "meaning"}`; further keys: "meaning" (of the type), "category_meaning",
  "modifier" (e.g. `SCT:7771000:Left`), "region", "region_modifier". A file of maps is chosen by key
  (`labels.json:total`), as for `--labels-map`.
- CSV with a header, as TotalSegmentator and dcmqi tabulate codes: a value column (`value`, `label`, `LabelID`,
  `id` or `idx`), a name column (`name`, `Structure` or `SegmentLabel`) and the codes either as dcmqi-style columns
  (`SegmentedPropertyTypeCodeSequence.CodeValue`, `...CodingSchemeDesignator`, `...CodeMeaning`, the same for
  `SegmentedPropertyCategoryCodeSequence`, `SegmentedPropertyTypeModifierCodeSequence`, `AnatomicRegionSequence`,
  `AnatomicRegionModifierSequence`) or as short columns `category`, `type`, `modifier`, `region` holding
  `SCHEME:VALUE:MEANING` cells; a colour in `color`, `DicomRGBColor` or `recommendedDisplayRGBValue` ("R G B" or
  "R,G,B"). Lines starting with # are comments.

A name without codes of its own gets the SNOMED CT codes and colour of the TotalSegmentator structure of that
name when there is one (`totalsegmentator_codes.csv` beside this module; its header cites the published
mapping it was tabulated from), else the generic "Anatomical structure" code.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sam2med.dicom.segments import ANATOMICAL_STRUCTURE_CATEGORY, DEFAULT_COLORS, Code, Segment
from sam2med.errors import InputError
from sam2med.labelnames import map_file_and_key

CODES_FILE = Path(__file__).with_name("totalsegmentator_codes.csv")
CODE_FIELDS = ("category", "type", "modifier", "region", "region_modifier")
_DCMQI_SEQUENCES = {
    "segmentedpropertycategorycodesequence": "category",
    "segmentedpropertytypecodesequence": "type",
    "segmentedpropertytypemodifiercodesequence": "modifier",
    "anatomicregionsequence": "region",
    "anatomicregionmodifiersequence": "region_modifier",
}
_VALUE_COLUMNS = ("value", "label", "labelid", "label_id", "id", "idx")
_NAME_COLUMNS = ("name", "structure", "segmentlabel", "label_name")
_COLOR_COLUMNS = ("color", "colour", "dicomrgbcolor", "recommendeddisplayrgbvalue")
_ENTRY_KEYS = {"value", "name", "scheme", "meaning", "category_meaning", "color", "colour", *CODE_FIELDS}


def structure_key(name: str) -> str:
    """How a name is looked up in the TotalSegmentator table: case, spaces and dashes do not count."""
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


@functools.lru_cache(maxsize=1)
def _totalsegmentator_table() -> dict[str, dict[str, Any]]:
    rows = [line for line in CODES_FILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    table: dict[str, dict[str, Any]] = {}
    for row in csv.DictReader(rows):
        entry: dict[str, Any] = {field: Code.parse(row[field], field) for field in CODE_FIELDS if row[field]}
        if row["color"]:
            entry["color"] = tuple(int(c) for c in row["color"].split())
        table[structure_key(row["name"])] = entry
    return table


@functools.lru_cache(maxsize=1)
def _known_meanings() -> dict[tuple[str, str], str]:
    """(scheme, value) -> meaning of every code in the TotalSegmentator table."""
    meanings = {}
    for entry in _totalsegmentator_table().values():
        for field in CODE_FIELDS:
            if field in entry:
                meanings[(entry[field].scheme, entry[field].value)] = entry[field].meaning
    return meanings


def totalsegmentator_segment(value: int, name: str, color: tuple[int, int, int] | None = None) -> Segment | None:
    """The segment of label `value` named `name` with the SNOMED CT codes (and colour) of the TotalSegmentator
    structure of that name; None when TotalSegmentator has no structure of that name."""
    entry = _totalsegmentator_table().get(structure_key(name))
    if entry is None:
        return None
    codes = {field: entry[field] for field in CODE_FIELDS if field in entry}
    return Segment(int(value), name, color or entry.get("color") or DEFAULT_COLORS[(int(value) - 1) % len(DEFAULT_COLORS)], **codes)


def coded_segments(names: Mapping[int, str]) -> dict[int, Segment]:
    """{value: Segment} for the names of `names` that are TotalSegmentator structures (codes out of the box)."""
    segments = {}
    for value, name in names.items():
        segment = totalsegmentator_segment(int(value), name)
        if segment is not None:
            segments[int(value)] = segment
    return segments


def _color(raw: Any, where: str) -> tuple[int, int, int] | None:
    if raw is None or raw == "":
        return None
    parts = raw.replace(",", " ").split() if isinstance(raw, str) else raw
    try:
        values = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(f"{where}: colour {raw!r} is not three values 0..255 (R G B)") from None
    if len(values) != 3 or any(not 0 <= c <= 255 for c in values):
        raise InputError(f"{where}: colour {raw!r} is not three values 0..255 (R G B)")
    return values  # type: ignore[return-value]


def _code(raw: Any, field: str, entry: Mapping[str, Any], name: str, where: str) -> Code | None:
    """A code from a code value, a SCHEME:VALUE:MEANING string or a {"value", "scheme", "meaning"} object."""
    if raw is None or raw == "" or raw == {}:
        return None
    if isinstance(raw, Mapping):
        value, scheme, meaning = (str(raw.get(k) or "").strip() for k in ("value", "scheme", "meaning"))
        scheme = scheme or str(entry.get("scheme") or "SCT")
    elif isinstance(raw, str) and raw.count(":") >= 2:
        return Code.parse(raw, f"{where}: {field}")
    elif isinstance(raw, (str, int)) and not isinstance(raw, bool):
        value, scheme, meaning = str(raw).strip(), str(entry.get("scheme") or "SCT").strip(), ""
    else:
        raise InputError(f"{where}: {field} {raw!r} is not a code (a code value, SCHEME:VALUE:MEANING or "
                         "{\"value\", \"scheme\", \"meaning\"})")
    if not value:
        raise InputError(f"{where}: {field} has no code value")
    if scheme == "SCT" and not value.isdigit():
        raise InputError(f"{where}: {field} {value!r} is not a SNOMED CT code value (digits; or SCHEME:VALUE:MEANING)")
    meaning = meaning or {"type": str(entry.get("meaning") or ""), "category": str(entry.get("category_meaning") or "")}.get(field, "")
    meaning = meaning or _known_meanings().get((scheme, value), "")
    if not meaning and field == "type":
        meaning = name
    if not meaning:
        raise InputError(f"{where}: {field} code {scheme} {value} needs its meaning (SCHEME:VALUE:MEANING)")
    return Code(value, scheme, meaning)


def segment_from_entry(value: int, name: str, entry: Mapping[str, Any], where: str) -> Segment:
    """The segment of one label-map entry: its own codes, else those of the TotalSegmentator name, else generic."""
    codes = {field: _code(entry.get(field), field, entry, name, where) for field in CODE_FIELDS}
    color = _color(entry.get("color", entry.get("colour")), where)
    given = {field: code for field, code in codes.items() if code is not None}
    if "type" not in given:
        if given:
            raise InputError(f"{where}: has {', '.join(given)} codes but no type code")
        known = totalsegmentator_segment(value, name, color)
        if known is not None:
            return known
    if "category" not in given and "type" in given:
        given["category"] = ANATOMICAL_STRUCTURE_CATEGORY
    known_color = _totalsegmentator_table().get(structure_key(name), {}).get("color")
    return Segment(value, name, color or known_color or DEFAULT_COLORS[(value - 1) % len(DEFAULT_COLORS)], **given)


def _label_value(raw: Any, where: str) -> int:
    text = str(raw).strip()
    if isinstance(raw, bool) or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InputError(f"{where}: label value {raw!r} is not a whole number 1..65535")
    return int(text)


def _add(segments: dict[int, Segment], segment: Segment, where: str) -> None:
    if segment.value in segments:
        raise InputError(f"{where}: label value {segment.value} is given twice ({segments[segment.value].name!r} and {segment.name!r})")
    segments[segment.value] = segment


def _from_json(data: Mapping, where: str) -> dict[int, Segment]:
    segments: dict[int, Segment] = {}
    for key, item in data.items():
        entry_where = f"{where}: entry {key!r}"
        if isinstance(item, Mapping):
            unknown = sorted(set(item) - _ENTRY_KEYS)
            if unknown:
                raise InputError(f"{entry_where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_ENTRY_KEYS))})")
            if "value" not in item:
                raise InputError(f"{entry_where}: needs a \"value\" (the label value)")
            value, name = _label_value(item["value"], entry_where), str(item.get("name") or key)
            _add(segments, segment_from_entry(value, name, item, entry_where), where)
        elif isinstance(item, str) and str(key).strip().isdigit():
            value = _label_value(key, entry_where)
            _add(segments, segment_from_entry(value, item, {}, entry_where), where)
        elif isinstance(item, int) and not isinstance(item, bool):
            value = _label_value(item, entry_where)
            _add(segments, segment_from_entry(value, str(key), {}, entry_where), where)
        else:
            raise InputError(f"{entry_where}: {item!r} is neither \"value\": \"name\", \"name\": value nor \"name\": {{\"value\": ...}}")
    return segments


def _is_entry(item: Any) -> bool:
    """A coded entry ({"value": 5, "type": ...}), not a map of names (a file of maps)."""
    return isinstance(item, Mapping) and ("value" in item or bool(item) and set(item) <= _ENTRY_KEYS)


def _read_json(path: Path, key: str | None) -> dict[int, Segment]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable JSON file ({str(err).splitlines()[0][:120]})") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: a label map must be a non-empty JSON object")
    nested = {k: v for k, v in data.items() if isinstance(v, Mapping) and not _is_entry(v)}
    if key is not None:
        if key not in nested:
            raise InputError(f"{path}: no map named {key!r} (it holds {', '.join(nested) or 'a flat map'})")
        return _from_json(nested[key], f"{path}:{key}")
    if nested:
        if len(nested) == 1 and len(data) == 1:
            return _from_json(next(iter(nested.values())), str(path))
        raise InputError(f"{path}: holds several maps ({', '.join(nested)}); choose one with {path}:KEY")
    return _from_json(data, str(path))


def _csv_entry(row: Mapping[str, str]) -> dict[str, Any]:
    """A CSV row (keys lower-cased) as a JSON-style entry."""
    entry: dict[str, Any] = {}
    for column, text in row.items():
        text = (text or "").strip()
        if not text:
            continue
        head, _, part = column.partition(".")
        if head in _DCMQI_SEQUENCES and part:
            key = {"codevalue": "value", "codingschemedesignator": "scheme", "codemeaning": "meaning"}.get(part)
            if key:
                entry.setdefault(_DCMQI_SEQUENCES[head], {})[key] = text
        elif column in _COLOR_COLUMNS:
            entry["color"] = text
        elif column in CODE_FIELDS or column in ("scheme", "meaning", "category_meaning"):
            entry[column] = text
    return entry


def _read_csv(path: Path) -> dict[int, Segment]:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read it ({err})") from None
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    value_column = next((c for c in _VALUE_COLUMNS if c in columns), None)
    name_column = next((c for c in _NAME_COLUMNS if c in columns), None)
    if value_column is None or name_column is None:
        raise InputError(f"{path}: a label-map CSV needs a header with a value column ({', '.join(_VALUE_COLUMNS)}) and a name "
                         f"column ({', '.join(_NAME_COLUMNS)}); it has {', '.join(columns) or 'none'}")
    segments: dict[int, Segment] = {}
    for number, raw in enumerate(reader, start=2):
        row = {str(k).strip().lower(): v for k, v in raw.items() if k is not None}
        where = f"{path}: row {number}"
        name = (row.get(name_column) or "").strip()
        if not name:
            raise InputError(f"{where}: has no name")
        value = _label_value(row.get(value_column) or "", where)
        _add(segments, segment_from_entry(value, name, _csv_entry(row), where), str(path))
    if not segments:
        raise InputError(f"{path}: the label map has no rows")
    return segments


def read_segment_map(spec: str) -> dict[int, Segment]:
    """{value: Segment} from a label map `PATH` or `PATH:KEY` (JSON) or `PATH.csv`, codes included."""
    path, key = map_file_and_key(spec, "label map")
    if path.suffix.lower() == ".csv":
        if key is not None:
            raise InputError(f"{spec}: a CSV label map holds one map; give it without :KEY")
        return _read_csv(path)
    return _read_json(path, key)


def describe_segments(
    values: Sequence[int],
    names: Mapping[int, str] | None = None,
    given: Mapping[int, Segment] | None = None,
) -> list[Segment]:
    """A `Segment` for each label value: the one `given` for it, else one named from `names`: a TotalSegmentator
    structure name gets its SNOMED CT codes and colour (`totalsegmentator_segment`), any other name (or
    "label N" when unnamed) the generic anatomical-structure codes and a colour from the default cycle."""
    names = names or {}
    given = given or {}
    segments = []
    for i, value in enumerate(int(v) for v in values):
        if value in given:
            if int(given[value].value) != value:
                raise InputError(f"segment description for value {value} says value {given[value].value}")
            segments.append(given[value])
        else:
            name = names.get(value) or f"label {value}"
            segments.append(totalsegmentator_segment(value, name) or Segment(value, name, DEFAULT_COLORS[i % len(DEFAULT_COLORS)]))
    return segments
