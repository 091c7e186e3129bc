"""`SliceTracker`: SAM2's video predictor, fed from precomputed slice features instead of video frames.

This is the one module that touches sam2's private API (the `_`-methods of `SAM2VideoPredictor` and the
fields of its inference state), written against sam2 1.1.0 (tests/engine/test_tracker_seam.py pins it).
The propagator drives tracking through the named methods below (`object_outputs`, `track_frame`,
`prompted`, `keep_tracked`, `forget_tracked`, `mark_tracked`, `frame_logits`) and never calls sam2's `_`-methods itself.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

if TYPE_CHECKING:
    from sam2med.engine.features import SliceFeatures

# The mask decoder's predicted IoU is not kept in sam2's per-frame output; it is captured per thread
# (each request tracks in one thread) between the decoder call and the frame's output.
_decoder_outputs = threading.local()

# Key of an object's output dict holding the frames chosen by the selective memory ({frame: output}).
# Absent: sam2's own choice (the conditioning frames and the most recent frames).
SELECTED_MEMORY = "selected_memory"


class SliceTracker(SAM2VideoPredictor):
    """Tracks objects through the slices of a volume; frame i of the 'video' is slice `frame_to_slice[i]`."""

    def _get_image_feature(self, inference_state, frame_idx, batch_size):
        features: SliceFeatures = inference_state["slice_features"]
        slice_index = inference_state["frame_to_slice"][frame_idx]
        backbone_out = features.backbone_out(slice_index, inference_state["device"])
        expanded = {
            "backbone_fpn": [level.expand(batch_size, -1, -1, -1) for level in backbone_out["backbone_fpn"]],
            "vision_pos_enc": [pos.expand(batch_size, -1, -1, -1) for pos in backbone_out["vision_pos_enc"]],
        }
        # The raw image is not kept (features are); callers of this method do not use it.
        return (None,) + self._prepare_backbone_features(expanded)

    def _forward_sam_heads(self, *args, **kwargs):
        outputs = super()._forward_sam_heads(*args, **kwargs)
        _decoder_outputs.ious = outputs[2]  # (B, M) predicted IoU of each candidate mask
        return outputs

    def _prepare_memory_conditioned_features(self, frame_idx, is_init_cond_frame, current_vision_feats,
                                             current_vision_pos_embeds, feat_sizes, output_dict, num_frames,
                                             track_in_reverse=False):
        """With a selective memory, the frame attends to the conditioning frames and the chosen frames only.

        The chosen frames are handed to sam2 as conditioning frames: they enter attention with no temporal
        position (they were chosen regardless of order), and their object pointers with their distance."""
        selected = output_dict.get(SELECTED_MEMORY)
        if selected is not None and not is_init_cond_frame:
            output_dict = {"cond_frame_outputs": {**selected, **output_dict["cond_frame_outputs"]}, "non_cond_frame_outputs": {}}
        return super()._prepare_memory_conditioned_features(
            frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds, feat_sizes, output_dict,
            num_frames, track_in_reverse,
        )

    def _run_single_frame_inference(self, inference_state, output_dict, frame_idx, batch_size, is_init_cond_frame,
                                    point_inputs, mask_inputs, reverse, run_mem_encoder, prev_sam_mask_logits=None):
        _decoder_outputs.ious = None
        compact_out, pred_masks = super()._run_single_frame_inference(
            inference_state, output_dict, frame_idx, batch_size, is_init_cond_frame,
            point_inputs, mask_inputs, reverse, run_mem_encoder, prev_sam_mask_logits,
        )
        ious = _decoder_outputs.ious
        # A mask prompt is taken as the output as is: its IoU is not a prediction.
        compact_out["iou"] = None if (mask_inputs is not None or ious is None) else float(ious.max(dim=-1).values.mean())
        return compact_out, pred_masks


    # The seam: what the propagator's loop needs from sam2, one frame and one object at a time.

    def object_outputs(self, state: dict, labels: list[int]) -> list[dict]:
        """Each label's sam2 output dict (`cond_frame_outputs`: its prompted frames, `non_cond_frame_outputs`: tracked)."""
        return [state["output_dict_per_obj"][state["obj_id_to_idx"][label]] for label in labels]

    def track_frame(self, state: dict, obj_output: dict, frame: int, reverse: bool) -> tuple[dict, torch.Tensor]:
        """Track one object onto one unprompted frame, conditioned on its memory: (sam2's frame output with "iou",
        low-res mask logits (1, 1, h, w)); the frame's memory features are encoded for the next frames."""
        return self._run_single_frame_inference(
            inference_state=state, output_dict=obj_output, frame_idx=frame, batch_size=1, is_init_cond_frame=False,
            point_inputs=None, mask_inputs=None, reverse=reverse, run_mem_encoder=True,
        )

    @staticmethod
    def prompted(obj_output: dict) -> dict[int, dict]:
        """The object's prompted frames: {frame: sam2's output there (the given mask's logits)}."""
        return obj_output["cond_frame_outputs"]

    @staticmethod
    def keep_tracked(obj_output: dict, frame: int, out: dict) -> None:
        """Keep a tracked frame's output as memory for the next frames."""
        obj_output["non_cond_frame_outputs"][frame] = out

    @staticmethod
    def forget_tracked(obj_output: dict, frame: int) -> None:
        """Drop a tracked frame's output (no later frame attends to it any more)."""
        obj_output["non_cond_frame_outputs"].pop(frame, None)

    @staticmethod
    def mark_tracked(state: dict, obj_idx: int, frame: int, reverse: bool) -> None:
        """Record in sam2's state that the object has been tracked on the frame (as its own loop does)."""
        state["frames_tracked_per_obj"][obj_idx][frame] = {"reverse": reverse}

    def frame_logits(self, state: dict, masks: torch.Tensor) -> torch.Tensor:
        """Low-res mask logits of the objects on one frame (O, 1, h, w) -> logits at the slice's size (O, 1, H, W)."""
        return self._get_orig_video_res_output(state, masks)[1]


def new_tracking_state(
    features: "SliceFeatures",
    frame_to_slice: list[int],
    height: int,
    width: int,
    device: torch.device,
    offload_state_to_cpu: bool = False,
) -> dict:
    """An inference state for `SliceTracker` over the given slices (the fields sam2's `init_state` sets)."""
    return {
        "slice_features": features,
        "frame_to_slice": list(frame_to_slice),
        "images": None,
        "num_frames": len(frame_to_slice),
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": offload_state_to_cpu,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
