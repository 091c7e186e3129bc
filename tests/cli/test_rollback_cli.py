"""`main.py rollback` and the publishing pointer it moves: one step back, atomically, files kept only while needed."""

from __future__ import annotations

import json
import os

from sam2med.cli import main
from sam2med.monailabel.publishing import publish, published_checkpoint, read_pointer, remove_leftovers


def _checkpoint(models, name: str) -> str:
    models.mkdir(parents=True, exist_ok=True)
    (models / name).write_bytes(name.encode())  # the pointer logic never reads weights
    (models / f"{name}.json").write_text("{}")
    return name


def test_rollback_goes_one_step_back_and_cleans_what_no_pointer_names(tmp_path, capsys):
    state, models = tmp_path / ".sam2med", tmp_path / ".sam2med" / "models"
    publish(state, _checkpoint(models, "sam2_finetune-1.pt"), "tiny:one", "tiny:base", {"loss": float("nan")})
    assert read_pointer(state)["previous"] == {"checkpoint": None, "version": "tiny:base"}
    assert read_pointer(state)["stats"] == {"loss": None}  # NaN never reaches the JSON
    publish(state, _checkpoint(models, "sam2_finetune-2.pt"), "tiny:two", "tiny:one", {})
    _checkpoint(models, "sam2_finetune-3.pt")  # written by a run that was not published
    (models / ".sam2_finetune-4.pt.ab12cd34.partial.pt").write_bytes(b"half")  # left by a killed writer
    remove_leftovers(state)
    assert sorted(os.listdir(models)) == ["current.json", "sam2_finetune-1.pt", "sam2_finetune-1.pt.json",
                                          "sam2_finetune-2.pt", "sam2_finetune-2.pt.json"]

    assert main(["rollback", "--studies", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"model_version": "tiny:one", "rolled_back_from": "tiny:two",
                                                   "checkpoint": "sam2_finetune-1.pt"}
    assert published_checkpoint(state)[0] == models / "sam2_finetune-1.pt"
    assert not (models / "sam2_finetune-2.pt").exists()
    assert main(["rollback", "--state-dir", str(state)]) == 2
    assert "no previous model to roll back to" in capsys.readouterr().err


def test_rollback_to_the_servers_own_checkpoint_and_refusals(tmp_path, capsys):
    state, models = tmp_path / "state", tmp_path / "state" / "models"
    assert main(["rollback", "--state-dir", str(state)]) == 2 and "no server state folder" in capsys.readouterr().err
    publish(state, _checkpoint(models, "sam2_finetune-1.pt"), "tiny:one", "tiny:base", {})
    assert main(["rollback", "--state-dir", str(state)]) == 0
    capsys.readouterr()
    assert published_checkpoint(state) is None and read_pointer(state)["version"] == "tiny:base"
    assert not (models / "sam2_finetune-1.pt").exists()
    assert main(["rollback", "--studies", str(tmp_path), "--state-dir", str(state)]) == 2
