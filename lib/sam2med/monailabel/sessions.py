"""`PUT /session/`: uploads stored as a new session, archives unpacked safely, nothing left when it fails.

MONAI Label's version unpacks with `shutil.unpack_archive` (members may leave the folder, links are made,
no size cap) and leaves its temp folder behind when a write fails. Here uploads go to a private temp
folder, an archive is unpacked by `archives.unpack_archive`, and the session gets a server-chosen id; a
failure removes both the temp folder and the half-made session folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, List

from fastapi import HTTPException, UploadFile
from monailabel.utils.sessions import Sessions

from sam2med.monailabel.archives import ArchiveError, archive_format, unpack_archive
from sam2med.monailabel.safety import TooLargeError, upload_suffix

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def upload_name(filename: str | None, index: int) -> str:
    """A client's file name reduced to a plain name (no folders, never '.' or '..')."""
    name = os.path.basename((filename or "").replace("\\", "/"))
    return name if name not in ("", ".", "..") and "\x00" not in name else f"file{index}{upload_suffix(filename)}"


def save_upload(upload: UploadFile, path: Path, limit_bytes: int) -> Path:
    """Copy an upload to `path`, refusing it once it is over `limit_bytes`."""
    written = 0
    with open(path, "xb") as out:
        while chunk := upload.file.read(_CHUNK):
            written += len(chunk)
            if written > limit_bytes:
                raise TooLargeError(f"the upload is over the {limit_bytes / 1e6:.0f} MB upload limit")
            out.write(chunk)
    return path


def create_session(sessions: Sessions, files: List[UploadFile], uncompress: bool, expiry: int,
                   limit_bytes: int) -> dict[str, Any]:
    """Store `files` (or the one archive's content, `uncompress`) as a new session of `sessions`."""
    if not files:
        raise HTTPException(status_code=422, detail="files: give at least one file")
    if uncompress and (len(files) != 1 or archive_format(files[0].filename or "") is None):
        raise ArchiveError("uncompress needs one .zip or .tar(.gz) archive")
    work = Path(tempfile.mkdtemp(prefix="sam2med_session_"))
    session_id = str(uuid.uuid4())
    session_dir = Path(sessions.store_path) / session_id
    try:
        received = work / "received"
        received.mkdir()
        paths = [save_upload(f, received / upload_name(f.filename, i), limit_bytes) for i, f in enumerate(files)]
        if uncompress:
            data = unpack_archive(paths[0], work / "image", limit_bytes)
        else:
            data = paths[0] if len(paths) == 1 else received
        os.makedirs(sessions.store_path, exist_ok=True)
        session_id, info = sessions.add_session(str(data), expiry, False, session_id=session_id)
    except BaseException:
        shutil.rmtree(session_dir, ignore_errors=True)
        sessions.pop(session_id, None)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("session %s created from %d upload(s)%s", session_id, len(files), " (unpacked)" if uncompress else "")
    return {"session_id": session_id, "session_info": info.to_json()}
