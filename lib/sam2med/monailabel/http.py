"""Errors to HTTP answers: user mistakes are 4xx with their one-line message, only real faults are 500."""

from __future__ import annotations

from fastapi import HTTPException
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

from sam2med.errors import CheckpointError, DeviceError, InputError, PromptError, Sam2MedError
from sam2med.monailabel.safety import (AccessError, ConflictError, NotFoundError, StorageError, TooLargeError, scrub_paths,
                                       storage_error)

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


def to_http(err: Exception) -> HTTPException | None:
    """The HTTP answer for a user-facing error, None for anything else (a server fault, left to be a 500)."""
    if isinstance(err, HTTPException):
        return err
    storage = storage_error(err)
    if storage is not None:
        return HTTPException(status_code=507, detail=str(storage))
    if isinstance(err, Sam2MedError):
        return HTTPException(status_code=status_of(err), detail=scrub_paths(str(err)))
    if isinstance(err, MONAILabelException) and err.error == MONAILabelError.INVALID_INPUT:
        return HTTPException(status_code=404, detail=err.msg)
    return None
