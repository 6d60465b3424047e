"""An instance's code folders as the file browser shows them (`files.html`, `file_edit.html`):
breadcrumbs, the listing, the SFTP line, what may be edited as text, and download headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from control_plane.files.tree import FileEntry
from dashboard.web import cp_of

EDIT_MAX_BYTES = 1 << 20  # the largest file the text editor opens (and saves)


@dataclass(frozen=True)
class Crumb:
    label: str
    path: str  # "" for the instance's root (the three code folders)


def parent_of(path: str) -> str:
    """The folder holding `path` ("" for a code folder itself)."""
    return path.rsplit("/", 1)[0] if "/" in path else ""


def crumbs_of(path: str) -> list[Crumb]:
    """`pb_public/assets` -> files, pb_public, assets (each with the path it opens)."""
    crumbs = [Crumb("files", "")]
    parts = [part for part in path.split("/") if part]
    for index, part in enumerate(parts):
        crumbs.append(Crumb(part, "/".join(parts[: index + 1])))
    return crumbs


def entry_views(entries: list[FileEntry]) -> list[dict[str, Any]]:
    """The listing: folders first, then files, each by name."""
    ordered = sorted(entries, key=lambda entry: (entry.kind != "dir", entry.name.lower()))
    return [
        {
            "name": entry.name,
            "path": entry.path,
            "kind": entry.kind,
            "size": entry.size,
            "modified": entry.modified,
            "code_folder": "/" not in entry.path,  # pb_hooks, ...: neither renamed nor deleted
        }
        for entry in ordered
    ]


def sftp_line(request: Request, name: str) -> str | None:
    """`sftp -P PORT NAME@HOST` for this server's SFTP (None when PF_SFTP is off); HOST is
    the one the dashboard was reached at, as the account page shows it."""
    listen = cp_of(request).settings.sftp_listen
    if listen is None:
        return None
    return f"sftp -P {listen[1]} {name}@{request.url.hostname}"


def text_of(content: bytes) -> str | None:
    """`content` as text for the editor, or None when it is binary (not UTF-8, or NUL)."""
    if b"\x00" in content:
        return None
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return None
