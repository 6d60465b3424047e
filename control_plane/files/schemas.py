"""Shapes of the files API (`control_plane.api.files`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from control_plane.files.rules import MAX_PATH_LENGTH
from control_plane.files.tree import FileEntry


class FileEntryPublic(BaseModel):
    path: str = Field(
        description="relative to the instance's folder", examples=["pb_public/index.html"]
    )
    name: str = Field(description="the last component of `path`", examples=["index.html"])
    kind: Literal["file", "dir"]
    size: int = Field(description="bytes of a file; 0 for a folder")
    modified: datetime = Field(description="last modification (UTC)")

    @classmethod
    def of(cls, entry: FileEntry) -> FileEntryPublic:
        return cls(
            path=entry.path,
            name=entry.name,
            kind=entry.kind,
            size=entry.size,
            modified=entry.modified,
        )


class FileMove(BaseModel):
    to: str = Field(
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        examples=["pb_public/old/index.html"],
        description="where the file or folder goes: a path in pb_hooks/, pb_migrations/ or "
        "pb_public/ whose folder exists; a file there is replaced, a folder never is",
    )
