"""Thumbnails of record images, as PocketBase's `filesystem.CreateThumb` and `apis/file.go`.

Contract:

- Sizes: `parse(size)` reads PocketBase's `^(\\d+)x(\\d+)(t|b|f)?$` into a `ThumbSize` (None when
  it does not match): `WxH` fills the box cropping from the center, `WxHt` from the top, `WxHb`
  from the bottom, `WxHf` fits inside the box (never enlarged), `0xH` / `Wx0` resize to that
  height / width keeping the aspect ratio (the suffix is then ignored; enlarging allowed).
  `setting_error(size)` is what a file field's `thumbs` option refuses for one entry
  (PocketBase's `validation_not_in_invalid` for `0x0`, `0x0t`, `0x0b`, `0x0f`, else
  `validation_match_invalid` when it does not match), or None.
- `served_size(size, field_thumbs)`: the size to make for a `?thumb=` value: `100x100`
  (PocketBase's default) or one listed in the field's `thumbs`; any other value is None (the
  original is served). `THUMBABLE` are the content types thumbs are made of (png, jpg, gif,
  webp); another type is served as the original too.
- `thumb_key(file_key, size)`: `{collectionId}/{recordId}/thumbs_{name}/{size}_{name}`.
- `render(data, size, content_type) -> (bytes, content type)` (blocking, CPU bound): decodes
  the first frame (JPEG EXIF orientation applied), resizes with the arithmetic of Go's
  `disintegration/imaging` (`Resize`, `Fit`, `Fill` with its anchors) using bilinear
  resampling, and encodes in the original's format: JPEG (quality 95) and GIF as themselves,
  everything else (webp included) as PNG, as PocketBase does. Raises `ThumbError` when the
  image cannot be made. Pillow is imported here, on the first thumb, never at start-up.
- `Thumbnailer` (one per app: `of(app)`): `await ensure(storage, file_key, size, content_type)`
  is the thumb's key once it is stored (made now if missing), or None when it cannot be made
  (logged; PocketBase then serves the original). Requests for the same missing thumb share one
  generation (a single flight per key); at most `PB_THUMBS_MAX_WORKERS` (default CPUs + 2)
  generations run at once, each in a worker thread (never on the event loop); one that cannot
  start within `PB_THUMBS_MAX_WAIT` seconds (default 60) gives up. A thumb is written whole
  (`Storage.put_bytes`: a temporary file renamed, or one S3 PUT), so no reader sees half of it,
  with its content type (in PocketBase's `.attrs` sidecar on local disk, where PocketBase
  reads it too, or as the S3 object's `Content-Type`), and it is stored once: later requests
  find it and serve it from the storage. A thumb made while its original was being removed is
  removed again.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from instance_runtime.core.errors import FieldError
from instance_runtime.tools.filesystem import Storage

if TYPE_CHECKING:
    from PIL import Image

    from instance_runtime.core.app import App

log = logging.getLogger("instance_runtime")

SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)(t|b|f)?$")
DEFAULT_SIZES = ("100x100",)
THUMBABLE = frozenset({"image/png", "image/jpg", "image/jpeg", "image/gif", "image/webp"})
_ZERO_SIZES = frozenset({"0x0", "0x0t", "0x0b", "0x0f"})
_JPEG_QUALITY = 95  # imaging's default

Mode = Literal["", "t", "b", "f"]
_MODES: dict[str, Mode] = {"": "", "t": "t", "b": "b", "f": "f"}


class ThumbError(Exception):
    """The thumb could not be made (bad size, undecodable image, encoder failure)."""


@dataclass(frozen=True)
class ThumbSize:
    width: int
    height: int
    mode: Mode = ""


def parse(size: str) -> ThumbSize | None:
    """See the module docstring."""
    found = SIZE_PATTERN.match(size)
    if found is None or size.endswith("\n"):  # `$` would accept a trailing newline
        return None
    return ThumbSize(int(found.group(1)), int(found.group(2)), _MODES[found.group(3) or ""])


def setting_error(size: object) -> FieldError | None:
    """See the module docstring."""
    if size in _ZERO_SIZES:
        return FieldError("validation_not_in_invalid", "Must not be in list.")
    if not isinstance(size, str) or parse(size) is None:
        return FieldError("validation_match_invalid", "Must be in a valid format.")
    return None


def served_size(size: str, field_thumbs: list[str]) -> str | None:
    """See the module docstring."""
    if size and (size in DEFAULT_SIZES or size in field_thumbs):
        return size
    return None


def thumb_key(file_key: str, size: str) -> str:
    """See the module docstring."""
    prefix, _, name = file_key.rpartition("/")
    return f"{prefix}/thumbs_{name}/{size}_{name}"


def thumbs_prefix(file_key: str) -> str:
    prefix, _, name = file_key.rpartition("/")
    return f"{prefix}/thumbs_{name}"


# --- the geometry of Go's disintegration/imaging ------------------------------------------

Box = tuple[int, int, int, int]  # left, top, right, bottom in the source


def _keep_aspect(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int]:
    """`imaging.Resize`: a zero side follows the aspect ratio (rounded, at least 1 px)."""
    if width == 0:
        width = max(1, int(height * src_w / src_h + 0.5))
    if height == 0:
        height = max(1, int(width * src_h / src_w + 0.5))
    return width, height


def _anchor(src_w: int, src_h: int, w: int, h: int, mode: Mode) -> Box:
    """`imaging.CropAnchor` with Center / Top / Bottom, for a `w` x `h` box inside the source."""
    x = (src_w - w) // 2
    y = 0 if mode == "t" else src_h - h if mode == "b" else (src_h - h) // 2
    return x, y, x + w, y + h


def plan(src_w: int, src_h: int, size: ThumbSize) -> tuple[Box, tuple[int, int]]:
    """The source box to take and the size to scale it to, as `CreateThumb` computes them."""
    whole: Box = (0, 0, src_w, src_h)
    if size.width == 0 and size.height == 0:
        raise ThumbError("thumb width and height cannot be zero at the same time")
    if size.width == 0 or size.height == 0:
        return whole, _keep_aspect(src_w, src_h, size.width, size.height)
    if size.mode == "f":  # imaging.Fit: never enlarged
        if src_w <= size.width and src_h <= size.height:
            return whole, (src_w, src_h)
        src_ratio = src_w / src_h
        if src_ratio > size.width / size.height:
            new_w, new_h = size.width, int(size.width / src_ratio)
        else:
            new_w, new_h = int(size.height * src_ratio), size.height
        return whole, _keep_aspect(src_w, src_h, new_w, new_h)
    # imaging.Fill: crop to the box's aspect ratio at the anchor, then scale to the box
    dst_w, dst_h = size.width, size.height
    if (src_w, src_h) == (dst_w, dst_h):
        return whole, (dst_w, dst_h)
    if src_w / src_h < dst_w / dst_h:
        crop_h = int(max(1.0, src_w * dst_h / dst_w) + 0.5)
        return _anchor(src_w, src_h, src_w, crop_h, size.mode), (dst_w, dst_h)
    crop_w = int(max(1.0, src_h * dst_w / dst_h) + 0.5)
    return _anchor(src_w, src_h, crop_w, src_h, size.mode), (dst_w, dst_h)


# --- making one thumb -----------------------------------------------------------------------


def _output_format(content_type: str) -> tuple[str, str]:
    if content_type in ("image/jpeg", "image/jpg"):
        return "JPEG", "image/jpeg"
    if content_type == "image/gif":
        return "GIF", "image/gif"
    return "PNG", "image/png"  # png, and webp as PocketBase does


def _normalised(img: Image.Image, output: str) -> Image.Image:
    has_alpha = "A" in img.getbands() or "transparency" in img.info
    if output == "JPEG":
        return img if img.mode in ("RGB", "L") else img.convert("RGB")
    if img.mode in ("RGB", "RGBA", "L", "LA"):
        return img
    return img.convert("RGBA" if has_alpha else "RGB")


def render(data: bytes, size: str, content_type: str) -> tuple[bytes, str]:
    """See the module docstring."""
    parsed = parse(size)
    if parsed is None:
        raise ThumbError("thumb size must be in WxH, WxHt, WxHb or WxHf format")
    from PIL import Image, ImageOps

    output, out_type = _output_format(content_type)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.seek(0)  # the first frame of an animation
            img: Image.Image = opened
            if opened.format == "JPEG":
                img = ImageOps.exif_transpose(opened)
            img = _normalised(img, output)
            box, target = plan(img.width, img.height, parsed)
            if box != (0, 0, img.width, img.height) or target != img.size:
                img = img.resize(target, Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
            out = io.BytesIO()
            if output == "JPEG":
                img.save(out, "JPEG", quality=_JPEG_QUALITY)
            else:
                img.save(out, output)
    except ThumbError:
        raise
    except Exception as exc:  # Pillow raises many kinds (OSError, ValueError, DecompressionBomb)
        raise ThumbError(f"cannot make the {size} thumb: {exc}") from exc
    return out.getvalue(), out_type


def create(storage: Storage, file_key: str, size: str, content_type: str) -> str:
    """Makes and stores the thumb of `file_key` (blocking); its key. Raises `ThumbError` or
    the storage's errors."""
    key = thumb_key(file_key, size)
    with storage.open(file_key) as reader:
        data = reader.read()
    thumb, out_type = render(data, size, content_type)
    storage.put_bytes(key, thumb, out_type)
    if not storage.exists(file_key):  # the original went meanwhile: leave nothing behind
        storage.delete_prefix(thumbs_prefix(file_key))
        raise ThumbError("the original file was removed")
    return key


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


class Thumbnailer:
    """See the module docstring."""

    def __init__(self, max_workers: int = 0, max_wait: float = 0) -> None:
        cpus = os.cpu_count() or 1
        self.max_workers = max_workers or _env_int("PB_THUMBS_MAX_WORKERS", cpus + 2)
        self.max_wait = max_wait or float(_env_int("PB_THUMBS_MAX_WAIT", 60))
        self._pending: dict[str, asyncio.Future[str | None]] = {}
        self._slots: asyncio.Semaphore | None = None
        self.generated = 0  # thumbs made by this process (for tests and diagnostics)

    async def ensure(
        self, storage: Storage, file_key: str, size: str, content_type: str
    ) -> str | None:
        key = thumb_key(file_key, size)
        pending = self._pending.get(key)
        if pending is None:
            if await asyncio.to_thread(storage.exists, key):
                return key
            pending = self._pending.get(key)  # another request started it meanwhile
        if pending is None:
            pending = asyncio.ensure_future(self._generate(storage, file_key, size, content_type))
            self._pending[key] = pending
            pending.add_done_callback(lambda _f: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    async def _generate(
        self, storage: Storage, file_key: str, size: str, content_type: str
    ) -> str | None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_workers)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.max_wait)
        except TimeoutError:
            log.warning("thumb %s of %s: no worker free in time", size, file_key)
            return None
        try:
            key = await asyncio.to_thread(create, storage, file_key, size, content_type)
            self.generated += 1
            return key
        except Exception as exc:
            log.warning("Fallback to original - failed to create thumb %s of %s: %s",
                        size, file_key, exc)  # fmt: skip
            return None
        finally:
            self._slots.release()


_of_app: weakref.WeakKeyDictionary[App, Thumbnailer] = weakref.WeakKeyDictionary()


def of(app: App) -> Thumbnailer:
    """The app's `Thumbnailer` (made on first use)."""
    found = _of_app.get(app)
    if found is None:
        found = _of_app[app] = Thumbnailer()
    return found
