"""The train task's publishing decision by the held-out check (the options' checks run through the live server)."""

from __future__ import annotations

from sam2med.monailabel.train_task import HELD_OUT_MARGIN, publishing_refusal, validate_train_params


def test_held_out_check_refuses_a_model_worse_than_the_current_one_by_more_than_the_margin():
    assert HELD_OUT_MARGIN == 0.05
    refusal = publishing_refusal({"val_dice_start": 0.80, "val_dice_end": 0.7499})
    assert refusal and "0.7499 is worse than the current model's 0.8000 by more than 0.05" in refusal
    assert publishing_refusal({"val_dice_start": 0.80, "val_dice_end": 0.7501}) is None
    assert publishing_refusal({"val_dice_start": None, "val_dice_end": None}) is None  # no held-out image


def test_defaults_and_client_keys():
    assert validate_train_params({"client_id": "slicer", "model": "sam2_finetune", "max_epochs": 3}) == {
        "max_epochs": 3, "clip_slices": 4, "seed": 0, "lr": 1e-4, "val_fraction": 0.2, "mode": None}
