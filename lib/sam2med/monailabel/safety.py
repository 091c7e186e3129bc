"""What a request may point at: datastore image ids, the server's own upload files, session images.

MONAI Label's infer path treats any existing server path in `image` as an image and lets request
params override `image` and `label`; these checks keep a request inside the datastore and its uploads.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable

from sam2med.errors import Sam2MedError

logger = logging.getLogger(__name__)

# tempfile.NamedTemporaryFile names, as MONAI Label's endpoints create them for uploads
_UPLOAD_NAME = re.compile(r"^tmp[a-z0-9_]{8}(\.[A-Za-z0-9]{1,8}){0,2}$")
_IMAGE_ID = re.compile(r"^[^/\\\x00]{1,255}$")


class AccessError(Sam2MedError):
    """A request referring to something outside the datastore (HTTP 403)."""


class NotFoundError(Sam2MedError):
    """A request naming an image that the datastore does not hold (HTTP 404)."""


class TooLargeError(Sam2MedError):
    """An upload over the size limit (HTTP 413)."""


def is_upload(path: object) -> bool:
    """True for a file that MONAI Label's endpoints wrote for this server: a temp-named direct child of the temp dir."""
    if not isinstance(path, str) or not path:
        return False
    candidate = Path(path)
    try:
        return (
            _UPLOAD_NAME.match(candidate.name) is not None
            and candidate.parent.resolve() == Path(tempfile.gettempdir()).resolve()
            and candidate.is_file()
            and not candidate.is_symlink()
        )
    except OSError:
        return False


def is_within(path: str, roots: Iterable[str | os.PathLike]) -> bool:
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots if root)


def check_image_id(image_id: str) -> None:
    """A datastore image id: one name, no path separators, no parent references."""
    if not _IMAGE_ID.match(image_id) or image_id in (".", ".."):
        raise AccessError(f"image {image_id!r} is not a datastore image id")


def check_image_reference(image: object, is_datastore_id, extra_roots: Iterable[str | os.PathLike] = ()) -> None:
    """Accept a datastore id (`is_datastore_id(image)` true), an upload file, or a file under `extra_roots` (sessions)."""
    if not isinstance(image, str) or not image:
        raise AccessError("the request names no image (give a datastore image id)")
    if os.path.isabs(image) or os.sep in image or (os.altsep and os.altsep in image):
        if is_upload(image) or (os.path.exists(image) and is_within(image, extra_roots)):
            return
        raise AccessError(f"image {image!r} is not a datastore image id; server paths are not accepted")
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
