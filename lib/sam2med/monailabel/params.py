"""Parsing of MONAI Label infer requests into engine prompts; every rejection is a one-line `PromptError`.

Clients send options as JSON values or as the strings of an options table (OHIF, 3D Slicer), and may
echo a config default that is a list of choices; both forms are accepted here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from sam2med.engine.overlap import KEEP, parse_overlap
from sam2med.engine.policies import AutoRange, SelectiveMemory, parse_memory
from sam2med.errors import PromptError, Sam2MedError
from sam2med.geometry import Axis, Grid, voxel_to_slice_point
from sam2med.gestures import KINDS, Gesture
from sam2med.labelnames import LabelMapping, label_name, name_key, parse_label_info
from sam2med.prompts import (ClickPrompt, ClickSeeds, RangeRequest, SliceRange, is_label_range_spec, parse_label_ranges, parse_labels,
                             range_groups)
from sam2med.windowing import Window

DEFAULT_SEED_TAG = "final"
OUTPUT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")
OUTPUT_DTYPES = ("uint8", "uint16", "uint32")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_WHOLE_VOLUME = ("", "all", "none", "whole")
AUTO_RANGE = "auto"  # slice_range "auto": each label stops where it ends (AutoRange)
_AUTO_OPTIONS = {"absent_slices": int, "min_object_score": float, "max_slices": int}


def first_choice(value: Any) -> Any:
    """A config default offered as a list of choices stands for its first entry."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def parse_bool(value: Any, name: str, default: bool | None, error: type[Sam2MedError] = PromptError) -> bool:
    """true/false, 1/0, yes/no, on/off; an empty value is `default`, or an `error` when default is None."""
    if (value is None or value == "") and default is not None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise error(f"{name} must be true or false, got {value!r}")


def parse_axis(value: Any) -> Axis:
    value = first_choice(value)
    return Axis.AXIAL if value in (None, "") else Axis.parse(value)


def parse_window(value: Any) -> str:
    """A window spec, checked now (before any work) and passed on as text."""
    value = first_choice(value)
    if value in (None, ""):
        return "auto"
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise PromptError(f"window must be a name or LEVEL,WIDTH text, got {_short(value)}")
    Window.parse(str(value), None)
    return str(value)


def _short(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: a detail stays one short line whatever a client sends."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def parse_slice_range(value: Any, num_slices: int) -> SliceRange:
    """[start, end] (inclusive), "start,end", "start:end", "start-end" or "[start, end]"; empty or "all" = every slice.
    Start and end may come in either order (a viewer's Start/End set from the other end)."""
    if isinstance(value, str):
        text = value.strip().strip("[]()").strip()
        if text.lower() in _WHOLE_VOLUME:
            return SliceRange.parse(None, num_slices)
        if re.fullmatch(r"\d+\s*-\s*\d+", text):
            text = text.replace("-", ",")
        return SliceRange.parse(text, num_slices, either_order=True)
    if value is None:
        return SliceRange.parse(None, num_slices)
    if not isinstance(value, (list, tuple)):
        raise PromptError(f"slice range must be two slice indices [start, end], got {_short(value)}")
    if len(value) not in (0, 2):
        raise PromptError(f"slice range must be two slice indices [start, end], got {_short(value)}")
    if any(isinstance(v, bool) or not _is_integral(v) for v in value):
        raise PromptError(f"slice range must be two integer slice indices, got {_short(value)}")
    return SliceRange.parse([int(v) for v in value], num_slices, either_order=True)


def is_range_missing(value: Any) -> bool:
    """No slice_range given at all (absent, empty text or list), as opposed to "all" for every slice."""
    return value is None or value == [] or (isinstance(value, str) and not value.strip().strip("[]()").strip())


def parse_label_slice_ranges(value: Any, num_slices: int, label_names: Mapping[str, int]) -> tuple[SliceRange, dict[int, SliceRange]]:
    """A `slice_range` as (the range of every label without its own, the labels' own ranges): a plain range;
    per-label ranges ({"5": [10, 40]}, "5:10-40; liver:12-30"), the others over the whole volume; or both in one
    text ("16-26; liver:14-29"), the others over the plain range."""
    if isinstance(value, str) and not value.strip().startswith("{"):
        groups = range_groups(value)
        if len(groups) > 1 and all(len(g) == 2 and g[0].isdigit() for g in groups[:-1]):  # START-END with LABEL:START-END items
            request = RangeRequest.from_groups(groups, "slice_range")
            return (SliceRange.parse(request.plain, num_slices, either_order=True),
                    parse_label_ranges(request.specs, num_slices, label_names, either_order=True))
    if is_label_range_spec(value):
        return SliceRange.parse(None, num_slices), parse_label_ranges(value, num_slices, label_names, either_order=True)
    return parse_slice_range(value, num_slices), {}


def is_auto_range(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO_RANGE


def parse_policies(request: Mapping[str, Any], auto: bool) -> dict[str, AutoRange | SelectiveMemory | None]:
    """The engine's `auto` (slice_range "auto" with absent_slices, min_object_score, max_slices) and `memory`
    ("recent" or "selective") of a request; the auto options without slice_range "auto" are an error."""
    given = {}
    for name, kind in _AUTO_OPTIONS.items():
        value = request.get(name)
        if value is None or value == "":
            continue
        if kind is int and (isinstance(value, bool) or not _is_integral(value)):
            raise PromptError(f"{name} must be a whole number, got {_short(value)}")
        try:
            given[name] = kind(value)
        except (TypeError, ValueError):
            raise PromptError(f"{name} must be a number, got {_short(value)}") from None
    if given and not auto:
        raise PromptError(f"{next(iter(given))} applies to slice_range \"auto\" only")
    memory = first_choice(request.get("memory"))
    if memory is not None and not isinstance(memory, str):
        raise PromptError(f"memory must be recent or selective, got {_short(memory)}")
    return {"auto": AutoRange(**given) if auto else None, "memory": parse_memory(memory)}


def _is_integral(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 18
    if isinstance(value, float):
        return value.is_integer() and abs(value) < 2**62
    return isinstance(value, (int, np.integer))


def parse_label_subset(value: Any, label_names: Mapping[str, int]) -> list[int] | None:
    """Label values (numbers or names of the app's labels) to propagate; None = every label of the seed."""
    if value is None or value == "" or value == []:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    by_name = {name_key(name): int(v) for name, v in label_names.items()}
    resolved: list[Any] = []
    for item in items:
        text = str(item).strip()
        if text and not text.lstrip("-").isdigit():
            key = name_key(text)
            if key not in by_name:
                known = ", ".join(f"{n}={v}" for n, v in label_names.items()) or "none"
                raise PromptError(f"unknown label name {text!r} (known labels: {known})")
            resolved.append(by_name[key])
        else:
            resolved.append(item)
    return parse_labels(resolved)


MAX_NAME_LENGTH = 64


def _decoded(value: Any, name: str, expected: str) -> Any:
    """`value`, or the JSON object or list its text holds (an options table sends them as text)."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            raise PromptError(f"{name} must be {expected}, got {_short(value)}") from None
    return value


def parse_label_names(value: Any) -> dict[int, str]:
    """A request's own names of label values (the viewer's segment names): {"liver QA": 5} or {"5": "liver QA"},
    or its JSON text; empty = none. Errors and reports then name those labels so."""
    value = _decoded(value, "label_names", "a JSON object {name: value}")
    if value is None or value == "" or value == {}:
        return {}
    if not isinstance(value, Mapping):
        raise PromptError(f"label_names must be an object {{name: value}} or {{value: name}}, got {_short(value)}")
    names: dict[int, str] = {}
    for key, item in value.items():
        number, name = (item, key) if not isinstance(item, str) else (key, item)
        if isinstance(number, bool) or not _is_integral(number) or int(number) <= 0:
            raise PromptError(f"label_names entry {_short(key)}: {_short(item)} does not pair a name with a positive label value")
        name = str(name).strip()
        if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise PromptError(f"label_names: {_short(name)} is not a name (1 to {MAX_NAME_LENGTH} printable characters)")
        names[int(number)] = name
    return names


def parse_locked_labels(value: Any, label_names: Mapping[str, int]) -> tuple[int, ...]:
    """`locked_labels`: label values or names ([1, "liver"], "1,liver" or its JSON text) kept as they are."""
    value = _decoded(value, "locked_labels", "a list of label values or names")
    try:
        return tuple(parse_label_subset(value, label_names) or ())
    except PromptError as err:
        raise PromptError(f"locked_labels: {err}") from None


def parse_label_value(value: Any, label_names: Mapping[str, int], default: int = 1) -> int:
    """One output label value (a number or a label name) for click prompts."""
    value = first_choice(value)
    if value is None or value == "":
        return default
    labels = parse_label_subset([value], label_names)
    assert labels is not None
    return labels[0]


def parse_seed_tag(value: Any, name: str = "seed_tag") -> str:
    """A datastore label tag (`seed_tag`, or `label_tag` under which a result is saved); empty = `final`."""
    value = first_choice(value)
    if value in (None, ""):
        return DEFAULT_SEED_TAG
    tag = str(value).strip()
    if not _TAG.match(tag):
        raise PromptError(f"{name} {value!r} is not a label tag name (letters, digits, '_', '-', '.')")
    return tag


@dataclass(frozen=True)
class OutputFormat:
    """How the result label file is written: extension, voxel type (None = smallest fitting) and compression."""

    extension: str = ".nii.gz"
    dtype: str | None = None
    compress: bool = True

    @classmethod
    def parse(cls, request: Mapping[str, Any]) -> "OutputFormat":
        ext = request.get("result_extension") or ".nii.gz"
        ext = str(ext).strip().lower()
        ext = ext if ext.startswith(".") else f".{ext}"
        if ext not in OUTPUT_EXTENSIONS:
            raise PromptError(f"result_extension {ext!r} is not supported; use one of {', '.join(OUTPUT_EXTENSIONS)}")
        dtype = request.get("result_dtype") or None
        if dtype is not None:
            dtype = str(dtype).strip().lower()
            if dtype not in OUTPUT_DTYPES:
                raise PromptError(f"result_dtype {dtype!r} is not supported; use one of {', '.join(OUTPUT_DTYPES)}")
        return cls(ext, dtype, parse_bool(request.get("result_compress"), "result_compress", True))


@dataclass(frozen=True)
class PropagateParams:
    """A parsed `sam2_propagate` request (the slice range is checked once the image is known)."""

    axis: Axis
    slice_range: Any
    window: str
    labels: list[int] | None
    seed_tag: str
    sam2_model: str | None
    output: OutputFormat
    no_seed: str = "error"  # "skip": a request without a seed answers a message and no label (3D Slicer's Auto-Run)
    overlap: str = KEEP
    locked: tuple[int, ...] = ()
    names: dict[int, str] = field(default_factory=dict)  # the app's label names, and the request's over them
    prompts: tuple[Gesture, ...] = ()  # clicks, boxes, scribbles, lassos (sam2med.gestures); the seed is then optional
    crop_to_change: bool = False  # return only the box of the voxels that differ from the seed (or from 0)
    refine: bool = False  # a correction re-propagates only the band of slices it can change (corrections.refine_bands)


def parse_no_seed(value: Any) -> str:
    """What a `sam2_propagate` request without a seed gets: "error" (a 422, when not said) or "skip" (a no-op answer)."""
    value = first_choice(value)
    if value in (None, ""):
        return "error"
    text = str(value).strip().lower()
    if text not in ("skip", "error"):
        raise PromptError(f"no_seed must be skip or error, got {_short(value)}")
    return text


def parse_propagate(request: Mapping[str, Any], label_names: Mapping[str, int]) -> PropagateParams:
    """`label_names` are the app's; a request's own `label_names` add to them (and win), for names and errors."""
    names = {**{int(v): str(n) for n, v in label_names.items()}, **parse_label_names(request.get("label_names"))}
    by_name = {name: value for value, name in names.items()}
    return PropagateParams(
        axis=parse_axis(request.get("axis")),
        slice_range=request.get("slice_range"),
        window=parse_window(request.get("window")),
        labels=parse_label_subset(request.get("labels"), by_name),
        seed_tag=parse_seed_tag(request.get("seed_tag")),
        sam2_model=first_choice(request.get("sam2_model")) or None,
        output=OutputFormat.parse(request),
        no_seed=parse_no_seed(request.get("no_seed")),
        overlap=parse_overlap(first_choice(request.get("overlap"))),
        locked=parse_locked_labels(request.get("locked_labels"), by_name),
        names=names,
        prompts=parse_prompts(request.get("prompts"), by_name),
        crop_to_change=parse_bool(request.get("crop_to_change"), "crop_to_change", False),
        refine=parse_bool(request.get("refine"), "refine", False),
    )


MAX_PROMPTS = 500
MAX_PROMPT_POINTS = 10_000  # in all prompts of a request (each one: at most MAX_POINTS)


def _box_slices(value: Any) -> tuple[int, int] | None:
    """A box's `slices`: [first, last] whole slice numbers along the axis (either order), or absent."""
    if value is None or value == "" or value == []:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or any(isinstance(v, bool) or not _is_integral(v) or int(v) < 0 for v in value)):
        raise PromptError(f"slices must be [first, last] slice numbers, got {_short(value)}")
    return int(value[0]), int(value[1])


def parse_prompts(value: Any, label_names: Mapping[str, int]) -> tuple[Gesture, ...]:
    """`prompts`: [{"label": 3 or a name, "kind": click|box|scribble|lasso, "positive": true|false (default true),
    "points": [[x, y, z], ...], a box's "slices": [first, last]}, ...] (or its JSON text), voxel points; checked
    against the image later (`gestures.gestures_to_prompts`, `gestures.box_ranges`). Errors name the prompt by its index."""
    value = _decoded(value, "prompts", "a list of prompt objects")
    if value is None or value == "" or value == []:
        return ()
    if not isinstance(value, (list, tuple)):
        raise PromptError(f"prompts must be a list of {{label, kind, positive, points}} objects, got {_short(value)}")
    if len(value) > MAX_PROMPTS:
        raise PromptError(f"prompts holds {len(value)} prompts; at most {MAX_PROMPTS} are accepted")
    gestures = []
    for index, item in enumerate(value):
        where = f"prompt {index}"
        if not isinstance(item, Mapping):
            raise PromptError(f"{where} must be an object {{label, kind, positive, points}}, got {_short(item)}")
        kind = item.get("kind")
        if not isinstance(kind, str) or kind.strip().lower() not in KINDS:
            raise PromptError(f"{where}: kind must be one of {', '.join(KINDS)}, got {_short(kind)}")
        if item.get("label") in (None, "", []):
            raise PromptError(f"{where}: give its label (a value or a name)")
        try:
            label = parse_label_value(item.get("label"), label_names)
            positive = parse_bool(item.get("positive"), "positive", True)
            points = _points(item.get("points"), "points")
            slices = _box_slices(item.get("slices"))
        except PromptError as err:
            raise PromptError(f"{where}: {err}") from None
        gesture = Gesture(label, kind.strip().lower(), positive, points, index, slices)
        gesture.check()
        gestures.append(gesture)
    if sum(len(g.points) for g in gestures) > MAX_PROMPT_POINTS:
        raise PromptError(f"prompts hold {sum(len(g.points) for g in gestures)} points in all; at most {MAX_PROMPT_POINTS} are accepted")
    return tuple(gestures)


Point = tuple[float, float, float]


ROI_SLICER = "x0,x1,y0,y1,z0,z1"  # 3D Slicer's MONAI Label plugin (getROIPointsXYZ): min/max per axis
ROI_MONAI = "x0,y0,x1,y1,z0,z1"  # MONAI Label's own SAM2 task (and OHIF-style boxes): corners, then z
ROI_ORDERS = {ROI_SLICER: "3D Slicer", ROI_MONAI: "MONAI Label's SAM2"}
POINT_REACH = 10  # slices either side of the prompt slices that sam2_points propagates when no slice_range is given


@dataclass(frozen=True)
class PointParams:
    """A parsed `sam2_points` request: voxel clicks (x, y, z) and an optional voxel box, for one label.

    `label` is the server's value of the clicked label; `labels` maps the client's values to the
    server's by name when the request names its segment (`label`) or sends `label_info`."""

    axis: Axis
    slice_range: Any
    window: str
    label: int
    foreground: tuple[Point, ...]
    background: tuple[Point, ...]
    roi: tuple[float, float, float, float, float, float] | None  # the six numbers as sent, in `roi_order`
    roi_order: str | None  # ROI_SLICER or ROI_MONAI; None: whichever of the two fits the image
    sam2_model: str | None
    output: OutputFormat
    labels: LabelMapping | None = None


@dataclass(frozen=True)
class RoiBox:
    """An roi read in one order: voxel corners (x, y, z) and, per axis, the first and last slice it spans."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]
    spans: tuple[tuple[int, int], ...]
    order: str


MAX_POINTS = 1000


def _numbers(values: Sequence[Any], what: str) -> tuple[float, ...]:
    """Finite numbers (JSON numbers or numeric text), else a `PromptError` naming `what`."""
    try:
        if any(isinstance(v, bool) for v in values):
            raise TypeError("true/false is not a number")
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        raise PromptError(f"{what} holds a non-number") from None
    if not all(np.isfinite(numbers)):
        raise PromptError(f"{what} holds a non-finite number (NaN or infinity)")
    return numbers


def _points(value: Any, name: str) -> tuple[Point, ...]:
    if value in (None, "", []):
        return ()
    if not isinstance(value, (list, tuple)):
        raise PromptError(f"{name} must be a list of [x, y, z] voxel points, got {_short(value)}")
    if len(value) > MAX_POINTS:
        raise PromptError(f"{name} holds {len(value)} points; at most {MAX_POINTS} are accepted")
    points = []
    for point in value:
        if not isinstance(point, (list, tuple)) or len(point) != 3:
            raise PromptError(f"{name} point {_short(point)} is not an [x, y, z] voxel point")
        points.append(_numbers(point, f"{name} point {_short(point)}"))
    return tuple(points)  # type: ignore[return-value]


def _roi_orders() -> str:
    return " or ".join(f"[{order.replace(',', ', ')}] ({who})" for order, who in ROI_ORDERS.items())


def _roi(value: Any) -> tuple[float, float, float, float, float, float] | None:
    if value in (None, "", []):
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 6:
        raise PromptError(f"roi must be six voxel numbers, {_roi_orders()}, got {_short(value)}")
    return _numbers(value, f"roi {_short(value)}")  # type: ignore[return-value]


def parse_roi_order(value: Any) -> str | None:
    """`roi_order`: "x0,x1,y0,y1,z0,z1" (3D Slicer) or "x0,y0,x1,y1,z0,z1" (MONAI Label's SAM2); empty = not said."""
    value = first_choice(value)
    if value in (None, ""):
        return None
    text = re.sub(r"[\s\[\]()]", "", str(value)).lower()
    if text not in ROI_ORDERS:
        raise PromptError(f"roi_order must be {' or '.join(repr(o) for o in ROI_ORDERS)}, got {_short(value)}")
    return text


def _read_roi(roi: Sequence[float], order: str, shape: Sequence[int]) -> RoiBox | str:
    """The box `roi` describes when read in `order`, or why it does not fit the image."""
    if order == ROI_SLICER:
        x0, x1, y0, y1, z0, z1 = roi
    else:
        x0, y0, x1, y1, z0, z1 = roi
    for low, high, size, axis in ((x0, x1, shape[0], "x"), (y0, y1, shape[1], "y"), (z0, z1, shape[2], "z")):
        if not (0 <= min(low, high) and max(low, high) <= size):
            return f"roi {axis} range {low:g}..{high:g} is outside the image ({'x'.join(map(str, shape))} voxels)"
    low, high = (min(x0, x1), min(y0, y1), min(z0, z1)), (max(x0, x1), max(y0, y1), max(z0, z1))
    spans = []
    for a in range(3):
        first = min(int(round(low[a])), int(shape[a]) - 1)
        if order == ROI_SLICER:  # corner voxels, both included; a far corner on the image's edge rounds to its size
            spans.append((first, min(int(round(high[a])), int(shape[a]) - 1)))
        else:  # the far end excluded, as MONAI Label's SAM2 reads z1
            spans.append((first, max(int(round(high[a])) - 1, first)))
    return RoiBox(low, high, tuple(spans), order)


def resolve_roi(roi: Sequence[float], order: str | None, shape: Sequence[int]) -> RoiBox:
    """Read `roi` in `order`; with no order, in the only one of the two in which it fits the image (else a 422)."""
    if order is not None:
        box = _read_roi(roi, order, shape)
        if isinstance(box, str):
            raise PromptError(f"{box}, reading roi as [{order.replace(',', ', ')}] (roi_order)")
        return box
    readings = {o: _read_roi(roi, o, shape) for o in ROI_ORDERS}
    fitting = [box for box in readings.values() if not isinstance(box, str)]
    numbers = "[" + ", ".join(f"{v:g}" for v in roi) + "]"
    if not fitting:
        raise PromptError(f"roi {numbers} is outside the image ({'x'.join(map(str, shape))} voxels) read as "
                          f"{_roi_orders()}")
    if len(fitting) > 1:
        raise PromptError(f"roi {numbers} fits the image read as {_roi_orders()}: say which with roi_order "
                          f"{' or '.join(repr(o) for o in ROI_ORDERS)}")
    return fitting[0]


def check_roi(params: "PointParams", shape: Sequence[int]) -> RoiBox | None:
    """The roi box of a request, read and checked against the image before any work."""
    return None if params.roi is None else resolve_roi(params.roi, params.roi_order, shape)


def parse_point_labels(request: Mapping[str, Any], label_names: Mapping[str, int]) -> tuple[int, LabelMapping | None]:
    """(server value, client mapping) of a points request.

    3D Slicer sends `label`, the name of the segment clicked in (kept as `segment`: MONAI Label's `label` is
    the seed file), and imports a one-label answer as value 1 into that segment: such a request is answered
    as value 1 (or its value in `label_info`), and is the server's label of that name inside. Without it,
    `label_value` (value or name) picks the label."""
    client = parse_label_info(request.get("label_info"))
    segment = first_choice(request.get("segment"))
    if segment not in (None, ""):
        if not isinstance(segment, str):
            raise PromptError(f"segment must be a segment name, got {_short(segment)}")
        if client is None:
            client = {segment: 1}
        elif not any(name_key(n) == name_key(segment) for n in client):
            raise PromptError(f"segment {segment!r} is not named in label_info ({', '.join(client)})")
        mapping = LabelMapping.match(client, label_names)
        return next(mapping.server[n] for n in client if name_key(n) == name_key(segment)), mapping
    value = parse_label_value(request.get("label_value"), label_names)
    if client is None:
        return value, None
    mapping = LabelMapping.match(client, label_names)
    if value not in mapping.to_client():
        raise PromptError(f"label_value {value} is not among the labels label_info names ({', '.join(client)})")
    return value, mapping


def parse_points(request: Mapping[str, Any], label_names: Mapping[str, int]) -> PointParams:
    label, mapping = parse_point_labels(request, label_names)
    params = PointParams(
        axis=parse_axis(request.get("axis")),
        slice_range=request.get("slice_range"),
        window=parse_window(request.get("window")),
        label=label,
        foreground=_points(request.get("foreground"), "foreground"),
        background=_points(request.get("background"), "background"),
        roi=_roi(request.get("roi")),
        roi_order=parse_roi_order(request.get("roi_order")),
        sam2_model=first_choice(request.get("sam2_model")) or None,
        output=OutputFormat.parse(request),
        labels=mapping,
    )
    if not params.foreground and params.roi is None:
        raise PromptError("sam2_points needs at least one foreground point or an roi box")
    return params


def click_seeds(params: PointParams, grid: Grid) -> ClickSeeds:
    """Group the voxel clicks by slice along the axis and add the roi's box on every slice it spans."""
    axis = params.axis
    rows, cols = [a for a in (0, 1, 2) if a != int(axis)][::-1]
    per_slice: dict[int, dict[str, Any]] = {}
    for points, value in ((params.foreground, 1), (params.background, 0)):
        for point in points:
            for v, size in zip(point, grid.shape):
                if not 0 <= v < size:
                    raise PromptError(f"point {list(point)} is outside the image ({'x'.join(map(str, grid.shape))} voxels)")
            slice_index, row, col = voxel_to_slice_point(point, axis)
            entry = per_slice.setdefault(slice_index, {"points": [], "labels": [], "box": None})
            entry["points"].append((row, col))
            entry["labels"].append(value)
    roi = check_roi(params, grid.shape)
    if roi is not None:
        low, high = roi.low, roi.high
        box = (low[rows], low[cols], high[rows], high[cols])
        first, last = roi.spans[int(axis)]
        for slice_index in range(first, last + 1):
            per_slice.setdefault(slice_index, {"points": [], "labels": [], "box": None})["box"] = box
    prompts = [
        ClickPrompt(slice_index=s, points_rc=tuple(e["points"]), point_labels=tuple(e["labels"]), box_rc=e["box"])
        for s, e in sorted(per_slice.items())
    ]
    return ClickSeeds(axis=axis, prompts={params.label: prompts})


def point_range(seeds: ClickSeeds, num_slices: int, reach: int = POINT_REACH) -> SliceRange:
    """The bounded neighbourhood of the prompt slices that a points request with no slice_range propagates."""
    return SliceRange(max(0, min(seeds.slices) - reach), min(num_slices - 1, max(seeds.slices) + reach))


def check_model(requested: Any, loaded: str) -> None:
    """A request naming a SAM2.1 size must name the one this server loaded."""
    if requested not in (None, "") and str(requested) != loaded:
        raise PromptError(f"this server runs SAM2.1 '{loaded}', not {str(requested)!r}: restart it with --model {requested}")


def describe_labels(values: Sequence[int], label_names: Mapping[str, int]) -> dict[str, int]:
    """{name: value} for result label values, named after the app's labels where known."""
    names = {int(v): n for n, v in label_names.items()}
    return {label_name(v, names): int(v) for v in values}
