"""`SliceTracker`: SAM2's video predictor, fed from precomputed slice features instead of video frames."""

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
