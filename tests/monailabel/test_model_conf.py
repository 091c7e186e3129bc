"""`--conf model NAME` / `--conf checkpoint PATH`: the server's model, named with its input size before it loads."""

from __future__ import annotations

import json

import pytest

from sam2med.errors import InputError
from sam2med.monailabel.appconfig import AppConfig
from sam2med.monailabel.shared_propagator import SharedEngine


def _engine(conf: dict, tmp_path) -> SharedEngine:
    return SharedEngine(AppConfig.from_conf(conf, str(tmp_path), {}))


def test_conf_model_names_model_and_input_size_before_loading(tmp_path):
    engine = _engine({"model": "medsam2-ct-lesion"}, tmp_path)
    assert (engine.model_name, engine.model_title, engine.image_size, engine.loaded) == (
        "medsam2-ct-lesion", "MedSAM2 medsam2-ct-lesion", 512, False)
    assert _engine({"model": "medsam2", "image_size": "256"}, tmp_path).image_size == 256
    assert (_engine({}, tmp_path).model_name, _engine({}, tmp_path).image_size) == ("tiny", 1024)
    ft = tmp_path / "ft.pt"
    ft.write_bytes(b"weights")
    (tmp_path / "ft.pt.json").write_text(json.dumps({"base_model": "medsam2-us-heart", "image_size": 384}))
    engine = _engine({"checkpoint": str(ft)}, tmp_path)
    assert (engine.model_name, engine.image_size) == ("medsam2-us-heart", 384)


def test_conf_checkpoint_of_another_model_is_a_one_line_error(tmp_path):
    medsam2 = tmp_path / "MedSAM2_latest.pt"
    medsam2.write_bytes(b"weights")
    with pytest.raises(InputError) as caught:
        AppConfig.from_conf({"model": "tiny", "checkpoint": str(medsam2)}, str(tmp_path), {})
    assert str(caught.value) == ("--conf model / checkpoint: checkpoint MedSAM2_latest.pt is a 'medsam2' model "
                                 "(its file name is that of 'medsam2'), not 'tiny': drop --model or give the matching name")
    with pytest.raises(InputError, match="--conf model 'medsam3': choose one of tiny, small, base_plus, large, medsam2,"):
        AppConfig.from_conf({"model": "medsam3"}, str(tmp_path), {})
