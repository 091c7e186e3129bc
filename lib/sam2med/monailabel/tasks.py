"""MONAI Label infer tasks: `sam2_propagate` (seed mask and/or prompts + slice range) and `sam2_points` (clicks / box)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, Tuple

import numpy as np
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from sam2med.monailabel.corrections import (Correction, CorrectionState, CorrectionStore, RefinePlan, keep_outside_bands,
                                            parse_state_id, prompt_correction, prompt_digests, refine_bands,
                                            restrict_to_bands, select_corrected_seeds, slice_digests)
from sam2med.engine import PropagationResult, Propagator
from sam2med.engine.overlap import OVERLAP_POLICIES
from sam2med.errors import InputError, PromptError
from sam2med.geometry import Axis, changed_box, sub_grid, to_slices
from sam2med.gestures import box_ranges, gesture_slice, gestures_to_prompts, relabel_gestures
from sam2med.io import Volume, load_volume
from sam2med.monailabel.shared_propagator import SharedEngine
from sam2med.provenance import model_version
from sam2med.monailabel.progress import PROGRESS
from sam2med.monailabel.params import (
    DEFAULT_SEED_TAG,
    OutputFormat,
    POINT_REACH,
    PropagateParams,
    ROI_ORDERS,
    RoiBox,
    check_model,
    check_roi,
    click_seeds,
    describe_labels,
    is_auto_range,
    is_range_missing,
    parse_label_slice_ranges,
    parse_points,
    parse_policies,
    parse_propagate,
    parse_seed_tag,
    parse_slice_range,
    point_range,
)
from sam2med.monailabel.results import load_seed, write_result
from sam2med.monailabel.safety import track_result
from sam2med.monailabel.rescoring import PromptStore, record_scores
from sam2med.labelnames import LabelMapping, keyed_by_name, label_name, parse_label_info, relabel
from sam2med.prompts import (SeedMasks, SlicePrompt, SlicePrompts, SliceRange, as_slice_prompts, check_seeds_in_range, locked_voxels, named,
                             resolve_label_ranges, seed_on_image_grid, seeds_from_label)
from sam2med.provenance import describe_file, provenance
from sam2med.monailabel.uncertainty import review_slices
from sam2med.windowing import CT_PRESETS

logger = logging.getLogger(__name__)

AXES = [axis.name.lower() for axis in (Axis.AXIAL, Axis.CORONAL, Axis.SAGITTAL)]
WINDOWS = ["auto", *CT_PRESETS, "percentile"]
MEMORIES = ["recent", "selective"]
NO_SEED = ["skip", "error"]  # the plugin sends the first choice: its Auto-Run on an unlabelled image is a no-op


class _Sam2Task(InferTask):
    """Shared plumbing: the engine, the label names, the result file and JSON."""

    def __init__(self, engine: SharedEngine, datastore: Callable[[], Datastore], labels: Dict[str, int],
                 type: str, description: str, config: Dict[str, Any], corrections: CorrectionStore | None = None):
        super().__init__(type=type, labels=dict(labels), dimension=3, description=description,
                         config={**config, "sam2_model": [engine.model_name]})
        self.engine = engine
        self.datastore = datastore
        self.label_names = dict(labels)
        self.corrections = corrections
        self.prompts: PromptStore | None = None  # set by the app when it keeps per-image state

    def _remember(self, request: Dict[str, Any], image: Volume, seed_slices: Dict[int, list], result: PropagationResult,
                  conditioning: Dict[int, Dict[int, SlicePrompt]] | None = None) -> str | None:
        """Keep the conditioning slices and the result's slice digests of a datastore image for its next correction;
        the kept state's id (None when nothing is kept: no datastore image, no store, or it could not be written)."""
        image_id = request.get("image_id")
        if self.corrections is None or not image_id:
            return None
        state = CorrectionState(str(image_id), image.fingerprint(), result.axis, {k: sorted(v) for k, v in seed_slices.items()},
                                slice_digests(result.label, result.axis, sorted(result.scores)),
                                {} if conditioning is None else prompt_digests(conditioning))
        try:
            return self.corrections.save(state)
        except OSError as err:  # the result is still good; only the next correction loses its history
            logger.warning("cannot keep the correction state of %r: %s", image_id, err)
            return None

    def _record_scores(self, request: Dict[str, Any], scores: Dict[str, list], version: str, axis: Axis) -> None:
        """Keep a datastore image's per-slice scores, with the model version, in its image info (for `uncertain`)."""
        image_id = request.get("image_id")
        if not image_id:
            return
        try:
            record_scores(self.datastore(), str(image_id), scores, version, axis)
        except Exception as err:  # a remote store may not keep image info; the result is still good
            logger.warning("cannot record the SAM2 scores of %r: %s", image_id, err)

    def _record_prompts(self, request: Dict[str, Any], image: Volume, seeds: Any, window: Any,
                        result: PropagationResult) -> None:
        """Keep a datastore image's prompts, so that a newer model can re-score it (rescoring.Rescorer)."""
        image_id = request.get("image_id")
        if self.prompts is None or not image_id or not result.scores:
            return
        if isinstance(seeds, SlicePrompts):  # the store keeps masks or clicks: gestures' masks are kept, clicks not yet
            if any(p.has_clicks for per_slice in seeds.prompts.values() for p in per_slice.values()):
                logger.info("prompts of %r not kept for re-scoring: they hold clicks or boxes next to masks", image_id)
                return
            seeds = SeedMasks(seeds.axis, {label: {s: p.mask for s, p in per_slice.items()} for label, per_slice in seeds.prompts.items()})
        ranges = {label: SliceRange(min(s.slice for s in scores), max(s.slice for s in scores))
                  for label, scores in result.scores.items() if scores}
        try:
            self.prompts.save(str(image_id), image.fingerprint(), seeds, window, ranges)
        except OSError as err:  # the result is still good; only re-scoring with a newer model loses this image
            logger.warning("cannot keep the prompts of %r: %s", image_id, err)

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        try:
            return self._run(request)
        except Exception:
            PROGRESS.finish(request.get("progress_id") or None, "failed")  # a no-op once the entry is done
            raise

    def _run(self, request: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        raise NotImplementedError

    @staticmethod
    def _check_result_tag(request: Dict[str, Any]) -> None:
        """A result tag MONAI Label would refuse after the run is refused before it (nothing run, nothing kept)."""
        if request.get("label_tag") not in (None, ""):
            parse_seed_tag(request["label_tag"], "label_tag")

    def _propagate(self, request: Dict[str, Any], image: Volume, seeds: Any, slice_range: Any, window: Any,
                   to_client: Dict[int, int] | None = None, **options: Any) -> Tuple[PropagationResult, Propagator]:
        """Run the engine; a request with `progress_id` can be followed at /sam2med/progress/{id} meanwhile, its
        finished slices too (in the client's values, `to_client`); `_finish` settles and closes the entry.
        Returns the propagator that ran, so that the response describes that model even if a newer one is published."""
        progress_id = request.get("progress_id") or None
        reporter = PROGRESS.reporter(progress_id)
        if reporter is not None and to_client:
            reporter.values = dict(to_client)
        propagator = self.engine.get()
        result = propagator.propagate(image, seeds, slice_range, window=window, progress=reporter, **options)  # a failure: __call__
        self._record_prompts(request, image, seeds, window, result)
        return result, propagator

    @staticmethod
    def _image_file(request: Dict[str, Any]) -> Dict[str, Any]:
        """The image's file name (a datastore image) or "upload", and its sha256; never a server path."""
        return describe_file(request["image"], None if request.get("image_id") else "upload")

    def _finish(self, request: Dict[str, Any], result: PropagationResult, propagator: Propagator, image: Volume,
                output: OutputFormat, start: float, load_seconds: float, extra: Dict[str, Any],
                inputs: Dict[str, Any], mapping: LabelMapping | None = None,
                names: Dict[int, str] | None = None, reference: np.ndarray | None = None,
                crop: bool = False) -> Tuple[str, Dict[str, Any]]:
        """Write the result and its JSON; with a client `mapping` both carry the client's values and names.
        `names` ({server value: name}) are the request's names over the app's (default: the app's).
        With `reference` (the submitted label on the image grid, server values), the report has `changed_box`;
        with `crop` the file holds that box only (its own origin), one voxel when nothing changed."""
        write_start = time.perf_counter()
        label = result.label if mapping is None else relabel(result.label, mapping.to_client(), "the result")
        progress_id = request.get("progress_id") or None
        PROGRESS.settle(progress_id, to_slices(label, result.axis))  # the live slices end as this answer
        PROGRESS.finish(progress_id)
        grid = image.grid
        box = None if reference is None else changed_box(result.label, reference)
        if crop:
            low, high = box if box is not None else ((0, 0, 0), (0, 0, 0))
            label = np.ascontiguousarray(label[low[0] : high[0] + 1, low[1] : high[1] + 1, low[2] : high[2] + 1])
            grid = sub_grid(grid, low, label.shape)
        path = write_result(label, grid, output)
        track_result(path)
        write_seconds = time.perf_counter() - write_start
        report = result.to_json()
        report.update(extra)
        if reference is not None:
            report["changed_box"] = None if box is None else [list(box[0]), list(box[1])]
            report["cropped"] = bool(crop)
        names = {int(v): n for n, v in self.label_names.items()} if names is None else dict(names)
        if mapping is not None:
            names.update({v: n for n, v in mapping.server.items()})
        for value, info in report["labels"].items():
            info["name"] = label_name(int(value), names)
        report["kept_slices"] = keyed_by_name(report["kept_slices"], names)
        report["locked_labels"] = keyed_by_name(report["locked_labels"], names)
        report["provenance"] = provenance(propagator, inputs, result.window)
        scores = {value: info["slices"] for value, info in report["labels"].items()}
        report["model_version"] = model_version(self.engine.model_name, propagator.checkpoint)
        report["review_slices"] = review_slices(scores)
        self._record_scores(request, scores, report["model_version"], result.axis)  # by the server's values
        if mapping is None:
            report["label_names"] = describe_labels(sorted(result.scores), {n: v for v, n in names.items()})
        else:
            in_client_values(report, mapping.to_client())
            report["label_names"] = plugin_label_names(mapping, set(result.scores))
            report["label_info"] = mapping.to_json()
        report["latencies"] = {
            "pre": round(load_seconds, 3), "infer": round(result.seconds, 3), "invert": 0, "post": 0,
            "write": round(write_seconds, 3), "total": round(time.perf_counter() - start, 3), "transform": None,
            "encode": round(result.encode_seconds, 3), "track": round(result.track_seconds, 3),
        }
        return path, report


NOT_IN_RESULT = " (not in this result)"


def plugin_label_names(mapping: LabelMapping, in_result: set[int]) -> Dict[str, int]:
    """The client's {name: value} for every name, as 3D Slicer imports value k into the k-th name by value.

    A label the result does not hold is listed under its name + NOT_IN_RESULT: its place in the order is
    kept, and the plugin, having no segment of that name, leaves the user's segment as it is."""
    return {name if mapping.server[name] in in_result else f"{name}{NOT_IN_RESULT}": value
            for name, value in mapping.client.items()}


def in_client_values(report: Dict[str, Any], to_client: Dict[int, int]) -> None:
    """Re-key the report's per-label entries from the server's values to the client's (those of the result file)."""
    def rekey(entries: Dict[str, Any]) -> Dict[str, Any]:
        return {str(to_client.get(int(k), int(k))): v for k, v in entries.items()}

    report["labels"] = rekey(report["labels"])
    if isinstance(report.get("seed_slices_per_label"), dict):
        report["seed_slices_per_label"] = rekey(report["seed_slices_per_label"])
    if isinstance(report.get("correction"), dict):
        report["correction"] = {k: rekey(v) for k, v in report["correction"].items()}
    for item in report.get("review_slices", []):
        item["label"] = to_client.get(item["label"], item["label"])
    if isinstance(report.get("refine"), dict):
        report["refine"] = {"bands": rekey(report["refine"]["bands"]),
                            "unchanged_labels": [to_client.get(v, v) for v in report["refine"]["unchanged_labels"]]}


class Sam2PropagateTask(_Sam2Task):
    """Propagate a seed label (uploaded, else the image's saved label) through a slice range."""

    def __init__(self, engine: SharedEngine, datastore: Callable[[], Datastore], labels: Dict[str, int],
                 corrections: CorrectionStore | None = None):
        super().__init__(
            engine, datastore, labels, type=InferType.SEGMENTATION,
            description="SAM2.1 propagation of a seed mask (uploaded label, else the saved one) through a slice range",
            config={"slice_range": "", "axis": AXES, "window": WINDOWS, "labels": "", "seed_tag": DEFAULT_SEED_TAG,
                    "memory": MEMORIES, "no_seed": NO_SEED, "overlap": list(OVERLAP_POLICIES), "locked_labels": "",
                    "refine": False},
            corrections=corrections,
        )

    def _seed(self, request: Dict[str, Any], image: Volume, tag: str, stored: bool = True) -> Tuple[str, Volume, Dict[str, Any], Any] | None:
        """(source, seed, file description, the label_info saved with it), or None when there is no seed: the
        uploaded label, else (with `stored`) the datastore's label under `tag`."""
        uploaded = request.get("label")
        if uploaded:  # the app's guard (service.py) admits only a file this request uploaded
            return "upload", load_seed(uploaded, image), describe_file(uploaded, "upload"), None
        image_id = request.get("image_id")
        if not stored:
            return None
        uri = self.datastore().get_label_uri(image_id, tag) if image_id else ""
        if not uri or not os.path.isfile(uri):
            return None
        saved = self.datastore().get_label_info(image_id, tag) or {}
        return f"datastore:{tag}", load_seed(uri, image), describe_file(uri), saved.get("label_info")

    def _no_seed(self, request: Dict[str, Any], image: Volume, params: PropagateParams) -> Tuple[str, Dict[str, Any]]:
        """A 422, or with `no_seed` skip an empty label: 3D Slicer cannot take an answer without a file, and
        imports this one into no segment (its only name is background), so nothing the user has is touched."""
        where = f"image {request.get('image_id')!r}" if request.get("image_id") else "an uploaded image"
        message = f"no seed: upload a label with the request, or save a label for {where} under tag {params.seed_tag!r} first"
        if params.no_seed != "skip":
            raise PromptError(message)
        logger.info("%s (no_seed skip: answered with an empty label)", message)
        path = write_result(np.zeros(image.grid.shape, dtype=np.uint8), image.grid, params.output)
        track_result(path)
        return path, {"message": f"{message}; nothing was run", "seed": None, "label_names": {"background": 0}, "state_id": None}

    def _correction_state(self, request: Dict[str, Any], image: Volume, axis: Axis, seed_source: str) -> CorrectionState | None:
        """The correction-loop state a submitted label is read against: the request's `parent_state` (any seed
        source: the client says the label derives from that state; unknown -> 400), else, for the label saved
        under the default tag (3D Slicer's Submit Label), the image's newest state; else None (every labelled
        slice is a seed)."""
        parent = parse_state_id(request.get("parent_state"))
        image_id = request.get("image_id")
        if parent is not None:
            if self.corrections is None or not image_id:
                raise InputError("parent_state needs a datastore image (image id) on a server that keeps correction states")
            return self.corrections.load_id(str(image_id), parent, image.fingerprint(), axis)
        if self.corrections is not None and image_id and seed_source == f"datastore:{DEFAULT_SEED_TAG}":
            return self.corrections.load(str(image_id), image.fingerprint(), axis)
        return None

    def _run(self, request: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        start = time.perf_counter()
        params = parse_propagate(request, self.label_names)
        self._check_result_tag(request)
        check_model(params.sam2_model, self.engine.model_name)
        auto = is_auto_range(params.slice_range)
        policies = parse_policies(request, auto)
        client_labels = parse_label_info(request.get("label_info"))
        image = load_volume(request["image"])
        # prompts are a seed of their own: a stored label joins them only when the request names its seed_tag
        stored = not params.prompts or bool(request.get("seed_tag"))
        found = self._seed(request, image, params.seed_tag, stored)
        if found is None and not params.prompts:
            return self._no_seed(request, image, params)
        seed_source, seed, seed_file, saved_labels = found if found is not None else ("prompts", None, None, None)
        if client_labels is None:  # the plugin's Run sends none: the names saved with the label (Submit Label) apply
            client_labels = parse_label_info(saved_labels)
        mapping = LabelMapping.match(client_labels, self.label_names) if client_labels else None
        seed_array = None if seed is None else seed.array if mapping is None else relabel(seed.array, mapping.to_server(), "the seed")
        names = {**params.names, **({v: n for n, v in mapping.server.items()} if mapping else {})}
        num_slices = image.grid.num_slices(params.axis)
        whole = SliceRange(0, num_slices - 1)
        default_range, label_ranges = (whole, {}) if auto else parse_label_slice_ranges(
            params.slice_range, num_slices, {**self.label_names, **{n: v for v, n in names.items()}})
        state = self._correction_state(request, image, params.axis, seed_source)
        extra: Dict[str, Any] = {"seed": None if seed is None else seed_source, "correction": None}
        seeds = self._seed_masks(seed_array, seed, image, params, names)
        correction = None
        if state is not None and seeds.masks:  # the submitted label is the last result, corrected: its unchanged slices are propagated again
            seeds, correction = select_corrected_seeds(seeds, state)
            extra["correction"] = correction.to_json()
        prompts: SeedMasks | SlicePrompts = seeds
        gestures = params.prompts if mapping is None else relabel_gestures(params.prompts, mapping.to_server())
        if gestures:
            locked_prompted = sorted({g.label for g in gestures} & set(params.locked))
            if locked_prompted:
                raise PromptError(f"label(s) {named(locked_prompted, names)} are locked: a locked label is kept, not prompted")
            outside = sorted({g.label for g in gestures} - set(params.labels)) if params.labels is not None else []
            if outside:
                raise PromptError(f"prompts for label(s) {named(outside, names)}, which are not in labels {named(params.labels, names)}")
            prompts = gestures_to_prompts(gestures, params.axis, image.grid.shape, as_slice_prompts(seeds), names)
            extra["prompts"] = len(gestures)
        label_ranges = self._with_box_ranges(label_ranges, gestures, num_slices, auto, names)
        kept_as_submitted: tuple[int, ...] = ()
        plan = None
        if params.refine and state is not None and not auto:
            own = {label: label_ranges.get(label, default_range) for label in prompts.labels}
            plan = self._refine_plan(state, correction, gestures, prompts, own, image.grid.shape, extra)
        remembered = as_slice_prompts(prompts).prompts  # every seed stays a seed for the next correction, refined or not
        if plan is not None:  # only the bands are propagated; a label with no change is kept as submitted
            prompts = restrict_to_bands(prompts, plan.bands)
            label_ranges = {**label_ranges, **plan.bands}
            kept_as_submitted = plan.unchanged
            extra["refine"] = plan.to_json()
        slice_range, own_ranges = resolve_label_ranges(label_ranges, default_range, prompts.labels, names)
        check_seeds_in_range(prompts, default_range, label_ranges, names)
        extra["seed_slices"] = prompts.slices
        conditioning = as_slice_prompts(prompts).prompts
        extra["seed_slices_per_label"] = {str(k): sorted(v) for k, v in conditioning.items()}
        load_seconds = time.perf_counter() - start
        locked = None if seed_array is None else locked_voxels(seed_array, seed.grid, image.grid, params.locked + kept_as_submitted)
        result, propagator = self._propagate(request, image, prompts, slice_range, params.window,
                                             None if mapping is None else mapping.to_client(), label_ranges=own_ranges,
                                             overlap=params.overlap, locked=locked, **policies)
        reference = (np.zeros(image.grid.shape, dtype=result.label.dtype) if seed_array is None
                     else seed_on_image_grid(seed_array, seed.grid, image.grid))
        if plan is not None:
            keep_outside_bands(result.label, reference, plan.bands, params.axis)
        extra["state_id"] = self._remember(request, image, {k: sorted(v) for k, v in remembered.items()}, result, remembered)
        inputs = {"image": self._image_file(request), "seed": seed_file}
        return self._finish(request, result, propagator, image, params.output, start, load_seconds, extra, inputs, mapping, names,
                            reference=reference, crop=params.crop_to_change)

    @staticmethod
    def _refine_plan(state: CorrectionState, correction: Correction | None, gestures: Any, prompts: SeedMasks | SlicePrompts,
                     ranges: Dict[int, SliceRange], shape: Any, extra: Dict[str, Any]) -> RefinePlan | None:
        """The bands a refining run propagates: the changes are the submitted label's corrected slices plus the
        prompts' slices, or, with prompts sent again and no label, the prompts that differ from the state's."""
        prompted: Dict[int, set] = {}
        if correction is None and gestures:
            correction = prompt_correction(state, as_slice_prompts(prompts).prompts)
            if correction is not None:
                extra["correction"] = correction.to_json()
        else:
            for gesture in gestures:
                prompted.setdefault(gesture.label, set()).add(gesture_slice(gesture, state.axis, shape)[0])
        return None if correction is None else refine_bands(state, correction, prompted, ranges)

    @staticmethod
    def _with_box_ranges(label_ranges: Dict[int, SliceRange], gestures: Any, num_slices: int, auto: bool,
                         names: Dict[int, str]) -> Dict[int, SliceRange]:
        """The labels' own ranges with those of boxes given with `slices` (the box-and-z-range gesture)."""
        boxed = box_ranges(gestures, num_slices, names) if gestures else {}
        if not boxed:
            return label_ranges
        if auto:
            raise PromptError("a box with slices gives its label's range: not with slice_range auto")
        clash = sorted(label for label, found in boxed.items() if label_ranges.get(label, found) != found)
        if clash:
            raise PromptError(f"label(s) {named(clash, names)} have a range in slice_range and another in a box's slices: give one")
        return {**label_ranges, **boxed}

    @staticmethod
    def _seed_masks(seed_array: np.ndarray | None, seed: Volume | None, image: Volume, params: PropagateParams,
                    names: Dict[int, str]) -> SeedMasks:
        """The seed's masks; with `prompts`, a seed holding no label to propagate (e.g. the page's blank labelmap)
        is no error: the prompts condition the run."""
        whole = SliceRange(0, image.grid.num_slices(params.axis) - 1)
        if seed_array is None or seed is None:
            return SeedMasks(params.axis)
        if params.prompts:
            present = {int(v) for v in np.unique(seed_on_image_grid(seed_array, seed.grid, image.grid)) if v != 0}
            wanted = [v for v in (params.labels if params.labels is not None else sorted(present)) if v in present and v not in params.locked]
            if not wanted:
                return SeedMasks(params.axis)
            return seeds_from_label(seed_array, seed.grid, image.grid, params.axis, whole, wanted, params.locked, names)
        return seeds_from_label(seed_array, seed.grid, image.grid, params.axis, whole, params.labels, params.locked, names)


class Sam2PointsTask(_Sam2Task):
    """Foreground/background clicks and an roi box, as OHIF's point panel sends them, propagated through a range."""

    def __init__(self, engine: SharedEngine, datastore: Callable[[], Datastore], labels: Dict[str, int],
                 corrections: CorrectionStore | None = None):
        super().__init__(
            engine, datastore, labels, type=InferType.DEEPGROW,
            description="SAM2.1 from foreground/background clicks and an roi box, propagated through a slice range",
            config={"slice_range": "", "axis": AXES, "window": WINDOWS, "label_value": 1, "memory": MEMORIES,
                    "roi_order": list(ROI_ORDERS)},
            corrections=corrections,
        )

    def _run(self, request: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        start = time.perf_counter()
        params = parse_points(request, self.label_names)
        self._check_result_tag(request)
        check_model(params.sam2_model, self.engine.model_name)
        auto = is_auto_range(params.slice_range)
        policies = parse_policies(request, auto)
        image = load_volume(request["image"])
        seeds = click_seeds(params, image.grid)
        num_slices = image.grid.num_slices(params.axis)
        extra: Dict[str, Any] = {"prompt_slices": seeds.slices}
        roi = check_roi(params, image.grid.shape)
        if roi is not None:
            extra["roi_order"] = roi.order
        if auto:
            slice_range = parse_slice_range(None, num_slices)
        elif is_range_missing(params.slice_range):  # a click with no range: its neighbourhood, not the whole volume
            reach = 0 if roi is not None else POINT_REACH  # the result stays inside the roi: its slices are the range
            slice_range = point_range(seeds, num_slices, reach)
            extra["message"] = (f"no slice_range: propagated {reach} slices either side of the prompt slices "
                                f"({slice_range.start}-{slice_range.end}); set slice_range (\"all\": every slice) for more")
        else:
            slice_range = parse_slice_range(params.slice_range, num_slices)
        load_seconds = time.perf_counter() - start
        result, propagator = self._propagate(request, image, seeds, slice_range, params.window, **policies)
        if roi is not None:
            extra["roi_cleared_voxels"] = keep_inside(result, roi)
        extra["state_id"] = self._remember(request, image, {label: [p.slice_index for p in prompts]
                                                            for label, prompts in seeds.prompts.items()}, result)
        return self._finish(request, result, propagator, image, params.output, start, load_seconds,
                            extra, {"image": self._image_file(request)}, params.labels)


def keep_inside(result: PropagationResult, roi: RoiBox) -> int:
    """Clear the result outside the roi box (it bounds the object), recount the slices' areas; the voxels cleared."""
    inside = np.zeros(result.label.shape, dtype=bool)
    (x0, x1), (y0, y1), (z0, z1) = roi.spans
    inside[x0 : x1 + 1, y0 : y1 + 1, z0 : z1 + 1] = True
    outside = (result.label != 0) & ~inside
    cleared = int(outside.sum())
    if cleared:
        result.label[outside] = 0
        slices = to_slices(result.label, result.axis)
        for value, scores in result.scores.items():
            for score in scores:
                score.area = int((slices[score.slice] == value).sum())
    return cleared


TASKS: Dict[str, Callable[..., InferTask]] = {  # (engine, datastore, labels, corrections=None)
    "sam2_propagate": Sam2PropagateTask,
    "sam2_points": Sam2PointsTask,
}
