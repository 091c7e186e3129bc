"""Prompts and their validation: slice ranges, seed masks from a label volume, clicks and boxes.

Every check on what a user asks for lives here, so the CLI and the server reject the same things with
the same messages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from sam2med.errors import PromptError
from sam2med.geometry import Axis, Grid, reorient_to, to_slices
from sam2med.io import MAX_LABEL_VALUE
from sam2med.labelnames import label_name


@dataclass(frozen=True)
class SliceRange:
    """Inclusive range of slice indices along an axis."""

    start: int
    end: int

    @classmethod
    def parse(cls, value: "SliceRange | Sequence[int] | str | None", num_slices: int, either_order: bool = False) -> "SliceRange":
        """Parse [start, end] / "start,end" / None (= the whole volume) and check it against `num_slices`;
        `either_order`: [end, start] is the same range, else it is an error."""
        if value is None or (isinstance(value, (list, tuple)) and len(value) == 0) or value == "":
            return cls(0, num_slices - 1)
        if isinstance(value, SliceRange):
            rng = value
        else:
            parts = value.replace(":", ",").split(",") if isinstance(value, str) else list(value)
            if len(parts) != 2:
                raise PromptError(f"slice range must be two slice indices [start, end], got {value!r}")
            try:
                start, end = (int(str(p).strip()) for p in parts)
            except ValueError:
                raise PromptError(f"slice range must be two integers, got {value!r}") from None
            rng = cls(min(start, end), max(start, end)) if either_order else cls(start, end)
        rng.check(num_slices)
        return rng

    def check(self, num_slices: int) -> None:
        if self.start > self.end:
            raise PromptError(f"slice range {self.start}..{self.end} is reversed: start must not exceed end")
        if self.start < 0 or self.end >= num_slices:
            raise PromptError(f"slice range {self.start}..{self.end} is outside the volume (slices 0..{num_slices - 1} along this axis)")

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __contains__(self, index: object) -> bool:
        return isinstance(index, (int, np.integer)) and self.start <= int(index) <= self.end

    @property
    def indices(self) -> range:
        return range(self.start, self.end + 1)

    def __str__(self) -> str:
        return f"{self.start}..{self.end}"


@dataclass
class SeedMasks:
    """Masks drawn on conditioning slices: {label value: {slice index: (H, W) bool mask}}."""

    axis: Axis
    masks: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)

    @property
    def labels(self) -> list[int]:
        return sorted(self.masks)

    @property
    def slices(self) -> list[int]:
        return sorted({s for per_label in self.masks.values() for s in per_label})


def seed_on_image_grid(seed_xyz: np.ndarray, seed_grid: Grid, image_grid: Grid) -> np.ndarray:
    """The seed on the image's voxel grid: as is, or exactly re-indexed when it is the same lattice
    stored with other axis order or flips; any other grid is rejected."""
    on_grid = reorient_to(seed_xyz, seed_grid, image_grid)
    if on_grid is None:
        raise PromptError(f"the seed label is not on the image grid ({seed_grid.describe_difference(image_grid)})")
    return on_grid


def named(values: "int | Iterable[int]", names: "Mapping[int, str] | None") -> str:
    """Label values as a message names them: 7, or 'liver QA' (value 5) where `names` names it; several in []."""
    def one(value: int) -> str:
        return f"{label_name(value, names)!r} (value {int(value)})" if (names or {}).get(int(value)) else str(int(value))
    if isinstance(values, (int, np.integer)):
        return one(values)
    return f"[{', '.join(one(v) for v in values)}]"


def parse_labels(value: "Iterable[int | str] | str | int | None",
                 values_by_name: "Mapping[str, int] | None" = None) -> list[int] | None:
    """Parse a label subset: None, an int, "1,5", "liver,2" or a list; names are those of `values_by_name` (any case)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        items = [v for v in value.replace(" ", "").split(",") if v]
    elif isinstance(value, (list, tuple, set)):
        items = list(value)
    else:
        items = [value]  # an int, or anything else a client sends (refused below)
    by_name = {str(name).lower().replace(" ", ""): int(v) for name, v in (values_by_name or {}).items()}
    resolved = []
    for item in items:
        text = str(item).strip()
        if by_name and isinstance(item, str) and text and not text.lstrip("-").isdigit():
            if text.lower() not in by_name:
                pairs = [f"{n}={v}" for n, v in (values_by_name or {}).items()]
                known = ", ".join(pairs[:12]) + (f", ... ({len(pairs)} in all)" if len(pairs) > 12 else "")
                raise PromptError(f"unknown label name {text!r} (known labels: {known})")
            item = by_name[text.lower()]
        resolved.append(item)
    try:
        if not resolved or any(isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()) for v in resolved):
            raise TypeError
        labels = sorted({int(v) for v in resolved})
    except (TypeError, ValueError):
        raise PromptError(f"labels must be integer label values (or names, with a labels map), got {value!r}") from None
    if any(v <= 0 for v in labels):
        raise PromptError(f"labels must be positive label values, got {labels}")
    if labels[-1] > MAX_LABEL_VALUE:
        raise PromptError(f"label value {labels[-1]} is over {MAX_LABEL_VALUE}, the largest supported label value")
    return labels


def seeds_from_label(
    seed_xyz: np.ndarray,
    seed_grid: Grid,
    image_grid: Grid,
    axis: Axis,
    slice_range: SliceRange,
    labels: "Iterable[int] | None" = None,
    locked: Iterable[int] = (),
    names: "Mapping[int, str] | None" = None,
) -> SeedMasks:
    """Turn a seed label volume into per-label conditioning masks, rejecting seeds that cannot work.

    Every slice along `axis` holding voxels of a label becomes a conditioning slice of that label. The
    `locked` values are not propagated (see `locked_voxels`); `names` name labels in the errors.
    """
    seed_slices = to_slices(seed_on_image_grid(seed_xyz, seed_grid, image_grid), axis)  # (N, H, W)
    present = np.unique(seed_slices)
    present = [int(v) for v in present if v != 0]
    if not present:
        raise PromptError("the seed label is empty: draw the structure on at least one slice")
    locked = {int(v) for v in locked}
    wanted = [v for v in present if v not in locked] if labels is None else list(labels)
    missing = [v for v in wanted if v not in present]
    if missing:
        raise PromptError(f"label value(s) {named(missing, names)} not in the seed (it holds {named(present, names)})")
    if locked & set(wanted):
        raise PromptError(f"label(s) {named(sorted(locked & set(wanted)), names)} are locked: a locked label is kept, not propagated")
    if not wanted:
        raise PromptError(f"every label of the seed is locked ({named(present, names)}): nothing to propagate")
    seeds = SeedMasks(axis=axis)
    for value in wanted:
        on_slices = np.flatnonzero((seed_slices == value).any(axis=(1, 2)))
        seeds.masks[value] = {int(s): seed_slices[s] == value for s in on_slices}
    check_seeds_in_range(seeds, slice_range, names=names)
    return seeds


def locked_voxels(seed_xyz: np.ndarray, seed_grid: Grid, image_grid: Grid, locked: Iterable[int]) -> np.ndarray | None:
    """The voxels of the `locked` label values, on the image grid (0 elsewhere): kept as they are, never
    overwritten nor tracked. None when nothing is locked."""
    values = sorted({int(v) for v in locked})
    if not values:
        return None
    on_grid = seed_on_image_grid(seed_xyz, seed_grid, image_grid)
    return np.where(np.isin(on_grid, values), on_grid, 0).astype(on_grid.dtype, copy=False)


def axis_hint(seeds: SeedMasks) -> str | None:
    """A hint when the seed spans several slices along its axis but lies on one slice of another axis: most likely
    drawn on that axis's slice, with the wrong axis asked for (each of its slices then holds a one-voxel line)."""
    if len(seeds.slices) < 2:
        return None
    drawn = np.any([mask for per_slice in seeds.masks.values() for mask in per_slice.values()], axis=0)  # (H, W)
    row_axis, col_axis = sorted(a for a in Axis if a != seeds.axis)[::-1]
    for other, used in ((row_axis, drawn.any(axis=1)), (col_axis, drawn.any(axis=0))):
        on = np.flatnonzero(used)
        if len(on) == 1:
            name, asked = other.name.lower(), seeds.axis.name.lower()
            return (f"the seed lies on 1 {name} slice ({int(on[0])}) but on {len(seeds.slices)} {asked} slices, a line on each: "
                    f"did you mean axis {name}?")
    return None


def check_seeds_in_range(seeds: "SeedMasks | SlicePrompts", slice_range: SliceRange,
                         label_ranges: "Mapping[int, SliceRange] | None" = None, names: "Mapping[int, str] | None" = None) -> None:
    """Reject seed masks (or any slice prompts) on slices outside `slice_range` (or outside their label's own range)."""
    for value, per_slice in (seeds.masks if isinstance(seeds, SeedMasks) else seeds.prompts).items():
        own = (label_ranges or {}).get(value, slice_range)
        outside = [s for s in sorted(per_slice) if s not in own]
        if outside:
            raise PromptError(f"label {named(value, names)} is drawn on slice(s) {outside}, outside the slice range {own}")


_LABEL_RANGE = re.compile(r"^\s*([^:,;]+?)\s*:\s*(\d+)\s*-\s*(\d+)\s*$")


def is_label_range_spec(value: object) -> bool:
    """True for per-label ranges: a mapping, JSON object text, or "LABEL:START-END" items."""
    if isinstance(value, Mapping):
        return True
    items = value if isinstance(value, (list, tuple)) else [value]
    return bool(items) and all(isinstance(v, str) and (v.strip().startswith("{") or _label_range_items(v) is not None) for v in items)


def _label_range_items(text: str) -> list[re.Match] | None:
    """The "LABEL:START-END" items of `text` (separated by ';' or spaces), or None when one is not such an item."""
    matches = [_LABEL_RANGE.match(part) for part in re.split(r"\s*;\s*|\s+", text.strip()) if part]
    return matches if matches and all(matches) else None


def parse_label_ranges(value: object, num_slices: int, values_by_name: "Mapping[str, int] | None" = None,
                       either_order: bool = False) -> dict[int, SliceRange]:
    """{label value: range} from {"5": [10, 40]} (or its JSON text) or "5:10-40" items (also "liver:10-40";
    several items in one text separated by ';' or spaces); labels by value or by a name of `values_by_name`;
    `either_order` as in `SliceRange.parse`."""
    by_name = {str(k).lower(): int(v) for k, v in (values_by_name or {}).items()}
    pairs: list[tuple[str, object]] = []
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if isinstance(item, Mapping):
            pairs += [(str(k), v) for k, v in item.items()]
        elif isinstance(item, str) and item.strip().startswith("{"):
            try:
                loaded = json.loads(item)
            except ValueError:
                raise PromptError(f"per-label ranges {item!r} are not valid JSON") from None
            if not isinstance(loaded, dict):
                raise PromptError(f"per-label ranges must be a JSON object {{label: [start, end]}}, got {item!r}")
            pairs += [(str(k), v) for k, v in loaded.items()]
        else:
            matches = _label_range_items(str(item))
            if matches is None:
                raise PromptError(f"per-label range {str(item)!r} is not LABEL:START-END (e.g. 5:10-40)")
            pairs += [(m.group(1), [int(m.group(2)), int(m.group(3))]) for m in matches]
    ranges: dict[int, SliceRange] = {}
    for key, spec in pairs:
        text = key.strip()
        if text.isdigit() and int(text) > 0:
            label = int(text)
        elif text.lower() in by_name:
            label = by_name[text.lower()]
        else:
            raise PromptError(f"per-label range for {text!r}: not a positive label value or a known label name")
        if label in ranges:
            raise PromptError(f"label {label} has two ranges")
        if isinstance(spec, str):
            spec = spec.replace("-", ",")
        ranges[label] = SliceRange.parse(spec, num_slices, either_order)
    return ranges


def resolve_label_ranges(label_ranges: Mapping[int, SliceRange], default: SliceRange, labels: Iterable[int],
                         names: "Mapping[int, str] | None" = None) -> tuple[SliceRange, dict[int, SliceRange]]:
    """The range covering every label, and the ranges of the labels tracked through less than it: a label's
    own range, else `default` (START END for every label without its own); ranges of labels not propagated are an error."""
    labels = list(labels)
    unknown = sorted(set(label_ranges) - set(labels))
    if unknown:
        raise PromptError(f"a range is given for label(s) {named(unknown, names)}, which are not propagated (labels {named(labels, names)})")
    own = {label: label_ranges.get(label, default) for label in labels}
    covering = SliceRange(min(r.start for r in own.values()), max(r.end for r in own.values()))
    return covering, {label: r for label, r in own.items() if r != covering}


AUTO_RANGE = "auto"
_START_END = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


@dataclass(frozen=True)
class RangeRequest:
    """The slice range asked for, before the volume is known: START END for every label, per-label
    LABEL:START-END / JSON specs, and whether each label stops by itself (auto)."""

    plain: list[int] | None = None
    specs: list[str] = field(default_factory=list)
    auto: bool = False

    @classmethod
    def from_groups(cls, groups: "Sequence[Sequence[str]] | None", option: str = "--range") -> "RangeRequest":
        """From groups of tokens, one per `option` given: [START, END], [auto] or label range specs."""
        plain: list[int] | None = None
        specs: list[str] = []
        auto = False
        for tokens in groups or []:
            plain_text = _START_END.match(tokens[0]) if len(tokens) == 1 else None
            if plain_text:
                tokens = [plain_text.group(1), plain_text.group(2)]
            if [t.strip().lower() for t in tokens] == [AUTO_RANGE]:
                auto = True
            elif len(tokens) == 2 and all(t.strip().lstrip("-").isdigit() for t in tokens):
                if plain is not None:
                    raise PromptError(f"{option} START END is given twice; give a label's own range as {option} LABEL:START-END")
                plain = [int(t) for t in tokens]
            elif is_label_range_spec(list(tokens)):
                specs += tokens
            else:
                raise PromptError(f"{option} {' '.join(tokens)}: give START END, LABEL:START-END or a JSON object")
        if auto and plain is not None:
            raise PromptError(f"{option} auto and {option} START END: give one (a label's own range may go with auto)")
        return cls(plain, specs, auto)

    @classmethod
    def from_text(cls, text: str, option: str = "range") -> "RangeRequest":
        """From one text as manifests and the server take it: "20-60", "auto", "LABEL:START-END" items and one
        START-END for the other labels ("16-26; liver:14-29 2:2-14"), or a JSON object of per-label ranges."""
        return cls.from_groups(range_groups(text), option)


def range_groups(text: str) -> list[list[str]]:
    """A range text as --range token groups: "10-40" -> [["10", "40"]], "auto" -> [["auto"]], per-label items
    ("5:10-40; 2:3-9", separated by ';' or spaces) in one group, and a JSON object as it is."""
    if text.strip().startswith("{"):
        return [[text]]  # per-label ranges as a JSON object
    groups: list[list[str]] = []
    specs: list[str] = []
    for token in re.split(r"\s*;\s*|\s+", text.strip()):
        plain = _START_END.match(token)
        if plain:
            groups.append([plain.group(1), plain.group(2)])
        elif token.lower() == AUTO_RANGE:
            groups.append([AUTO_RANGE])
        elif token:
            specs.append(token)
    return groups + ([specs] if specs else [])


@dataclass
class SeedPrompt:
    """A seed label turned into what the engine takes: masks per label, the covering range, labels' own ranges."""

    seeds: SeedMasks
    slice_range: SliceRange
    label_ranges: dict[int, SliceRange]
    locked: np.ndarray | None = None  # the locked labels' voxels on the image grid (see `locked_voxels`)
    hint: str | None = None  # `axis_hint`: the seed looks drawn along another axis


def seed_prompt(seed_xyz: np.ndarray, seed_grid: Grid, image_grid: Grid, axis: Axis, request: RangeRequest,
                labels: "Iterable[int] | None" = None, names: "Mapping[int, str] | None" = None,
                locked: Iterable[int] = ()) -> SeedPrompt:
    """Check a seed label and a range request against the image and build the engine's prompt from them;
    the `locked` label values are kept as they are, not propagated."""
    num_slices = image_grid.num_slices(axis)
    default_range = SliceRange.parse(request.plain, num_slices)
    values_by_name = {n: v for v, n in (names or {}).items()}
    label_ranges = parse_label_ranges(request.specs, num_slices, values_by_name) if request.specs else {}
    seeds = seeds_from_label(seed_xyz, seed_grid, image_grid, axis, SliceRange(0, num_slices - 1), labels, locked, names)
    slice_range, own_ranges = resolve_label_ranges(label_ranges, default_range, seeds.labels, names)
    check_seeds_in_range(seeds, default_range, label_ranges, names)
    return SeedPrompt(seeds, slice_range, own_ranges, locked_voxels(seed_xyz, seed_grid, image_grid, locked), axis_hint(seeds))


@dataclass(frozen=True)
class ClickPrompt:
    """Clicks and an optional box on one slice, in slice pixel coordinates (row, column)."""

    slice_index: int
    points_rc: tuple[tuple[float, float], ...] = ()
    point_labels: tuple[int, ...] = ()  # 1 foreground, 0 background
    box_rc: tuple[float, float, float, float] | None = None  # (row0, col0, row1, col1)

    def check(self, height: int, width: int) -> None:
        if not self.points_rc and self.box_rc is None:
            raise PromptError(f"slice {self.slice_index}: a click prompt needs at least one point or a box")
        if self.point_labels and 1 not in self.point_labels and self.box_rc is None:
            raise PromptError(f"slice {self.slice_index}: give at least one foreground click or a box")
        self.check_points(height, width)

    def check_points(self, height: int, width: int) -> None:
        """Every click and the box inside the slice, each click with a label 0 or 1."""
        if len(self.points_rc) != len(self.point_labels):
            raise PromptError("each click needs a label (1 foreground, 0 background)")
        if any(lab not in (0, 1) for lab in self.point_labels):
            raise PromptError("click labels must be 1 (foreground) or 0 (background)")
        for r, c in self.points_rc:
            if not (0 <= r < height and 0 <= c < width):
                raise PromptError(f"click ({r:g}, {c:g}) on slice {self.slice_index} is outside the {height}x{width} slice")
        if self.box_rc is not None:
            r0, c0, r1, c1 = self.box_rc
            if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
                raise PromptError(f"box {self.box_rc} on slice {self.slice_index} is empty or outside the {height}x{width} slice")


@dataclass
class ClickSeeds:
    """Click prompts per label: {label value: [ClickPrompt, ...]}."""

    axis: Axis
    prompts: dict[int, list[ClickPrompt]] = field(default_factory=dict)

    @property
    def labels(self) -> list[int]:
        return sorted(self.prompts)

    @property
    def slices(self) -> list[int]:
        return sorted({p.slice_index for per_label in self.prompts.values() for p in per_label})

    def check(self, grid: Grid, slice_range: SliceRange) -> None:
        if not self.prompts or not any(self.prompts.values()):
            raise PromptError("no click or box prompt was given")
        rows, cols = [a for a in (0, 1, 2) if a != int(self.axis)][::-1]
        height, width = grid.shape[rows], grid.shape[cols]
        for label, prompts in self.prompts.items():
            if label <= 0:
                raise PromptError(f"label values must be positive, got {label}")
            for prompt in prompts:
                if prompt.slice_index not in slice_range:
                    raise PromptError(f"label {label}: prompt on slice {prompt.slice_index} is outside the slice range {slice_range}")
                prompt.check(height, width)


@dataclass(frozen=True, eq=False)  # eq=False: a mask array has no single truth value
class SlicePrompt:
    """Everything that conditions one label on one slice, as SAM2 takes it: a mask (or None), clicks and a box.

    The engine adds the mask first (`add_new_mask`), then the clicks and the box (`add_new_points_or_box`), which
    refine it: sam2 feeds a frame's previous prediction (here: the mask) to the decoder with the new clicks. A slice
    with a mask and no clicks nor box comes back as the mask (drawn); with clicks or a box it comes back as SAM2's
    refined mask. Points and the box are in slice pixel coordinates (row, column)."""

    mask: np.ndarray | None = None  # (H, W) bool
    points_rc: tuple[tuple[float, float], ...] = ()
    point_labels: tuple[int, ...] = ()  # 1 foreground, 0 background
    box_rc: tuple[float, float, float, float] | None = None  # (row0, col0, row1, col1)

    @property
    def has_clicks(self) -> bool:
        """Clicks or a box: SAM2 predicts the slice (refining the mask, if any) rather than taking the mask as drawn."""
        return bool(self.points_rc) or self.box_rc is not None

    @property
    def drawn(self) -> np.ndarray | None:
        """The mask this slice comes back as, exactly: the mask of a slice with no clicks nor box, else None."""
        return None if self.has_clicks else self.mask

    @property
    def positive(self) -> bool:
        """Says where the object is: a non-empty mask, a foreground click or a box."""
        return (self.mask is not None and bool(self.mask.any())) or 1 in self.point_labels or self.box_rc is not None

    def check(self, slice_index: int, height: int, width: int) -> None:
        if self.mask is None and not self.has_clicks:
            raise PromptError(f"slice {slice_index}: a prompt needs a mask, a click or a box")
        if self.mask is not None and tuple(self.mask.shape) != (height, width):
            raise PromptError(f"slice {slice_index}: mask of shape {tuple(self.mask.shape)} on a {height}x{width} slice")
        ClickPrompt(slice_index, self.points_rc, self.point_labels, self.box_rc).check_points(height, width)


@dataclass
class SlicePrompts:
    """What the engine conditions on: {label value: {slice index: SlicePrompt}} along `axis`.

    Seed masks (`SeedMasks`) and clicks (`ClickSeeds`) are both this (`as_slice_prompts`); gestures
    (`sam2med.gestures`) add to it."""

    axis: Axis
    prompts: dict[int, dict[int, SlicePrompt]] = field(default_factory=dict)

    @property
    def labels(self) -> list[int]:
        return sorted(self.prompts)

    @property
    def slices(self) -> list[int]:
        return sorted({s for per_label in self.prompts.values() for s in per_label})

    def slices_of(self, label: int) -> list[int]:
        return sorted(self.prompts[label])

    def drawn(self) -> dict[int, dict[int, np.ndarray]]:
        """{label: {slice: mask}} of the slices that come back as drawn (a mask and no clicks nor box)."""
        return {label: {s: p.drawn for s, p in sorted(per_slice.items()) if p.drawn is not None}
                for label, per_slice in self.prompts.items()}

    def check(self, grid: Grid, slice_range: SliceRange, names: "Mapping[int, str] | None" = None) -> None:
        if not self.prompts or not any(self.prompts.values()):
            raise PromptError("no prompt was given")
        rows, cols = [a for a in (0, 1, 2) if a != int(self.axis)][::-1]
        height, width = grid.shape[rows], grid.shape[cols]
        for label, per_slice in sorted(self.prompts.items()):
            if label <= 0:
                raise PromptError(f"label values must be positive, got {label}")
            outside = [s for s in sorted(per_slice) if s not in slice_range]
            if outside:
                raise PromptError(f"label {named(label, names)} is prompted on slice(s) {outside}, outside the slice range {slice_range}")
            for slice_index, prompt in sorted(per_slice.items()):
                prompt.check(slice_index, height, width)
            if not any(p.positive for p in per_slice.values()):
                raise PromptError(f"label {named(label, names)} has only negative prompts: say where it is "
                                  "(a mask, a positive click, a box, a positive scribble or lasso)")


def as_slice_prompts(seeds: "SeedMasks | ClickSeeds | SlicePrompts") -> SlicePrompts:
    """Seed masks or click prompts in the engine's one form (clicks on one slice of a label: one prompt)."""
    if isinstance(seeds, SlicePrompts):
        return seeds
    if isinstance(seeds, SeedMasks):
        return SlicePrompts(seeds.axis, {label: {s: SlicePrompt(mask=np.asarray(m, dtype=bool)) for s, m in per_slice.items()}
                                         for label, per_slice in seeds.masks.items()})
    prompts: dict[int, dict[int, SlicePrompt]] = {}
    for label, clicks in seeds.prompts.items():
        per_slice = prompts.setdefault(label, {})
        for click in clicks:
            before = per_slice.get(click.slice_index, SlicePrompt())
            if before.box_rc is not None and click.box_rc is not None:
                raise PromptError(f"label {label}: two boxes on slice {click.slice_index} (SAM2 takes one box per slice)")
            per_slice[click.slice_index] = SlicePrompt(None, before.points_rc + tuple(click.points_rc),
                                                       before.point_labels + tuple(click.point_labels),
                                                       click.box_rc if click.box_rc is not None else before.box_rc)
    return SlicePrompts(seeds.axis, prompts)
