"""PocketBase's `.attrs` sidecar (its `fileblob` driver, from gocloud.dev): the attributes of a
file stored on local disk, in `KEY.attrs` next to it.

Contract:

- `ATTRS` is the suffix; `is_sidecar(name)` says whether a file or key name ends in it.
- `encode(content_type, metadata, md5)` is the sidecar's bytes as PocketBase 0.40.6 writes them
  (Go's `encoding/json/v2`, compact, no trailing newline, the fields in this order):
  `{"user.cache_control":"","user.content_disposition":"","user.content_encoding":"",
  "user.content_language":"","user.content_type":TYPE,"user.metadata":{...},"md5":BASE64}`.
  No HTML escaping, non-ASCII kept as UTF-8 (a lone surrogate becomes `?`: Go accepts only
  valid UTF-8), metadata keys lower-cased (as `blob.NewWriter` does) and sorted; no metadata
  is `{}`. `content_type` None is written as `application/octet-stream` (what PocketBase
  assumes for a file without a sidecar).
- `decode(raw)` is the `Attrs` of a sidecar's bytes, or None when they are not a JSON object.
  Missing or mistyped fields read as PocketBase's zero values (`content_type` "" is kept: the
  caller decides what an empty type means).
- `md5_of(path)` is the md5 digest of a file, read in chunks (for callers that could not hash
  the content while writing it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from instance_runtime.tools.filesystem import CHUNK

ATTRS = ".attrs"
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class Attrs:
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)
    md5: bytes = b""


def is_sidecar(name: str) -> bool:
    return name.endswith(ATTRS)


def encode(content_type: str | None, metadata: Mapping[str, str] | None, md5: bytes) -> bytes:
    """See the module docstring."""
    meta = {str(k).lower(): str(v) for k, v in (metadata or {}).items()}
    document = {
        "user.cache_control": "",
        "user.content_disposition": "",
        "user.content_encoding": "",
        "user.content_language": "",
        "user.content_type": OCTET_STREAM if content_type is None else content_type,
        "user.metadata": dict(sorted(meta.items())),
        "md5": base64.b64encode(md5).decode("ascii"),
    }
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", errors="replace")


def decode(raw: bytes) -> Attrs | None:
    """See the module docstring."""
    try:
        document = json.loads(raw)
    except ValueError:  # also a UnicodeDecodeError
        return None
    if not isinstance(document, dict):
        return None
    content_type = document.get("user.content_type")
    raw_meta = document.get("user.metadata")
    metadata = (
        {str(k): str(v) for k, v in raw_meta.items() if isinstance(v, str)}
        if isinstance(raw_meta, dict)
        else {}
    )
    digest = b""
    if isinstance(document.get("md5"), str):
        try:
            digest = base64.b64decode(document["md5"], validate=True)
        except (binascii.Error, ValueError):
            digest = b""
    return Attrs(content_type if isinstance(content_type, str) else "", metadata, digest)


def md5_of(path: Path) -> bytes:
    """See the module docstring."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK * 16):
            digest.update(chunk)
    return digest.digest()
