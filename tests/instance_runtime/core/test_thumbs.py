"""Thumbnails (`core.thumbs`) on real images decoded again with Pillow: every size variant's
output size and crop, the output format per source type, EXIF orientation, the first frame of
an animation, refusals; and the `Thumbnailer` over a real `LocalStorage`: one generation for
many concurrent requests, nothing half-written, served from the storage afterwards, made off
the event loop, Pillow imported only when a thumb is made."""

from __future__ import annotations

import asyncio
import io
import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from instance_runtime.core import thumbs
from instance_runtime.core.thumbs import ThumbError, ThumbSize
from instance_runtime.tools.filesystem.local import LocalStorage

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
YELLOW, CYAN = (255, 255, 0), (0, 255, 255)


def _striped(width: int, height: int, *, vertical: bool) -> Image.Image:
    """Three bands: top/middle/bottom (vertical) or left/middle/right, red, green, blue."""
    img = Image.new("RGB", (width, height), GREEN)
    if vertical:
        img.paste(RED, (0, 0, width, height // 3))
        img.paste(BLUE, (0, height - height // 3, width, height))
    else:
        img.paste(RED, (0, 0, width // 3, height))
        img.paste(BLUE, (width - width // 3, 0, width, height))
    return img


def _encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _at(img: Image.Image, x: int, y: int) -> tuple[int, ...]:
    pixel = img.getpixel((x, y))
    assert isinstance(pixel, tuple)
    return pixel


def _near(got: tuple[int, ...], want: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(got[:3], want, strict=True))


def _thumb(img: Image.Image, size: str, fmt: str = "PNG", ctype: str = "image/png") -> Image.Image:
    data, out_type = thumbs.render(_encode(img, fmt), size, ctype)
    assert out_type == ctype if ctype != "image/webp" else out_type == "image/png"
    return _decode(data)


# --- sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "parsed"),
    [
        ("100x100", ThumbSize(100, 100, "")),
        ("300x0", ThumbSize(300, 0, "")),
        ("0x80", ThumbSize(0, 80, "")),
        ("40x20t", ThumbSize(40, 20, "t")),
        ("40x20b", ThumbSize(40, 20, "b")),
        ("40x20f", ThumbSize(40, 20, "f")),
        ("0x0", ThumbSize(0, 0, "")),
    ],
)
def test_sizes_parse(size: str, parsed: ThumbSize) -> None:
    assert thumbs.parse(size) == parsed


@pytest.mark.parametrize("size", ["", "100", "x100", "100x", "10x10x", " 10x10", "10x10\n",
                                  "10x10c", "-1x10", "1.5x2", "10X10"])  # fmt: skip
def test_malformed_sizes_do_not_parse(size: str) -> None:
    assert thumbs.parse(size) is None


def test_field_setting_errors_are_pocketbases() -> None:
    for zero in ("0x0", "0x0t", "0x0b", "0x0f"):
        error = thumbs.setting_error(zero)
        assert error is not None and error.code == "validation_not_in_invalid"
    for bad in ("abc", "10x10x", 12):
        error = thumbs.setting_error(bad)
        assert error is not None and error.code == "validation_match_invalid"
    assert thumbs.setting_error("0x50") is None
    assert thumbs.setting_error("50x50f") is None


def test_served_sizes_are_the_default_and_the_fields() -> None:
    assert thumbs.served_size("100x100", []) == "100x100"
    assert thumbs.served_size("50x50", ["50x50"]) == "50x50"
    assert thumbs.served_size("50x50", ["60x60"]) is None
    assert thumbs.served_size("", ["50x50"]) is None


def test_thumb_key_is_pocketbases_path() -> None:
    assert (
        thumbs.thumb_key("c1/r1/pic_abc.png", "50x50t")
        == "c1/r1/thumbs_pic_abc.png/50x50t_pic_abc.png"
    )


# --- rendering -----------------------------------------------------------------------------


def test_fill_crops_from_the_center_top_and_bottom() -> None:
    tall = _striped(300, 600, vertical=True)  # a 1:2 image into 2:1 boxes: a horizontal slice
    center, top, bottom = (_thumb(tall, s) for s in ("100x50", "100x50t", "100x50b"))
    for img in (center, top, bottom):
        assert img.size == (100, 50)
    assert _near(_at(center, 50, 25), GREEN)
    assert _near(_at(center, 50, 2), GREEN) and _near(_at(center, 50, 47), GREEN)
    assert _near(_at(top, 50, 5), RED) and _near(_at(top, 50, 45), RED)
    assert _near(_at(bottom, 50, 5), BLUE) and _near(_at(bottom, 50, 45), BLUE)


def test_fill_of_a_wide_image_keeps_the_middle_columns() -> None:
    wide = _striped(900, 300, vertical=False)
    for size in ("60x60", "60x60t", "60x60b"):  # the anchor is centered horizontally
        img = _thumb(wide, size)
        assert img.size == (60, 60)
        assert _near(_at(img, 2, 30), GREEN) and _near(_at(img, 57, 30), GREEN)


def test_fill_enlarges_a_small_image() -> None:
    small = _striped(20, 10, vertical=False)
    assert _thumb(small, "100x100").size == (100, 100)
    assert _thumb(small, "50x20t").size == (50, 20)


def test_fit_stays_inside_and_never_enlarges() -> None:
    img = _striped(300, 200, vertical=False)
    fitted = _thumb(img, "50x50f")
    assert fitted.size == (50, 33)  # Go truncates 50 / 1.5
    assert _near(_at(fitted, 2, 16), RED) and _near(_at(fitted, 47, 16), BLUE)
    assert _thumb(img, "60x100f").size == (60, 40)
    assert _thumb(img, "400x400f").size == (300, 200)
    assert _thumb(_striped(20, 10, vertical=False), "50x50f").size == (20, 10)


def test_zero_side_keeps_the_aspect_ratio() -> None:
    img = _striped(300, 200, vertical=True)
    assert _thumb(img, "0x50").size == (75, 50)
    assert _thumb(img, "50x0").size == (50, 33)  # 33.33 rounded
    assert _thumb(img, "0x50f").size == (75, 50)  # the suffix is ignored
    assert _thumb(_striped(20, 10, vertical=True), "0x50").size == (100, 50)  # enlarged
    whole = _thumb(img, "30x0")
    assert _near(_at(whole, 15, 1), RED) and _near(_at(whole, 15, 18), BLUE)


@pytest.mark.parametrize(
    ("fmt", "source_type", "out_format", "out_type"),
    [
        ("PNG", "image/png", "PNG", "image/png"),
        ("JPEG", "image/jpeg", "JPEG", "image/jpeg"),
        ("GIF", "image/gif", "GIF", "image/gif"),
        ("WEBP", "image/webp", "PNG", "image/png"),  # as PocketBase: webp thumbs are png
    ],
)
def test_the_output_keeps_the_format(
    fmt: str, source_type: str, out_format: str, out_type: str
) -> None:
    data, got_type = thumbs.render(
        _encode(_striped(300, 200, vertical=True), fmt), "100x100", source_type
    )
    assert got_type == out_type
    img = _decode(data)
    assert img.format == out_format
    assert img.size == (100, 100)


def test_transparency_survives_a_png_thumb() -> None:
    img = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (50, 50, 150, 150))
    out = _decode(thumbs.render(_encode(img, "PNG"), "100x100", "image/png")[0])
    assert out.mode == "RGBA"
    assert _at(out, 2, 2)[3] == 0 and _at(out, 50, 50)[3] == 255


def test_jpeg_exif_orientation_is_applied() -> None:
    img = _striped(300, 200, vertical=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encode(img, "JPEG", exif=exif.tobytes())
    out = _decode(thumbs.render(data, "0x60", "image/jpeg")[0])
    assert out.size == (40, 60)  # displayed as 200x300


def test_an_animation_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (120, 120), color) for color in (YELLOW, CYAN, BLUE)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(_decode(out.getvalue()), "n_frames", 1) == 3
    thumb = _decode(thumbs.render(out.getvalue(), "50x50", "image/gif")[0])
    assert getattr(thumb, "n_frames", 1) == 1
    assert _near(_at(thumb.convert("RGB"), 25, 25), YELLOW)


def test_what_cannot_be_thumbed_is_refused() -> None:
    with pytest.raises(ThumbError):
        thumbs.render(b"\x89PNG\r\n\x1a\n not really a png", "100x100", "image/png")
    with pytest.raises(ThumbError):
        thumbs.render(_encode(_striped(30, 30, vertical=True), "PNG"), "0x0", "image/png")
    with pytest.raises(ThumbError):
        thumbs.render(_encode(_striped(30, 30, vertical=True), "PNG"), "big", "image/png")


# --- the Thumbnailer over real storage ------------------------------------------------------


def _stored(tmp_path: Path, img: Image.Image, fmt: str = "PNG") -> tuple[LocalStorage, str]:
    storage = LocalStorage(tmp_path / "storage")
    key = "coll/rec/pic_abcdefghij.png"
    storage.put_bytes(key, _encode(img, fmt))
    return storage, key


def test_concurrent_requests_make_one_thumb(tmp_path: Path) -> None:
    storage, key = _stored(tmp_path, _striped(1200, 900, vertical=True))
    maker = thumbs.Thumbnailer()

    async def many() -> list[str | None]:
        return await asyncio.gather(
            *(maker.ensure(storage, key, "50x50", "image/png") for _ in range(20))
        )

    results = asyncio.run(many())
    want = "coll/rec/thumbs_pic_abcdefghij.png/50x50_pic_abcdefghij.png"
    assert results == [want] * 20
    assert maker.generated == 1
    assert storage.list_prefix("coll/rec/thumbs_pic_abcdefghij.png") == [want]
    folder = tmp_path / "storage/coll/rec/thumbs_pic_abcdefghij.png"
    names = sorted(p.name for p in folder.iterdir())  # the thumb and its sidecar, no temp left
    assert names == ["50x50_pic_abcdefghij.png", "50x50_pic_abcdefghij.png.attrs"]
    assert _decode((folder / "50x50_pic_abcdefghij.png").read_bytes()).size == (50, 50)

    # served from the storage afterwards: a thumb already there is never made again
    marker = _encode(Image.new("RGB", (7, 7), YELLOW), "PNG")
    storage.put_bytes(want, marker)
    assert asyncio.run(maker.ensure(storage, key, "50x50", "image/png")) == want
    assert maker.generated == 1
    assert (folder / "50x50_pic_abcdefghij.png").read_bytes() == marker


def test_a_thumb_that_cannot_be_made_is_none(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    storage.put_bytes("c/r/broken_abcdefghij.png", b"\x89PNG\r\n\x1a\ngarbage")
    maker = thumbs.Thumbnailer()
    assert (
        asyncio.run(maker.ensure(storage, "c/r/broken_abcdefghij.png", "50x50", "image/png"))
        is None
    )
    assert (
        asyncio.run(maker.ensure(storage, "c/r/missing_abcdefghij.png", "50x50", "image/png"))
        is None
    )
    assert storage.list_prefix("c/r/thumbs_broken_abcdefghij.png") == []
    assert maker.generated == 0


def test_generation_runs_off_the_event_loop(tmp_path: Path) -> None:
    storage, key = _stored(tmp_path, Image.effect_noise((3000, 3000), 64).convert("RGB"))
    maker = thumbs.Thumbnailer()

    async def run() -> tuple[float, list[float]]:
        ticks: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        assert await maker.ensure(storage, key, "0x300", "image/png") is not None
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        return elapsed, ticks

    elapsed, ticks = asyncio.run(run())
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert elapsed > 0.05, "the image is too small to tell"
    assert max(gaps) < elapsed / 2, (max(gaps), elapsed)


def test_a_generation_waits_at_most_max_wait_for_a_worker(tmp_path: Path) -> None:
    storage, key = _stored(tmp_path, Image.effect_noise((3000, 3000), 64).convert("RGB"))
    maker = thumbs.Thumbnailer(max_workers=1, max_wait=0.01)

    async def run() -> list[str | None]:
        first = asyncio.ensure_future(maker.ensure(storage, key, "0x300", "image/png"))
        await asyncio.sleep(0.001)  # the first one holds the only worker
        second = await maker.ensure(storage, key, "0x200", "image/png")
        return [await first, second]

    made, refused = asyncio.run(run())
    assert made is not None and refused is None
    assert storage.list_prefix("coll/rec/thumbs_pic_abcdefghij.png") == [made]


def test_pillow_is_imported_only_for_a_thumb() -> None:
    code = (
        "import sys\n"
        "import instance_runtime.server, instance_runtime.apis.files\n"
        "import instance_runtime.core.thumbs\n"
        "print('PIL' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
