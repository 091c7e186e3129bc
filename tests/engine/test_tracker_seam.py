"""sam2's private API (its `_`-methods and inference-state fields) is used in engine/tracker.py only, and the
sam2 these internals were written against is the one installed."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "lib" / "sam2med"
SAM2_PRIVATE = re.compile(r"\._(run_single_frame_inference|get_orig_video_res_output|forward_sam_heads|prepare_memory_conditioned_features"
                          r"|get_image_feature|prepare_backbone_features)\b|output_dict_per_obj|obj_id_to_idx|frames_tracked_per_obj"
                          r"|non_cond_frame_outputs|cond_frame_outputs")


def test_sam2_is_the_version_the_tracker_seam_was_written_against():
    version = importlib.metadata.version("sam2")
    assert version == "1.1.0", (
        f"sam2 {version} is installed; engine/tracker.py overrides and calls sam2 1.1.0's private SAM2VideoPredictor "
        "methods (_run_single_frame_inference, _get_orig_video_res_output, _forward_sam_heads, "
        "_prepare_memory_conditioned_features, _get_image_feature) and reads its inference-state fields: re-check their "
        "signatures and outputs against the new sam2, run tests/engine, then update this pin")


def test_only_the_tracker_touches_sam2_internals():
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if p.name != "tracker.py" and SAM2_PRIVATE.search(p.read_text()))
    assert users == []
