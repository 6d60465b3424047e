"""Why a file operation of `control_plane.files.tree` is refused.

Every refusal is a `FileRefused` with a `message` for people (it may name the path asked for
once the path rules accepted it; it never quotes a file's contents) and an HTTP-like `status`
that `control_plane.files.service` turns into the API's error. `field` names the input at
fault when it is not the path itself (`to` of a move).
"""

from __future__ import annotations


class FileRefused(Exception):
    status: int = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class PathRefused(FileRefused):
    """422: not a path the rules take (`..`, absolute, an empty or odd component, a NUL or a
    control character, too long, outside `pb_hooks/`, `pb_migrations/` and `pb_public/`)."""

    status = 422


class NotThere(FileRefused):
    """404: the file or folder does not exist (or the instance has no folder yet)."""

    status = 404


class NotAFile(FileRefused):
    """409: a folder where a file is meant (reading a folder, writing over one)."""

    status = 409


class NotADir(FileRefused):
    """409: a file where a folder is meant (listing a file, a file on the way)."""

    status = 409


class NotEmpty(FileRefused):
    """409: deleting a folder that holds something, without `recursive`."""

    status = 409


class Exists(FileRefused):
    """409: creating what is already there (a folder; a folder where a move would land)."""

    status = 409


class LinkOrSpecial(FileRefused):
    """422: a symbolic link, FIFO, socket or device node on the way or at the end, or a file
    that is not the instance's own (another owner, several hard links)."""

    status = 422


class TooLarge(FileRefused):
    """413: one file over `FileLimits.max_file_bytes`."""

    status = 413


class OverQuota(FileRefused):
    """507 (Insufficient Storage): the instance's disk quota, or `FileLimits.max_files`, would
    be exceeded (or the disk is full)."""

    status = 507
