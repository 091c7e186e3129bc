"""The one error-to-HTTP mapping (monailabel/http.py) that every route uses; no route module maps errors itself."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import pytest
from fastapi import HTTPException

from sam2med.errors import InputError, PromptError
from sam2med.monailabel.http import call, http_errors, to_http
from sam2med.monailabel.safety import ConflictError

PACKAGE = Path(__file__).resolve().parents[2] / "lib" / "sam2med" / "monailabel"


@pytest.mark.parametrize("err, status, detail", [
    (InputError("bad slice range"), 400, "bad slice range"),
    (PromptError("label 5 is locked"), 422, "label 5 is locked"),
    (ConflictError("image 'ct' changed"), 409, "image 'ct' changed"),
    (OSError(errno.ENOSPC, "No space left on device"), 507, None),
    (HTTPException(status_code=418, detail="teapot"), 418, "teapot"),
])
def test_user_errors_become_their_status(err, status, detail):
    with pytest.raises(HTTPException) as raised:
        with http_errors():
            raise err
    assert raised.value.status_code == status
    assert detail is None or raised.value.detail == detail


def test_bad_params_json_is_400_and_a_fault_stays_a_fault():
    with pytest.raises(HTTPException) as raised:
        call(json.loads, "{nope")
    assert raised.value.status_code == 400 and raised.value.detail.startswith("params is not valid JSON")
    with pytest.raises(ZeroDivisionError):
        call(lambda: 1 / 0)
    assert to_http(RuntimeError("boom")) is None


def test_names_turn_server_paths_into_what_the_client_calls_them():
    http = to_http(InputError("/srv/tmp/x/label.nii.gz: not a label\nsecond line"), {"/srv/tmp/x/label.nii.gz": "the seed"})
    assert http is not None and http.status_code == 400 and http.detail == "the seed: not a label"


def test_no_route_module_maps_errors_itself():
    """Only http.py catches errors to turn them into HTTPExceptions; the others call `http_errors`/`call`."""
    offenders = [p.name for p in PACKAGE.glob("*.py") if p.name != "http.py"
                 and re.search(r"raise (to_http|http)\b|http = to_http|def _http\b|def _checked\(fn", p.read_text())]
    assert offenders == []
