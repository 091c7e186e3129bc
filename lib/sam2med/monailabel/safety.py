"""What a request may point at: datastore image ids, the files this request uploaded, session images.

MONAI Label's infer path treats any existing server path in `image` as an image and lets request
params override `image` and `label`; these checks keep a request inside the datastore and its uploads.
A file counts as an upload only if the route that received it registered it for the current request
(`request_uploads`): a temp-file name proves nothing.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from sam2med.errors import Sam2MedError

logger = logging.getLogger(__name__)

_IMAGE_ID = re.compile(r"^[^/\\\x00]{1,255}$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FORMAT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".bin", ".zip", ".tar.gz", ".dcm")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.<>~-])/(?:[\w.+~-]+/)+[\w.+~-]*")
_PLAIN_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,16}$")
_UPLOADS: ContextVar[frozenset[str]] = ContextVar("sam2med_request_uploads", default=frozenset())
_RESULTS: ContextVar[list[str] | None] = ContextVar("sam2med_request_results", default=None)


class AccessError(Sam2MedError):
    """A request referring to something outside the datastore (HTTP 403)."""


class NotFoundError(Sam2MedError):
    """A request naming an image that the datastore does not hold (HTTP 404)."""


class TooLargeError(Sam2MedError):
    """An upload over the size limit (HTTP 413)."""


class StorageError(Sam2MedError):
    """The server's storage is full or read-only (HTTP 507): the request wrote nothing that stays."""


class ConflictError(Sam2MedError):
    """A request whose image was replaced or removed while it ran (HTTP 409)."""


_STORAGE_ERRNOS = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota", errno.EFBIG: "refuses a file this large",
                   errno.EROFS: "is read-only", errno.EACCES: "is not writable", errno.EPERM: "is not writable"}


def storage_error(err: BaseException) -> StorageError | None:
    """The 507 answer for a failed write to the server's storage (full, quota, read-only); None for other errors."""
    if isinstance(err, OSError) and err.errno in _STORAGE_ERRNOS:
        return StorageError(f"the server's storage {_STORAGE_ERRNOS[err.errno]}: nothing was saved")
    return None


@contextmanager
def registered_uploads(paths: Iterable[str]) -> Iterator[frozenset[str]]:
    """Mark `paths` as the files the current request uploaded, for the code it runs (same thread/context)."""
    uploads = frozenset(str(p) for p in paths)
    token, results_token = _UPLOADS.set(uploads), _RESULTS.set([])
    try:
        yield uploads
    finally:
        _UPLOADS.reset(token)
        _RESULTS.reset(results_token)


def track_result(path: str) -> None:
    """Note a result file of the current request, so that `remove_results` can delete it if the request fails."""
    results = _RESULTS.get()
    if results is not None:
        results.append(path)


def remove_results() -> None:
    """Delete the current request's result files (it failed after writing them)."""
    for path in _RESULTS.get() or []:
        Path(path).unlink(missing_ok=True)


def request_uploads() -> frozenset[str]:
    """The files the current request uploaded (empty outside sam2med's upload routes)."""
    return _UPLOADS.get()


def upload_suffix(filename: str | None) -> str:
    """The format suffix of a client's file name (`CT_2024.01.05.nii.gz` -> `.nii.gz`); '' when it has none."""
    name = (filename or "").lower()
    for suffix in _FORMAT_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    suffix = Path(name).suffix
    return suffix if _PLAIN_SUFFIX.match(suffix) else ""


def is_upload(path: object, uploads: frozenset[str] | None = None) -> bool:
    """True for a file the current request uploaded (`uploads`, default: the request's registered uploads)."""
    if not isinstance(path, str) or not path:
        return False
    uploads = request_uploads() if uploads is None else uploads
    return path in uploads and os.path.isfile(path) and not os.path.islink(path)


def is_within(path: str, roots: Iterable[str | os.PathLike]) -> bool:
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots if root)


def check_image_id(image_id: str) -> None:
    """A datastore image id: one name, no path separators, no parent references."""
    if not _IMAGE_ID.match(image_id) or image_id in (".", ".."):
        if "/" in image_id or "\\" in image_id:  # never echo a path: it may name server files
            raise AccessError("the image is not a datastore image id: server paths are not accepted")
        raise AccessError(f"image {image_id[:80]!r} is not a datastore image id")


def check_session_id(session_id: str, exists) -> None:
    """A session id must name a session of this server (`exists(session_id)`), never a path."""
    if not _SESSION_ID.match(session_id) or not exists(session_id):
        raise NotFoundError(f"session {session_id[:80]!r} does not exist on this server")


def scrub_paths(text: str, names: Mapping[str, str] | None = None) -> str:
    """`text` with each server path in `names` replaced by the name a client knows it by, and any other
    absolute path by `<server path>`: an error detail never shows where the server keeps files."""
    for path, name in sorted((names or {}).items(), key=lambda item: -len(item[0])):
        if path:
            text = text.replace(path, name)
    return _ABSOLUTE_PATH.sub("<server path>", text)


def check_image_reference(image: object, is_datastore_id, extra_roots: Iterable[str | os.PathLike] = ()) -> None:
    """Accept a datastore id (`is_datastore_id(image)` true), an upload file, or a file under `extra_roots` (sessions)."""
    if not isinstance(image, str) or not image:
        raise AccessError("the request names no image (give a datastore image id)")
    if os.path.isabs(image) or os.sep in image or (os.altsep and os.altsep in image):
        if is_upload(image) or (os.path.exists(image) and is_within(image, extra_roots)):
            return
        raise AccessError("the image is not a datastore image id: server paths are not accepted")
    check_image_id(image)
    if not is_datastore_id(image):
        raise NotFoundError(f"image {image!r} is not in the datastore")


def check_upload_size(path: object, limit_bytes: int, what: str) -> None:
    if is_upload(path) and os.path.getsize(str(path)) > limit_bytes:
        raise TooLargeError(f"the uploaded {what} is {os.path.getsize(str(path)) / 1e6:.1f} MB, over the {limit_bytes / 1e6:.0f} MB limit")


def remove_uploads(*paths: object) -> None:
    """Delete upload files (never anything else), ignoring ones already gone."""
    for path in paths:
        if is_upload(path):
            try:
                os.unlink(str(path))
                logger.debug("removed upload %s", path)
            except FileNotFoundError:
                pass
