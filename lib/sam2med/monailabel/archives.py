"""Unpacking a session's .zip / .tar(.gz) upload member by member, inside one folder and within caps.

Python 3.11's `shutil.unpack_archive` applies no member filter: a member named `../../x` is written outside
the target, links and devices are created as given, and a small zip of zeros unpacks to gigabytes. Here
each member must be a regular file or a folder with a relative name that stays inside the target; the
member count and the unpacked bytes (as declared and as actually written) are capped.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator

from sam2med.errors import InputError
from sam2med.monailabel.safety import TooLargeError

logger = logging.getLogger(__name__)

MAX_MEMBERS = 20_000  # a DICOM series is one file per slice: a few thousand at most
_CHUNK = 1 << 20


class ArchiveError(InputError):
    """An archive that cannot be unpacked, or a member that would leave the target folder or is not a plain
    file or folder (HTTP 400)."""


def archive_format(name: str) -> str | None:
    """'zip' or 'tar' by the file name's extension; None for anything else."""
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        return "tar"
    return None


def member_path(name: str, target: Path) -> Path:
    """Where member `name` goes under `target`; refused if absolute, with '..', or empty."""
    clean = name.replace("\\", "/")
    parts = [p for p in PurePosixPath(clean).parts if p not in ("", ".")]
    if clean.startswith("/") or (parts and (parts[0].endswith(":") or parts[0] == "/")):
        raise ArchiveError(f"archive member {name[:120]!r} has an absolute path")
    if ".." in parts:
        raise ArchiveError(f"archive member {name[:120]!r} points outside the archive ('..')")
    if not parts:
        raise ArchiveError(f"archive member {name[:120]!r} has no name")
    return target.joinpath(*parts)


class _Budget:
    """The caps on members and unpacked bytes: checked on the sizes the archive declares, then on what is written."""

    def __init__(self, max_bytes: int, max_members: int):
        self.max_bytes, self.max_members = max_bytes, max_members
        self.declared = self.written = self.members = 0

    def _check(self, count: int) -> None:
        if count > self.max_bytes:
            raise TooLargeError(f"the archive unpacks to over {self.max_bytes / 1e6:.0f} MB, the upload limit")

    def member(self, declared_size: int) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise TooLargeError(f"the archive holds over {self.max_members} members")
        self.declared += max(int(declared_size), 0)
        self._check(self.declared)

    def wrote(self, count: int) -> None:  # a zip header may understate its sizes
        self.written += count
        self._check(self.written)


def _copy(source: IO[bytes], destination: Path, budget: _Budget) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        out = open(destination, "xb")  # 'x': never over a file (or through a link) already there
    except (FileExistsError, IsADirectoryError, NotADirectoryError):
        raise ArchiveError(f"archive member {destination.name[:120]!r} appears twice") from None
    with out:
        while chunk := source.read(_CHUNK):
            budget.wrote(len(chunk))
            out.write(chunk)


def _zip_members(archive: zipfile.ZipFile) -> Iterator[tuple[zipfile.ZipInfo, bool]]:
    for info in archive.infolist():
        mode = info.external_attr >> 16  # Unix mode when a Unix zip wrote it; no file type bits: a plain file
        member_path(info.filename, Path("."))
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            kind = "a link" if stat.S_ISLNK(mode) else "not a plain file"
            raise ArchiveError(f"archive member {info.filename[:120]!r} is {kind}; only files and folders are unpacked")
        yield info, info.is_dir()


def _unpack_zip(path: Path, target: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(path) as archive:
        members = list(_zip_members(archive))
        for info, _ in members:  # every name and the declared sizes before writing anything
            member_path(info.filename, target)
            budget.member(info.file_size)
        for info, is_dir in members:
            destination = member_path(info.filename, target)
            if is_dir:
                destination.mkdir(parents=True, exist_ok=True)
                continue
            with archive.open(info) as source:
                _copy(source, destination, budget)


def _unpack_tar(path: Path, target: Path, budget: _Budget) -> None:
    with tarfile.open(path) as archive:
        members = []
        for member in archive:  # streamed: a member-count bomb stops at the cap
            member_path(member.name, target)
            if not (member.isreg() or member.isdir()):
                kind = "a link" if member.issym() or member.islnk() else "a device or pipe" if member.isdev() or member.isfifo() else "not a plain file"
                raise ArchiveError(f"archive member {member.name[:120]!r} is {kind}; only files and folders are unpacked")
            budget.member(member.size)
            members.append(member)
        for member in members:
            destination = member_path(member.name, target)
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            source = archive.extractfile(member)
            assert source is not None  # a regular member always has a file object
            with source:
                _copy(source, destination, budget)


def unpack_archive(path: str | os.PathLike, target: str | os.PathLike, max_bytes: int,
                   max_members: int = MAX_MEMBERS) -> Path:
    """Unpack the .zip or .tar(.gz) at `path` into the new folder `target`; on any refusal or error the folder
    is removed and the error raised (ArchiveError: HTTP 400, TooLargeError: 413)."""
    path, target = Path(path), Path(target)
    unpack: Callable[[Path, Path, _Budget], None] | None = {"zip": _unpack_zip, "tar": _unpack_tar}.get(
        archive_format(path.name) or "")
    if unpack is None:
        raise ArchiveError("uncompress needs one .zip or .tar(.gz) archive")
    target.mkdir()
    try:
        unpack(path, target, _Budget(max_bytes, max_members))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        shutil.rmtree(target, ignore_errors=True)
        raise ArchiveError(f"the archive cannot be unpacked ({str(err).splitlines()[0][:120] if str(err) else type(err).__name__})") from None
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    logger.info("unpacked %s: %d bytes", path.name, sum(p.stat().st_size for p in target.rglob("*") if p.is_file()))
    return target
