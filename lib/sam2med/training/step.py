"""One SAM2Train forward on a clip: batch building, prompts, frozen-encoder features, and sam2's loss."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sam2med.engine.features import autocast_context, to_model_input
from sam2med.training.sampler import Clip, TrainingVolume

# sam2's own fine-tuning weights (configs/sam2.1_training/*.yaml).
LOSS_WEIGHTS = {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}


def make_loss():
    """sam2's `MultiStepMultiMasksAndIous` with the settings of its SAM2.1 training configs."""
    from training.loss_fns import MultiStepMultiMasksAndIous

    return MultiStepMultiMasksAndIous(dict(LOSS_WEIGHTS), supervise_all_iou=True, iou_use_l1_loss=True, pred_obj_scores=True,
                                      focal_gamma_obj_score=0.0, focal_alpha_obj_score=-1.0)


def clip_masks(volume: TrainingVolume, clip: Clip, image_size: int) -> torch.Tensor:
    """(T, 1, S, S) bool truth masks of the clip's object, resized (nearest) to the model input."""
    masks = torch.from_numpy(np.stack([volume.labels[s] == clip.label for s in clip.slices]).astype(np.float32))[:, None]
    return F.interpolate(masks, size=(image_size, image_size), mode="nearest") > 0.5


class EncoderFeatures:
    """Frozen image-encoder outputs per (volume, slice), computed once (the 'heads' mode cache, on CPU memory)."""

    def __init__(self, model, volumes: list[TrainingVolume], dtype: torch.dtype):
        self.model, self.volumes, self.dtype = model, volumes, dtype
        self.levels: dict[tuple[int, int], list[torch.Tensor]] = {}
        self.pos_enc: list[torch.Tensor] | None = None

    def encoder_out(self, clip: Clip) -> dict[str, list[torch.Tensor]]:
        """The image encoder's output for the clip's frames, as the encoder would return it for the batch."""
        missing = [s for s in clip.slices if (clip.volume, s) not in self.levels]
        device = next(self.model.parameters()).device
        if missing:
            volume = self.volumes[clip.volume]
            images = to_model_input(volume.slices[missing], self.model.image_size, device, volume.resize)
            with torch.no_grad(), autocast_context(device, self.dtype):
                out = self.model.image_encoder(images)
            for offset, s in enumerate(missing):
                self.levels[(clip.volume, s)] = [level[offset : offset + 1].float().cpu() for level in out["backbone_fpn"]]
            if self.pos_enc is None:
                self.pos_enc = [p[:1].float().cpu() for p in out["vision_pos_enc"]]
        fpn = [torch.cat([self.levels[(clip.volume, s)][i] for s in clip.slices]).to(device) for i in range(len(self.pos_enc))]
        pos = [p.to(device).expand(len(clip.slices), -1, -1, -1) for p in self.pos_enc]
        return {"backbone_fpn": fpn, "vision_pos_enc": pos}


def backbone_out(model, images: torch.Tensor, clip: Clip, features: EncoderFeatures | None) -> dict:
    """`SAM2Base.forward_image`'s output: the encoder run on `images`, or taken from `features` (frozen encoder)."""
    if features is None:
        return model.forward_image(images)
    out = features.encoder_out(clip)
    if model.use_high_res_features_in_sam:  # the mask decoder's projections, as forward_image applies them: they train
        out["backbone_fpn"][0] = model.sam_mask_decoder.conv_s0(out["backbone_fpn"][0])
        out["backbone_fpn"][1] = model.sam_mask_decoder.conv_s1(out["backbone_fpn"][1])
    return out


def clip_batch(volume: TrainingVolume, clip: Clip, image_size: int, device: torch.device):
    """sam2's `BatchedVideoDatapoint` of one clip: T frames, one video, one object."""
    from training.utils.data_utils import BatchedVideoDatapoint, BatchedVideoMetaData

    frames = len(clip.slices)
    images = to_model_input(volume.slices[list(clip.slices)], image_size, device, volume.resize)  # (T, 3, S, S)
    masks = clip_masks(volume, clip, image_size).to(device)  # (T, 1, S, S)
    obj_to_frame = torch.tensor([[[t, 0]] for t in range(frames)], dtype=torch.int, device=device)  # (T, O=1, 2)
    identifier = torch.tensor([[[clip.volume, clip.label, s]] for s in clip.slices], dtype=torch.long, device=device)
    size = torch.tensor([[volume.slices.shape[1:]] for _ in clip.slices], dtype=torch.long, device=device)
    metadata = BatchedVideoMetaData(unique_objects_identifier=identifier, frame_orig_size=size, batch_size=[frames])
    return BatchedVideoDatapoint(img_batch=images[:, None], obj_to_frame_idx=obj_to_frame, masks=masks,
                                 metadata=metadata, dict_key="sam2med", batch_size=[frames])


def set_first_frame_prompt(backbone: dict, clip: Clip, device: torch.device) -> None:
    """Replace sam2's sampled prompt on frame 0 by the clip's: the truth mask, or its box / clicks."""
    if clip.prompt == "mask":
        backbone["point_inputs_per_frame"].pop(0, None)
        backbone["mask_inputs_per_frame"][0] = backbone["gt_masks_per_frame"][0]
        return
    backbone["mask_inputs_per_frame"].pop(0, None)
    backbone["point_inputs_per_frame"][0] = {
        "point_coords": torch.tensor([clip.points_xy], dtype=torch.float32, device=device),  # (1, P, 2)
        "point_labels": torch.tensor([clip.point_labels], dtype=torch.int32, device=device),  # (1, P)
    }


def clip_loss(model, loss_fn, volume: TrainingVolume, clip: Clip, features: EncoderFeatures | None,
              dtype: torch.dtype | None) -> torch.Tensor:
    """sam2's core loss (mask focal + dice + IoU + object score, summed over frames) of tracking one clip."""
    from training.trainer import CORE_LOSS_KEY

    device = next(model.parameters()).device
    batch = clip_batch(volume, clip, model.image_size, device)
    with autocast_context(device, dtype):
        backbone = backbone_out(model, batch.flat_img_batch, clip, features)
        backbone = model.prepare_prompt_inputs(backbone, batch)
        set_first_frame_prompt(backbone, clip, device)
        outputs = model.forward_tracking(backbone, batch)
    keys = ("multistep_pred_multimasks_high_res", "multistep_pred_ious", "multistep_object_score_logits")
    outputs = [{**out, **{k: [t.float() for t in out[k]] for k in keys}} for out in outputs]
    return loss_fn(outputs, batch.masks)[CORE_LOSS_KEY]
