"""One version of a datastore image for a whole infer request, so that a replaced image never mixes versions.

MONAI Label replaces an image (`PUT /datastore/`) by rewriting its file in place and removes it with
`DELETE`, while an infer of it may be running. The request therefore reads the image file once, through
one open file, into a private copy (hashing it on the way); the task reads that copy and the provenance
names its sha256. Before the result is kept or saved, `check_unchanged` compares the datastore file with
the version read: a replaced or removed image makes the request a 409, never a label of the other version.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from typing import Any

from sam2med.monailabel.safety import ConflictError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 22


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class ImageSnapshot:
    """A private copy of datastore image `image_id` (`path`), its sha256 and the identity of the file it came from."""

    image_id: str
    source: str
    path: str
    sha256: str
    identity: tuple[int, int, int, int]

    def changed(self) -> str | None:
        """'removed' or 'replaced' when the datastore file is no longer the version read; None when it is."""
        try:
            current = os.stat(self.source)
        except FileNotFoundError:
            return "removed"
        return None if _identity(current) == self.identity else "replaced"

    def check_unchanged(self) -> None:
        change = self.changed()
        if change:
            raise ConflictError(f"image {self.image_id!r} was {change} while it was being segmented; "
                                "nothing was kept: run the request again")

    def remove(self) -> None:
        shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)


def take_snapshot(image_id: str, source: str, attempts: int = 3) -> ImageSnapshot | None:
    """Copy the regular file `source` privately, in one read; None for a folder (a DICOM series is read as is).
    A file rewritten during the copy is read again; still changing after `attempts` reads: a 409."""
    try:
        if stat.S_ISDIR(os.stat(source).st_mode):
            return None
    except FileNotFoundError:
        raise ConflictError(f"image {image_id!r} was removed before it could be read") from None
    folder = tempfile.mkdtemp(prefix="sam2med_image_")
    path = os.path.join(folder, os.path.basename(source))
    try:
        for _ in range(attempts):
            digest = hashlib.sha256()
            try:
                with open(source, "rb") as image, open(path, "wb") as copy:
                    before = _identity(os.fstat(image.fileno()))
                    if not stat.S_ISREG(os.fstat(image.fileno()).st_mode):
                        raise ConflictError(f"image {image_id!r} is not a regular file on the server")
                    while chunk := image.read(_CHUNK):
                        digest.update(chunk)
                        copy.write(chunk)
                    after = _identity(os.fstat(image.fileno()))
            except FileNotFoundError:
                raise ConflictError(f"image {image_id!r} was removed before it could be read") from None
            if before == after and before[2] == os.path.getsize(path):
                return ImageSnapshot(image_id, source, path, digest.hexdigest(), before)
            logger.info("image %r changed while it was read; reading it again", image_id)
        raise ConflictError(f"image {image_id!r} is being replaced: run the request again when the upload has finished")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


class SnapshotDatastore:
    """The request's datastore, with its image id mapped to the snapshot and labels saved only for that version."""

    def __init__(self, datastore: Any, snapshot: ImageSnapshot):
        self._datastore, self._snapshot = datastore, snapshot

    def get_image_uri(self, image_id: str) -> str:
        if image_id == self._snapshot.image_id:
            return self._snapshot.path
        return self._datastore.get_image_uri(image_id)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict) -> str:
        self._snapshot.check_unchanged()
        return self._datastore.save_label(image_id, label_filename, label_tag, label_info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._datastore, name)
