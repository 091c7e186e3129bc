"""Requests' `params`, and errors to HTTP answers in one place: user mistakes are 4xx with their one-line message,
only real faults are 500.

Every route runs its work inside `http_errors()` (or through `call`); `install_error_handlers` answers whatever
still escapes a route as JSON `{"detail": one line}`, so no error status is ever plain text.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Optional, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

from sam2med.errors import CheckpointError, DeviceError, InputError, PromptError, Sam2MedError
from sam2med.monailabel.safety import (AccessError, ConflictError, NotFoundError, StorageError, TooLargeError, scrub_paths,
                                       storage_error)

T = TypeVar("T")
logger = logging.getLogger(__name__)

RESERVED_PARAMS = ("image", "label", "file", "image_id", "session", "model")
SEGMENT_PARAM = "segment"  # a params "label" text (3D Slicer's SmartEdit: the clicked segment's name) is kept here
MAX_PARAMS_CHARS = 1_000_000

STATUS: dict[type, int] = {
    AccessError: 403,
    NotFoundError: 404,
    TooLargeError: 413,
    ConflictError: 409,
    StorageError: 507,
    PromptError: 422,
    InputError: 400,
    CheckpointError: 503,
    DeviceError: 503,
}


def status_of(err: Sam2MedError) -> int:
    for cls in type(err).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def to_http(err: Exception, names: Optional[Mapping[str, str]] = None) -> HTTPException | None:
    """The HTTP answer for a user-facing error, None for anything else (a server fault, left to be a 500).

    With `names` (server path -> what the client calls it), the detail is the error's first line with those paths
    named and every other server path scrubbed (the infer path, which knows the request's files)."""
    if isinstance(err, json.JSONDecodeError):
        return HTTPException(status_code=400, detail=f"params is not valid JSON ({err})")
    if isinstance(err, HTTPException):
        http = err
    elif (storage := storage_error(err)) is not None:
        http = HTTPException(status_code=507, detail=str(storage))
    elif isinstance(err, Sam2MedError):
        http = HTTPException(status_code=status_of(err), detail=scrub_paths(str(err)))
    elif isinstance(err, MONAILabelException) and err.error == MONAILabelError.INVALID_INPUT:
        http = HTTPException(status_code=404, detail=err.msg)
    else:
        return None
    if names is not None:
        raw = str(err) if isinstance(err, Sam2MedError) else str(http.detail or "")  # before any generic scrub
        http.detail = scrub_paths(raw.splitlines()[0] if raw else "", names)
    return http


@contextmanager
def http_errors(names: Optional[Mapping[str, str]] = None, rejected: str = "") -> Iterator[None]:
    """Inside, a user error leaves as its HTTPException (`to_http`, logged as `rejected` when given); a server
    fault propagates unchanged."""
    try:
        yield
    except Exception as err:
        http = to_http(err, names)
        if http is None:
            raise
        if rejected:
            logger.info("%s rejected (%d): %s", rejected, http.status_code, http.detail)
        raise http from None


def call(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` inside `http_errors()`."""
    with http_errors():
        return fn(*args)


def fault_detail(err: BaseException) -> str:
    """The one line a server fault answers: its type and first line, server paths scrubbed."""
    text = scrub_paths(str(err).splitlines()[0] if str(err) else "")[:200]
    return f"internal server error: {type(err).__name__}{': ' + text if text else ''}"


def validation_detail(err: RequestValidationError) -> str:
    """FastAPI's list of malformed request parts as one line: `files: Field required; params: ...`."""
    parts = []
    for error in err.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)[:300] or "malformed request"


def install_error_handlers(app: FastAPI) -> None:
    """What escapes a route: a user error its 4xx, a malformed request a one-line 422, anything else a 500; all JSON."""

    @app.exception_handler(Sam2MedError)
    async def _sam2med_error(request: Request, err: Sam2MedError):
        http = to_http(err)
        assert http is not None
        return JSONResponse({"detail": http.detail}, status_code=http.status_code)

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, err: RequestValidationError):
        return JSONResponse({"detail": validation_detail(err)}, status_code=422)

    @app.exception_handler(Exception)
    async def _fault(request: Request, err: Exception):  # a server fault: JSON like every other answer (logged by uvicorn)
        return JSONResponse({"detail": fault_detail(err)}, status_code=500)


def _no_constants(name: str) -> Any:
    raise HTTPException(status_code=400, detail=f"params holds the non-finite number {name}: give finite numbers")


def parse_request_params(params: Optional[str]) -> dict[str, Any]:
    """The `params` form field: a JSON object of finite values; keys the server sets itself are dropped."""
    if params and len(params) > MAX_PARAMS_CHARS:
        raise HTTPException(status_code=413, detail=f"params is over {MAX_PARAMS_CHARS} characters")
    try:
        parsed = json.loads(params, parse_constant=_no_constants) if params else {}
    except ValueError as err:
        raise HTTPException(status_code=400, detail=f"params is not valid JSON ({err})") from None
    except RecursionError:
        raise HTTPException(status_code=400, detail="params is nested too deeply") from None
    if not isinstance(parsed, dict):
        raise HTTPException(status_code=400, detail="params must be a JSON object")
    if _has_huge_number(parsed):
        raise HTTPException(status_code=400, detail="params holds a number too large to be finite")
    dropped = [key for key in RESERVED_PARAMS if key in parsed]
    segment = parsed.get("label")
    for key in dropped:
        parsed.pop(key)
    if isinstance(segment, str) and segment:  # a name, never read as a file
        parsed[SEGMENT_PARAM] = segment
    if dropped:
        logger.warning("ignored request params %s (set by the server, not the request)", dropped)
    return parsed


def _has_huge_number(value: Any) -> bool:
    """Integers too big for a float (1e400 parses as inf): no request value needs them."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            return True
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > 2**63:
            return True
    return False
