"""SAM2Train on real slices at 256 px: sam2's loss is finite and falls on a fixed clip in a few steps (heads
mode moves the heads only), and the fine-tuned checkpoint loads strictly through the engine's checkpoint path."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TEST_IMAGE_SIZE
from sam2med.errors import CheckpointError
from sam2med.geometry import Axis
from sam2med.io import load_label, load_volume
from sam2med.checkpoints import sidecar_path
from sam2med.training.model import build_training_model, save_finetuned
from sam2med.training.sampler import Clip, TrainingVolume
from sam2med.training.step import EncoderFeatures, clip_loss, make_loss

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spleen(shared_data) -> TrainingVolume:
    d = shared_data / "totalsegmentator"
    volume, label = load_volume(d / "example_ct_sm.nii.gz"), load_label(d / "example_seg.nii.gz")
    return TrainingVolume.from_arrays("ct", volume, label.array, Axis.AXIAL, [1])


@pytest.fixture(scope="module")
def heads_model(random_checkpoint):
    return build_training_model("tiny", random_checkpoint, TEST_IMAGE_SIZE, torch.device("cpu"), "heads", seed=0)


def test_heads_steps_lower_the_loss_of_a_fixed_clip(heads_model, spleen):
    model = heads_model
    present = spleen.objects[1]
    clip = Clip(0, 1, tuple(int(s) for s in present[3:6]), "mask")  # three slices inside the spleen, going up
    features, loss_fn = EncoderFeatures(model, [spleen], torch.float32), make_loss()
    encoder_before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    decoder_before = model.sam_mask_decoder.conv_s0.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    model.image_encoder.eval()
    losses = []
    for _ in range(5):  # counted steps, no timing
        loss = clip_loss(model, loss_fn, spleen, clip, features, torch.float32)
        assert torch.isfinite(loss) and loss.requires_grad
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        after = float(clip_loss(model, loss_fn, spleen, clip, features, torch.float32))
    assert after < losses[0] * 0.9, (losses, after)
    assert all(torch.equal(v, model.image_encoder.state_dict()[k]) for k, v in encoder_before.items()), "heads mode froze the encoder"
    assert not torch.equal(decoder_before, model.sam_mask_decoder.conv_s0.weight), "the decoder's projections train"
    assert len(features.levels) == 3  # the encoder ran once per slice of the clip, then served from the cache


def test_checkpoint_round_trip_is_strict(heads_model, random_checkpoint, tmp_path):
    from sam2med.engine import Propagator

    with torch.no_grad():
        heads_model.sam_mask_decoder.iou_prediction_head.layers[0].bias.add_(0.25)  # a recognisable change
    state = heads_model.state_dict()
    out = save_finetuned(state, tmp_path / "ft.pt", {"base_model": "tiny", "image_size": TEST_IMAGE_SIZE, "steps": 5})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ft.pt", "ft.pt.json"]  # no temporary file left
    assert json.loads(sidecar_path(out).read_text()) == {"base_model": "tiny", "image_size": TEST_IMAGE_SIZE, "steps": 5}
    content = torch.load(out, weights_only=True)
    assert list(content) == ["model"] and set(content["model"]) == set(state)
    engine = Propagator(checkpoint=out, device="cpu", image_size=TEST_IMAGE_SIZE)
    loaded = engine.tracker.sam_mask_decoder.iou_prediction_head.layers[0].bias
    assert torch.equal(loaded, state["sam_mask_decoder.iou_prediction_head.layers.0.bias"])
    base = torch.load(random_checkpoint, weights_only=True)["model"]["sam_mask_decoder.iou_prediction_head.layers.0.bias"]
    assert not torch.equal(loaded, base)
    rebuilt = build_training_model("tiny", out, TEST_IMAGE_SIZE, torch.device("cpu"), "full")
    assert all(torch.equal(v, state[k]) for k, v in rebuilt.state_dict().items())
    assert all(p.requires_grad for p in rebuilt.image_encoder.parameters()), "full mode trains the encoder"

    extra = dict(content["model"], **{"stray.weight": torch.zeros(1)})
    torch.save({"model": extra}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        build_training_model("tiny", tmp_path / "extra.pt", TEST_IMAGE_SIZE, torch.device("cpu"), "heads")
    with pytest.raises(CheckpointError, match="does not fit"):
        Propagator(checkpoint=tmp_path / "extra.pt", device="cpu", image_size=TEST_IMAGE_SIZE)


def test_an_inf_or_huge_learning_rate_never_yields_a_servable_checkpoint(spleen, random_checkpoint, shared_data, tmp_path):
    """lr inf: the weights are non-finite after step 1 -> refused, nothing written. lr 1e30: the weights stay finite
    (~1e30) but the smoke inference the server runs before publishing gives non-finite scores."""
    from sam2med.training.finetune import FineTuneConfig, TrainingDiverged, finetune
    from sam2med.training.validation import smoke_inference

    def config(lr, out):
        return FineTuneConfig(model="tiny", checkpoint=random_checkpoint, out=out, steps=1, image_size=TEST_IMAGE_SIZE,
                              lr=lr, device="cpu", labels=[1])

    with pytest.raises(TrainingDiverged, match="non-finite at step 1"):
        finetune(config(float("inf"), tmp_path / "inf.pt"), [spleen], [])
    assert list(tmp_path.iterdir()) == []
    finetune(config(1e30, tmp_path / "huge.pt"), [spleen], [])
    d = shared_data / "totalsegmentator"
    volume, label = load_volume(d / "example_ct_sm.nii.gz"), load_label(d / "example_seg.nii.gz")
    assert smoke_inference(tmp_path / "huge.pt", "tiny", TEST_IMAGE_SIZE, "cpu", volume, label.array, 1) == \
        "smoke inference gave non-finite scores"
    assert smoke_inference(random_checkpoint, "tiny", TEST_IMAGE_SIZE, "cpu", volume, label.array, 1) is None
