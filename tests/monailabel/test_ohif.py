"""The OHIF extension's server side: version guard, app-config, progress board, result names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sam2med.errors import InputError
from sam2med.monailabel.dicomweb import result_description
from sam2med.monailabel.ohif import (BUNDLED_OHIF_VERSION, EXTENSION_DIR, EXTENSION_URL, MODE_URL, OHIF_DIR,
                                     app_config_js, bundled_ohif_version, check_bundled_ohif)
from sam2med.monailabel.progress import ProgressBoard
from sam2med.monailabel.safety import ConflictError, NotFoundError


def test_bundled_ohif_is_the_build_the_extension_was_written_for():
    """Fails loudly when MONAI Label ships another OHIF: the extension uses that build's internals."""
    assert bundled_ohif_version() == BUNDLED_OHIF_VERSION
    check_bundled_ohif()


def test_another_ohif_build_is_refused_with_what_to_recheck(tmp_path: Path):
    (tmp_path / "app.bundle.0123.js").write_text('var v = "3.11.0"; function f() {}')
    with pytest.raises(RuntimeError) as err:
        check_bundled_ohif(tmp_path)
    message = str(err.value)
    assert "3.11.0" in message and BUNDLED_OHIF_VERSION in message
    for internal in ("React", "representationData.Labelmap.imageIds", "storeSegmentation", "modeFactory"):
        assert internal in message


def test_app_config_keeps_the_bundled_config_and_adds_the_sam2med_modules():
    served = app_config_js()
    bundled = (OHIF_DIR / "app-config.js").read_text()
    assert served.startswith(bundled)
    assert f"'{EXTENSION_URL}'" in served and f"'{MODE_URL}'" in served
    for url in (EXTENSION_URL, MODE_URL):  # the URLs point at files the app serves
        assert (EXTENSION_DIR / url.rsplit("/", 1)[1]).is_file()


def test_extension_modules_import_only_each_other():
    """Plain ES modules, no build: every import is a relative file of apps/sam2med/ohif."""
    for module in EXTENSION_DIR.glob("*.js"):
        for target in re.findall(r"^import .* from '([^']+)';", module.read_text(), flags=re.M):
            assert target.startswith("./") and (EXTENSION_DIR / target[2:]).is_file(), (module.name, target)


def test_progress_board_reports_stages_and_forgets_the_oldest_finished():
    board = ProgressBoard(max_entries=2)
    first = board.issue()
    report = board.reporter(first)
    assert board.get(first) == {**board.get(first), "stage": "queued", "done": 0, "total": 0}
    report(3, 20, "encode")
    assert {k: board.get(first)[k] for k in ("stage", "done", "total")} == {"stage": "encode", "done": 3, "total": 20}
    running = board.issue()
    board.reporter(running)
    board.finish(first)
    assert board.get(first)["stage"] == "done"
    third = board.issue()
    assert board.get(first) is None and board.get(running)["stage"] == "queued" and board.get(third)["stage"] == "issued"
    for _ in range(300):  # issue 22.10: a flood of ids never evicts a running propagation's entry
        board.issue()
    assert board.get(running)["stage"] == "queued"
    assert board.reporter(None) is None


def test_progress_ids_are_server_issued_and_bound_to_one_request():
    """Issue 22.10: ids were client-chosen (Date.now() + a small random number), readable and reusable by anyone."""
    board = ProgressBoard()
    with pytest.raises(NotFoundError, match="not issued"):
        board.reporter("ohif-1733330000000-123456")
    issued = board.issue()
    assert len(issued) >= 32 and issued != board.issue()
    board.reporter(issued)
    with pytest.raises(ConflictError, match="already used"):
        board.reporter(issued)


@pytest.mark.parametrize("bad", ["short", "has space 123", "../../etc/passwd", "x" * 65, 12345678])
def test_progress_ids_are_checked(bad):
    with pytest.raises(InputError):
        ProgressBoard().reporter(bad)


def test_results_are_named_by_labels_range_and_time():
    info = {"params": {"label_names": {"spleen": 2, "liver": 1}, "slice_range": [8, 12]}}
    name = result_description("original", info, when=0)
    assert re.fullmatch(r"sam2med result liver spleen 8-12 \d\d:\d\d:\d\d", name), name
    long = result_description("original", {"params": {"label_names": {"x" * 100: 1}, "slice_range": [0, 299]}}, when=0)
    assert len(long) <= 64 and long.startswith("sam2med result x") and "0-299" in long
    assert result_description("original", None, when=0).startswith("sam2med result (original) ")
