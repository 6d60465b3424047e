"""Which paths of an instance's folder the files API (and SFTP) may name.

A path is relative to the instance's root and lies in one of its three code folders,
`pb_hooks/`, `pb_migrations/` and `pb_public/` (never `pb_data/`, the logs or the root
itself): `pb_public/assets/app.js`. It is checked before anything is opened:

- UTF-8 text without NUL or control characters (U+0000..U+001F, U+007F), at most
  `max_path_length` characters; one trailing `/` is dropped (`pb_public/assets/`);
- no leading `/` (absolute), no empty component (`a//b`), no `.` or `..`;
- each component at most `max_name_length` characters and 255 bytes of UTF-8 (what Linux
  takes), and not a name of ours (`.pf-upload-*`, the temporary files of uploads).

Whether a component is a symbolic link, a FIFO or a hard-linked file is for the walk itself to
find (`control_plane.files.tree`): the path rules only look at the text.
"""

from __future__ import annotations

import re

from control_plane.files.errors import PathRefused

CODE_FOLDERS = ("pb_hooks", "pb_migrations", "pb_public")
UPLOAD_PREFIX = ".pf-upload-"
MAX_PATH_LENGTH = 1024
MAX_NAME_LENGTH = 255
NAME_MAX_BYTES = 255  # Linux's NAME_MAX

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name_problem(name: str, max_name_length: int = MAX_NAME_LENGTH) -> str | None:
    """Why `name` (one component) cannot be a file's name here, or None."""
    if name in ("", ".", ".."):
        return "a path cannot hold an empty component, `.` or `..`"
    if _CONTROL.search(name):
        return "a name cannot hold NUL or control characters"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "a name must be valid UTF-8"
    if len(name) > max_name_length or len(encoded) > NAME_MAX_BYTES:
        return f"a name is longer than {min(max_name_length, NAME_MAX_BYTES)} characters"
    if name.startswith(UPLOAD_PREFIX):
        return f"names starting with {UPLOAD_PREFIX} are reserved"
    return None


def split_path(
    rel: str,
    *,
    max_path_length: int = MAX_PATH_LENGTH,
    max_name_length: int = MAX_NAME_LENGTH,
    allow_root: bool = False,
    field: str | None = None,
) -> tuple[str, ...]:
    """The components of `rel`, the first one a code folder (`PathRefused` otherwise; the
    message never repeats the path). `allow_root`: `""` is taken too, as `()` (the folder
    that holds the three, for listings)."""
    if len(rel) > 1 and rel.endswith("/") and not rel.endswith("//"):
        rel = rel[:-1]
    if not rel:
        if allow_root:
            return ()
        raise PathRefused("give a path, e.g. pb_public/index.html", field=field)
    if len(rel) > max_path_length:
        raise PathRefused(f"the path is longer than {max_path_length} characters", field=field)
    if rel.startswith("/"):
        raise PathRefused("the path must be relative to the instance (no leading /)", field=field)
    parts = tuple(rel.split("/"))
    for part in parts:
        problem = name_problem(part, max_name_length)
        if problem is not None:
            raise PathRefused(problem, field=field)
    if parts[0] not in CODE_FOLDERS:
        folders = ", ".join(f"{folder}/" for folder in CODE_FOLDERS)
        raise PathRefused(f"the path must lie in {folders}", field=field)
    return parts
