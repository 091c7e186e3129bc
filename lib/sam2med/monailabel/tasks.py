"""MONAI Label infer tasks: `sam2_propagate` (seed mask + slice range) and `sam2_points` (clicks / box)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, Tuple

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from sam2med.corrections import CorrectionState, CorrectionStore, select_corrected_seeds, slice_digests
from sam2med.engine import PropagationResult, Propagator
from sam2med.errors import PromptError
from sam2med.geometry import Axis
from sam2med.io import Volume, load_volume
from sam2med.monailabel.engine import SharedEngine, model_version
from sam2med.monailabel.progress import PROGRESS
from sam2med.monailabel.params import (
    DEFAULT_SEED_TAG,
    OutputFormat,
    check_model,
    click_seeds,
    describe_labels,
    is_auto_range,
    parse_points,
    parse_policies,
    parse_propagate,
    parse_seed_tag,
    parse_slice_range,
)
from sam2med.monailabel.results import load_seed, write_result
from sam2med.monailabel.safety import track_result
from sam2med.monailabel.rescoring import PromptStore, record_scores
from sam2med.labelnames import label_name
from sam2med.prompts import (SliceRange, check_seeds_in_range, is_label_range_spec, parse_label_ranges, range_for_labels,
                             seeds_from_label)
from sam2med.provenance import describe_file, provenance
from sam2med.uncertainty import review_slices
from sam2med.windowing import CT_PRESETS

logger = logging.getLogger(__name__)

AXES = [axis.name.lower() for axis in (Axis.AXIAL, Axis.CORONAL, Axis.SAGITTAL)]
WINDOWS = ["auto", *CT_PRESETS, "percentile"]
MEMORIES = ["recent", "selective"]


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

    def _remember(self, request: Dict[str, Any], image: Volume, seed_slices: Dict[int, list], result: PropagationResult) -> None:
        """Keep the conditioning slices and the result's slice digests of a datastore image for its next correction."""
        image_id = request.get("image_id")
        if self.corrections is None or not image_id:
            return
        state = CorrectionState(str(image_id), image.fingerprint(), result.axis, {k: sorted(v) for k, v in seed_slices.items()},
                                slice_digests(result.label, result.axis, sorted(result.scores)))
        try:
            self.corrections.save(state)
        except OSError as err:  # the result is still good; only the next correction loses its history
            logger.warning("cannot keep the correction state of %r: %s", image_id, err)

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
        ranges = {label: SliceRange(min(s.slice for s in scores), max(s.slice for s in scores))
                  for label, scores in result.scores.items() if scores}
        try:
            self.prompts.save(str(image_id), image.fingerprint(), seeds, window, ranges)
        except OSError as err:  # the result is still good; only re-scoring with a newer model loses this image
            logger.warning("cannot keep the prompts of %r: %s", image_id, err)

    def is_valid(self) -> bool:
        return True

    @staticmethod
    def _check_result_tag(request: Dict[str, Any]) -> None:
        """A result tag MONAI Label would refuse after the run is refused before it (nothing run, nothing kept)."""
        if request.get("label_tag") not in (None, ""):
            parse_seed_tag(request["label_tag"], "label_tag")

    def _propagate(self, request: Dict[str, Any], image: Volume, seeds: Any, slice_range: Any, window: Any,
                   **options: Any) -> Tuple[PropagationResult, Propagator]:
        """Run the engine; a request with `progress_id` can be followed at /sam2med/progress/{id} meanwhile.
        Returns the propagator that ran, so that the response describes that model even if a newer one is published."""
        progress_id = request.get("progress_id") or None
        reporter = PROGRESS.reporter(progress_id)
        propagator = self.engine.get()
        try:
            result = propagator.propagate(image, seeds, slice_range, window=window, progress=reporter, **options)
        except Exception:
            PROGRESS.finish(progress_id, "failed")
            raise
        PROGRESS.finish(progress_id)
        self._record_prompts(request, image, seeds, window, result)
        return result, propagator

    @staticmethod
    def _image_file(request: Dict[str, Any]) -> Dict[str, Any]:
        """The image's file name (a datastore image) or "upload", and its sha256; never a server path."""
        return describe_file(request["image"], None if request.get("image_id") else "upload")

    def _finish(self, request: Dict[str, Any], result: PropagationResult, propagator: Propagator, image: Volume,
                output: OutputFormat, start: float, load_seconds: float, extra: Dict[str, Any],
                inputs: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        write_start = time.perf_counter()
        path = write_result(result.label, image.grid, output)
        track_result(path)
        write_seconds = time.perf_counter() - write_start
        report = result.to_json()
        report.update(extra)
        report["label_names"] = describe_labels(sorted(result.scores), self.label_names)
        names = {v: n for n, v in report["label_names"].items()}
        for label, info in report["labels"].items():
            info["name"] = names[int(label)]
        report["provenance"] = provenance(propagator, inputs, result.window)
        scores = {label: info["slices"] for label, info in report["labels"].items()}
        report["model_version"] = model_version(self.engine.model_name, propagator.checkpoint)
        report["review_slices"] = review_slices(scores)
        self._record_scores(request, scores, report["model_version"], result.axis)
        report["latencies"] = {
            "pre": round(load_seconds, 3), "infer": round(result.seconds, 3), "invert": 0, "post": 0,
            "write": round(write_seconds, 3), "total": round(time.perf_counter() - start, 3), "transform": None,
            "encode": round(result.encode_seconds, 3), "track": round(result.track_seconds, 3),
        }
        return path, report


class Sam2PropagateTask(_Sam2Task):
    """Propagate a seed label (uploaded, else the image's saved label) through a slice range."""

    def __init__(self, engine: SharedEngine, datastore: Callable[[], Datastore], labels: Dict[str, int],
                 corrections: CorrectionStore | None = None):
        super().__init__(
            engine, datastore, labels, type=InferType.SEGMENTATION,
            description="SAM2.1 propagation of a seed mask (uploaded label, else the saved one) through a slice range",
            config={"slice_range": "", "axis": AXES, "window": WINDOWS, "labels": "", "seed_tag": DEFAULT_SEED_TAG,
                    "memory": MEMORIES},
            corrections=corrections,
        )

    def _seed(self, request: Dict[str, Any], image: Volume, tag: str) -> Tuple[str, Volume, Dict[str, Any]]:
        uploaded = request.get("label")
        if uploaded:  # the app's guard (service.py) admits only a file this request uploaded
            return "upload", load_seed(uploaded, image), describe_file(uploaded, "upload")
        image_id = request.get("image_id")
        uri = self.datastore().get_label_uri(image_id, tag) if image_id else ""
        if not uri or not os.path.isfile(uri):
            where = f"image {image_id!r}" if image_id else "an uploaded image"
            raise PromptError(f"no seed: upload a label with the request, or save a label for {where} under tag {tag!r} first")
        return f"datastore:{tag}", load_seed(uri, image), describe_file(uri)

    def __call__(self, request: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        start = time.perf_counter()
        params = parse_propagate(request, self.label_names)
        self._check_result_tag(request)
        check_model(params.sam2_model, self.engine.model_name)
        auto = is_auto_range(params.slice_range)
        policies = parse_policies(request, auto)
        image = load_volume(request["image"])
        seed_source, seed, seed_file = self._seed(request, image, params.seed_tag)
        num_slices = image.grid.num_slices(params.axis)
        whole = SliceRange(0, num_slices - 1)
        if auto:
            default_range, label_ranges = whole, {}
        elif is_label_range_spec(params.slice_range):  # {"5": [10, 40], "liver": "12-30"} or "5:10-40;1:12-30"
            default_range, label_ranges = whole, parse_label_ranges(params.slice_range, num_slices, self.label_names)
        else:
            default_range, label_ranges = parse_slice_range(params.slice_range, num_slices), {}
        state = None
        if self.corrections is not None and request.get("image_id") and seed_source == f"datastore:{DEFAULT_SEED_TAG}":
            state = self.corrections.load(str(request["image_id"]), image.fingerprint(), params.axis)
        extra: Dict[str, Any] = {"seed": seed_source, "correction": None}
        seeds = seeds_from_label(seed.array, seed.grid, image.grid, params.axis, whole, params.labels)
        if state is not None:  # the submitted label is the last result, corrected: its unchanged slices are propagated again
            seeds, correction = select_corrected_seeds(seeds, state)
            extra["correction"] = correction.to_json()
        slice_range = range_for_labels(label_ranges, default_range, seeds.labels)
        check_seeds_in_range(seeds, default_range, label_ranges)
        extra["seed_slices"] = seeds.slices
        extra["seed_slices_per_label"] = {str(k): sorted(v) for k, v in seeds.masks.items()}
        load_seconds = time.perf_counter() - start
        result, propagator = self._propagate(request, image, seeds, slice_range, params.window, label_ranges=label_ranges,
                                             **policies)
        self._remember(request, image, seeds.masks, result)
        inputs = {"image": self._image_file(request), "seed": seed_file}
        return self._finish(request, result, propagator, image, params.output, start, load_seconds, extra, inputs)


class Sam2PointsTask(_Sam2Task):
    """Foreground/background clicks and an roi box, as OHIF's point panel sends them, propagated through a range."""

    def __init__(self, engine: SharedEngine, datastore: Callable[[], Datastore], labels: Dict[str, int],
                 corrections: CorrectionStore | None = None):
        super().__init__(
            engine, datastore, labels, type=InferType.DEEPGROW,
            description="SAM2.1 from foreground/background clicks and an roi box, propagated through a slice range",
            config={"slice_range": "", "axis": AXES, "window": WINDOWS, "label_value": 1, "memory": MEMORIES},
            corrections=corrections,
        )

    def __call__(self, request: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        start = time.perf_counter()
        params = parse_points(request, self.label_names)
        self._check_result_tag(request)
        check_model(params.sam2_model, self.engine.model_name)
        auto = is_auto_range(params.slice_range)
        policies = parse_policies(request, auto)
        image = load_volume(request["image"])
        seeds = click_seeds(params, image.grid)
        slice_range = parse_slice_range(None if auto else params.slice_range, image.grid.num_slices(params.axis))
        load_seconds = time.perf_counter() - start
        result, propagator = self._propagate(request, image, seeds, slice_range, params.window, **policies)
        self._remember(request, image, {label: [p.slice_index for p in prompts] for label, prompts in seeds.prompts.items()}, result)
        return self._finish(request, result, propagator, image, params.output, start, load_seconds,
                            {"prompt_slices": seeds.slices}, {"image": self._image_file(request)})


TASKS: Dict[str, Callable[..., InferTask]] = {  # (engine, datastore, labels, corrections=None)
    "sam2_propagate": Sam2PropagateTask,
    "sam2_points": Sam2PointsTask,
}
