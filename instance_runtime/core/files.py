"""Record files: the key `{collectionId}/{recordId}/{name}` in the instance's `Storage`.

The storage is the one `core.file_storage` picks from the settings: `DATA_DIR/storage/` on
local disk, or the S3 bucket of `settings.s3` (`tools.filesystem`). Uploads are always staged
on local disk first.

Contract (PocketBase's `core/field_file.go` and `tools/filesystem`):

- `stage(data_dir, parts)` copies the uploaded parts (`{form key: [(original name, file)]}`,
  the file object already spooled by the multipart parser) in chunks to
  `DATA_DIR/.pf_uploads/` (same filesystem as the local storage, so placing is a rename), sniffs
  each one's content type, hashes it (md5, for the local storage's sidecar: computed during
  the copy, so a placed file is never read again) and gives it PocketBase's sanitised name
  (`snake_case_name`, `_` + 10 random `[a-z0-9]`, cleaned extension). Never holds a whole file
  in memory.
  `discard(staged)` removes what was not placed (call it always, in a `finally`).
- `prepare(coll, old, body, staged)` folds the body's and the uploads' `field` / `field+` /
  `+field` / `field-` keys of every file field as PocketBase's `recordDataFromRequest` does
  (plain body names are kept next to files uploaded under the same plain key), and returns
  the body with plain name lists for those fields, the uploads to place and the validation
  errors found (`validation_invalid_file`, `validation_too_many_files`,
  `validation_file_size_limit`, `validation_invalid_mime_type`; first error per field).
- `place(conn, coll, record, old, prepared)` runs inside the record's write transaction: it
  `put`s the uploads kept in the saved record under the record's prefix (a rename on local
  disk, an upload to S3) with the sniffed content type and PocketBase's `original-filename`
  metadata (the name as uploaded, cut to 255 bytes), and defers (with `on_commit`, then
  `FileStorage.after_commit`) the removal of the old names the record no longer holds, each
  with its thumbnails (`{prefix}/thumbs_{name}/`, as PocketBase). If the write fails
  afterwards, `unplace(prepared)` deletes the placed files again. A file the storage cannot
  take (S3 unreachable, a name local disk reserves: `*.attrs`) is PocketBase's 400 "Failed to
  create record." / "Failed to update record." (the write is rolled back).
- `write_record(conn, coll, old, body, staged, write)` is the three steps around a record write.
- `forget_record(conn, coll, record_id)`: inside a delete, everything under the record's prefix
  is removed after the commit (cascaded deletes included).
- `record_prefix(coll, record_id)` is `{collectionId}/{recordId}`; `file_key(coll, record_id,
  name)` the key of one file, or None for a name or id that cannot be a stored file's.
- `detect_mime(head)` sniffs a content type (a small table of PocketBase's `mimetype` results:
  images, pdf, zip, gzip, json, utf-8 text, else `application/octet-stream`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from instance_runtime.core import fields as fv
from instance_runtime.core import file_storage
from instance_runtime.core.app import on_commit
from instance_runtime.core.errors import ApiError, FieldError, ValidationErrors
from instance_runtime.core.models import Collection, Field
from instance_runtime.core.records import Record
from instance_runtime.tools.filesystem import Storage, StorageError

DEFAULT_MAX_SIZE = 5 << 20
STAGING = ".pf_uploads"
ORIGINAL_FILENAME = "original-filename"
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_CHUNK = 1 << 16
_SNIFF = 3072
_EXT_INVALID = re.compile(r"[^\w.*\-+=#]+", re.ASCII)
_SPLIT = re.compile(r"[\W_]+", re.ASCII)
_LOOSE_NAME = re.compile(r"^[^./\\][^/\\]+$")

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "image/x-icon": ".ico",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/gzip": ".gz",
    "application/json": ".json",
    "text/plain; charset=utf-8": ".txt",
}


@dataclass
class Upload:
    """One uploaded file, staged on disk under its final (sanitised) name."""

    original_name: str
    name: str
    size: int
    mime: str
    path: Path
    md5: bytes | None = None  # the digest of the staged content (computed while staging)
    placed: str | None = None  # the storage key once `place`d
    storage: Storage | None = None


Staged = dict[str, list[Upload]]


@dataclass
class Prepared:
    """`prepare`'s answer: the body for `record_write`, uploads to place and errors."""

    body: dict[str, Any]
    uploads: list[Upload] = field(default_factory=list)
    errors: ValidationErrors = field(default_factory=dict)


def random_part(n: int = 10) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def _snakecase(text: str) -> str:
    words: list[str] = []
    for word in _SPLIT.split(text):
        if not word:
            continue
        out = []
        for i, c in enumerate(word):
            if c.isupper() and i > 0 and not word[i - 1].isupper():
                out.append("_")
            out.append(c)
        words.append("".join(out))
    return "_".join(words).lower()


def _extension(name: str) -> str:
    primary = name.rfind(".")
    if primary == -1:
        return ""
    secondary = name.rfind(".", 0, primary)
    return name[secondary:] if secondary >= 0 else name[primary:]


def normalize_name(original: str, mime: str) -> str:
    """PocketBase's `normalizeName`: clean name, random part, clean extension."""
    name = original[-300:]
    ext = _extension(name)
    clean_ext = "." + _EXT_INVALID.sub("", ext).strip(".")
    if clean_ext == ".":
        clean_ext = _EXTENSIONS.get(mime, "")
    if len(clean_ext) > 20:
        clean_ext = "." + clean_ext[-20:].strip(".")
    base = name[: len(name) - len(ext)] if ext else name
    clean = _snakecase(base.strip("."))
    if len(clean) < 3:
        clean += random_part()
    elif len(clean) > 100:
        clean = clean[:100]
    return f"{clean}_{random_part()}{clean_ext}"


def detect_mime(head: bytes) -> str:
    """See the module docstring."""
    signatures: list[tuple[bytes, str]] = [
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"BM", "image/bmp"),
        (b"\x00\x00\x01\x00", "image/x-icon"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"PK\x05\x06", "application/zip"),  # an empty archive
        (b"PK\x07\x08", "application/zip"),  # a spanned one
        (b"\x1f\x8b", "application/gzip"),
    ]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in signatures:
        if head.startswith(magic):
            return mime
    if not head:
        return "text/plain"
    if b"\x00" in head:
        return "application/octet-stream"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut by the sniffing window
            return "application/octet-stream"
        text = head[: exc.start].decode("utf-8")
    stripped = text.strip()
    if len(head) < _SNIFF and stripped[:1] in ("{", "["):
        try:
            json.loads(stripped)
            return "application/json"
        except ValueError:
            pass
    return "text/plain; charset=utf-8"


def mime_is(detected: str, expected: str) -> bool:
    """`mimetype.Is`: equal once parameters are dropped (plus a few common aliases)."""
    base = detected.split(";")[0].strip().lower()
    want = expected.split(";")[0].strip().lower()
    aliases = {"image/jpeg": {"image/jpg"}, "application/zip": {"application/x-zip-compressed"}}
    return base == want or want in aliases.get(base, set())


def record_prefix(coll: Collection, record_id: str) -> str:
    return f"{coll.id}/{record_id}"


def file_key(coll: Collection, record_id: str, name: str) -> str | None:
    """See the module docstring."""
    if not _LOOSE_NAME.match(name) or not _LOOSE_NAME.match(record_id):
        return None
    return f"{record_prefix(coll, record_id)}/{name}"


def _copy(src: BinaryIO, dest: Path) -> tuple[int, bytes, bytes]:
    """Copies `src` to the new file `dest`: its size, first bytes and md5 digest."""
    src.seek(0)
    head = b""
    size = 0
    digest = hashlib.md5(usedforsecurity=False)
    with open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            if len(head) < _SNIFF:
                head += chunk[: _SNIFF - len(head)]
            size += len(chunk)
            digest.update(chunk)
            out.write(chunk)
    return size, head, digest.digest()


def original_filename(name: str) -> str:
    """PocketBase's `original-filename` metadata: the uploaded name, its first 255 bytes (cut
    at a character boundary: PocketBase refuses the invalid UTF-8 a cut inside one makes)."""
    return name.encode("utf-8", errors="replace")[:255].decode("utf-8", errors="ignore")


def stage(data_dir: Path, parts: dict[str, list[tuple[str, BinaryIO]]]) -> Staged:
    """See the module docstring (blocking: run it in a thread)."""
    folder = data_dir / STAGING
    folder.mkdir(parents=True, exist_ok=True)
    staged: Staged = {}
    try:
        for key, files in parts.items():
            for original, src in files:
                path = folder / secrets.token_hex(16)
                size, head, md5 = _copy(src, path)
                mime = detect_mime(head)
                name = normalize_name(original, mime)
                upload = Upload(original, name, size, mime, path, md5)
                staged.setdefault(key, []).append(upload)
    except BaseException:
        discard(staged)
        raise
    return staged


def discard(staged: Staged) -> None:
    for uploads in staged.values():
        for upload in uploads:
            if upload.placed is None:
                upload.path.unlink(missing_ok=True)


Item = str | Upload


def _name(item: Item) -> str:
    return item if isinstance(item, str) else item.name


def _unique(items: list[Item]) -> list[Item]:
    seen: set[str] = set()
    out: list[Item] = []
    for item in items:
        if _name(item) not in seen:
            seen.add(_name(item))
            out.append(item)
    return out


def _exclude(base: list[Item], drop: list[Item]) -> list[Item]:
    names = {_name(d) for d in drop}
    return [b for b in base if _name(b) not in names]


def _modifiers(base: list[Item], pre: list[Item], app: list[Item], rem: list[Item]) -> list[Item]:
    out = base
    if pre:
        out = _unique(pre + _exclude(out, pre))
    if app:
        out = _unique(out + _exclude(app, out))
    if rem:
        out = _exclude(out, rem)
    return out


def _strings(value: Any) -> list[Item]:
    return list(fv.to_str_list(value))


def _fold(f: Field, old: list[Item], body: dict[str, Any], staged: Staged) -> list[Item] | None:
    name = f.name
    keys = (name, "+" + name, name + "+", name + "-")
    if not any(k in body for k in keys) and not any(staged.get(k) for k in keys):
        return None
    value: list[Item] = _strings(body[name]) if name in body else old
    value = _modifiers(
        value,
        _strings(body.get("+" + name)),
        _strings(body.get(name + "+")),
        _strings(body.get(name + "-")),
    )
    if staged.get(name):
        plain = _strings(body[name]) if name in body else []
        value = plain + list(staged[name])
    prepend: list[Item] = list(staged.get("+" + name, []))
    append: list[Item] = list(staged.get(name + "+", []))
    value = _modifiers(value, prepend, append, [])
    value = _unique(value)
    if not f.is_multiple:
        value = value[-1:]
    return value


def _check(f: Field, value: list[Item], old: list[Item]) -> FieldError | None:
    old_names = {_name(o) for o in old}
    added = [v[:250] for v in value if isinstance(v, str) and v not in old_names]
    if added:
        return FieldError(
            "validation_invalid_file",
            f"Invalid new files: [{' '.join(added)}].",  # Go's rendering of a []string
            {"invalidFiles": added},
        )
    max_select = max(f.max_select, 1)
    if len(value) > max_select:
        return FieldError(
            "validation_too_many_files",
            "The maximum allowed files is {{.maxSelect}}",
            {"maxSelect": max_select},
        )
    max_size = int(f.opt("maxSize") or 0) or DEFAULT_MAX_SIZE
    mime_types = [str(m) for m in f.opt("mimeTypes") or []]
    for item in value:
        if isinstance(item, str):
            continue
        if len(item.name) > 150 or not _LOOSE_NAME.match(item.name):
            return FieldError("validation_match_invalid", "Must be in a valid format")
        if item.size > max_size:
            return FieldError(
                "validation_file_size_limit",
                "Failed to upload {{.file}} - the maximum allowed file size is {{.maxSize}} bytes.",
                {"file": item.original_name[:300], "maxSize": max_size},
            )
        if mime_types and not any(mime_is(item.mime, m) for m in mime_types):
            message = f'"{item.name}" mime type must be one of: {", ".join(mime_types)}.'
            return FieldError("validation_invalid_mime_type", message)
    return None


def prepare(coll: Collection, old: Record | None, body: dict[str, Any], staged: Staged) -> Prepared:
    """See the module docstring."""
    out = dict(body)
    prepared = Prepared(out)
    for f in coll.fields:
        if f.type != "file":
            continue
        previous: list[Item] = _strings(old.get(f.name)) if old is not None else []
        value = _fold(f, previous, body, staged)
        for key in (f.name, "+" + f.name, f.name + "+", f.name + "-"):
            out.pop(key, None)
        if value is None:
            continue
        err = _check(f, value, previous)
        if err is not None:
            prepared.errors[f.name] = err
        prepared.uploads += [v for v in value if isinstance(v, Upload)]
        names = [_name(v) for v in value]
        out[f.name] = names if f.is_multiple else (names[0] if names else "")
    return prepared


def data_dir_of(conn: sqlite3.Connection) -> Path | None:
    """The instance's data folder: the one holding the connection's main database (None for a
    database in memory, which has no storage)."""
    for _seq, name, path in conn.execute("PRAGMA database_list").fetchall():
        if name == "main" and path:
            return Path(path).parent
    return None


def _file_names(coll: Collection, record: Record | None) -> set[str]:
    if record is None:
        return set()
    names: set[str] = set()
    for f in coll.fields:
        if f.type == "file":
            names.update(fv.to_str_list(record.get(f.name)))
    return names


def place(
    conn: sqlite3.Connection,
    coll: Collection,
    record: Record,
    old: Record | None,
    prepared: Prepared,
) -> None:
    """See the module docstring."""
    kept = _file_names(coll, record)
    gone = _file_names(coll, old) - kept
    placing = [u for u in prepared.uploads if u.name in kept]
    if not placing and not gone and not prepared.uploads:
        return  # nothing to place or remove (most writes): no look-up of the folder
    data_dir = data_dir_of(conn)
    if data_dir is None:
        if prepared.uploads:
            raise RuntimeError("uploads need a database on disk")
        return
    if not placing and not gone:
        return
    holder = file_storage.holder_for_connection(conn, data_dir)
    storage = holder.get()
    prefix = record_prefix(coll, str(record["id"]))
    try:
        for upload in placing:
            key = f"{prefix}/{upload.name}"
            metadata = {ORIGINAL_FILENAME: original_filename(upload.original_name)}
            storage.put(key, upload.path, upload.mime, metadata, upload.md5)
            upload.placed, upload.storage = key, storage
    except StorageError as exc:  # S3 down, a name the storage refuses (`*.attrs` on disk)
        unplace(prepared)
        message = "Failed to create record." if old is None else "Failed to update record."
        raise ApiError(400, message) from exc
    except BaseException:
        unplace(prepared)
        raise
    if gone:
        old_prefix = record_prefix(coll, str((old or record)["id"]))
        on_commit(lambda: holder.after_commit(storage, lambda s: _remove(s, old_prefix, gone)))


def unplace(prepared: Prepared) -> None:
    for upload in prepared.uploads:
        if upload.placed is not None and upload.storage is not None:
            with contextlib.suppress(Exception):  # best effort: the write has failed already
                upload.storage.delete(upload.placed)
            upload.placed = upload.storage = None


def _remove(storage: Storage, prefix: str, names: set[str]) -> None:
    for name in sorted(names):
        if name and _LOOSE_NAME.match(name):
            storage.delete_prefix(f"{prefix}/thumbs_{name}")
            storage.delete(f"{prefix}/{name}")  # local: the emptied folder goes too


def forget_record(conn: sqlite3.Connection, coll: Collection, record_id: str) -> None:
    """See the module docstring."""
    if not any(f.type == "file" for f in coll.fields):
        return
    data_dir = data_dir_of(conn)
    if data_dir is None:
        return
    if not _LOOSE_NAME.match(record_id):
        return
    holder = file_storage.holder_for_connection(conn, data_dir)
    storage = holder.get()
    prefix = record_prefix(coll, record_id)
    on_commit(lambda: holder.after_commit(storage, lambda s: s.delete_prefix(prefix)))


def write_record(
    conn: sqlite3.Connection,
    coll: Collection,
    old: Record | None,
    body: dict[str, Any],
    staged: Staged,
    write: Callable[[dict[str, Any], ValidationErrors], Record],
) -> Record:
    """`prepare`, `write(body, file_errors)` (the record write, which must refuse when
    `file_errors` is not empty), then `place`; placed files are removed again if it fails."""
    prepared = prepare(coll, old, body, staged)
    record = write(prepared.body, prepared.errors)
    try:
        place(conn, coll, record, old, prepared)
    except BaseException:
        unplace(prepared)
        raise
    return record
