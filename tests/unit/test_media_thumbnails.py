"""Which thumbnail serves a request (the spec's rules), and thumbnails made with Pillow from real images."""

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from homeserver.handlers.thumbnails import (
    CROP,
    SCALE,
    Box,
    NotAnImage,
    TooLarge,
    choose,
    image_size,
    output_size,
    render,
)

SPEC_BOXES = [Box(32, 32, CROP), Box(96, 96, CROP), Box(320, 240, SCALE), Box(640, 480, SCALE), Box(800, 600, SCALE)]


@pytest.mark.parametrize(
    "image, box, size",
    [
        ((1000, 700), Box(32, 32, CROP), (32, 32)),
        ((1000, 700), Box(320, 240, SCALE), (320, 224)),
        ((700, 1000), Box(320, 240, SCALE), (168, 240)),
        ((50, 200), Box(96, 96, CROP), (50, 50)),  # never enlarged: the largest square inside, as it is
        ((300, 200), Box(800, 600, SCALE), (300, 200)),
    ],
)
def test_output_sizes_keep_within_the_box_and_never_upscale(image: tuple, box: Box, size: tuple) -> None:
    assert output_size(*image, box) == size


@pytest.mark.parametrize(
    "want, method, chosen",
    [
        ((32, 32), CROP, Box(32, 32, CROP)),
        ((40, 40), CROP, Box(96, 96, CROP)),
        ((100, 100), CROP, Box(320, 240, SCALE)),  # no crop box is big enough: a scaled one covering it
        ((320, 240), SCALE, Box(320, 240, SCALE)),
        ((300, 300), SCALE, Box(320, 240, SCALE)),  # 320x224: as wide as asked, letterboxed by the client
        ((500, 500), SCALE, Box(640, 480, SCALE)),
        ((2000, 2000), SCALE, None),  # bigger than every box: the original
        ((50, 50), SCALE, Box(320, 240, SCALE)),  # scale requests are never served a crop
    ],
)
def test_choose_takes_the_smallest_box_that_is_big_enough(want: tuple, method: str, chosen: Box | None) -> None:
    assert choose(1000, 700, *want, method, SPEC_BOXES) == chosen


def test_an_image_no_bigger_than_asked_for_is_served_as_it_is() -> None:
    assert choose(30, 20, 32, 32, CROP, SPEC_BOXES) is None
    assert choose(300, 200, 320, 240, SCALE, SPEC_BOXES) is None
    # A box that would not shrink the image is no thumbnail either.
    assert choose(700, 500, 700, 480, SCALE, SPEC_BOXES) is None


def _save(tmp_path: Path, image: Image.Image, name: str, **params: object) -> str:
    path = tmp_path / name
    image.save(path, **params)
    return str(path)


def _decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_jpeg_crop_and_scale_thumbnails_have_the_right_size(tmp_path: Path) -> None:
    path = _save(tmp_path, Image.new("RGB", (1600, 1200), (200, 40, 40)), "photo.jpg")
    data, content_type = render(path, Box(96, 96, CROP), 10**8)
    assert content_type == "image/jpeg" and _decode(data).size == (96, 96)
    data, _ = render(path, Box(640, 480, SCALE), 10**8)
    assert _decode(data).size == (640, 480)


def test_png_gif_and_webp_become_png_and_keep_transparency(tmp_path: Path) -> None:
    png = _save(tmp_path, Image.new("RGBA", (400, 400), (0, 0, 255, 100)), "a.png")
    data, content_type = render(png, Box(32, 32, CROP), 10**8)
    thumb = _decode(data)
    assert content_type == "image/png" and thumb.size == (32, 32) and thumb.mode == "RGBA"
    assert thumb.getpixel((5, 5))[3] == 100
    frames = [Image.new("P", (200, 100), i) for i in range(3)]
    gif = str(tmp_path / "a.gif")
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    data, content_type = render(gif, Box(320, 240, SCALE), 10**8)
    assert content_type == "image/png" and _decode(data).size == (200, 100)
    webp = _save(tmp_path, Image.new("RGB", (1000, 500), (1, 2, 3)), "a.webp")
    data, content_type = render(webp, Box(320, 240, SCALE), 10**8)
    assert content_type == "image/png" and _decode(data).size == (320, 160)


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    path = _save(tmp_path, Image.new("RGB", (800, 400)), "rotated.jpg", exif=exif.tobytes())
    assert image_size(path, 10**8) == (400, 800)
    data, _ = render(path, Box(320, 240, SCALE), 10**8)
    assert _decode(data).size == (120, 240)


def test_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    path = _save(tmp_path, Image.new("L", (2000, 2000)), "big.png")
    with pytest.raises(TooLarge):
        image_size(path, 1_000_000)
    with pytest.raises(TooLarge):
        render(path, Box(32, 32, CROP), 1_000_000)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_decompression_bomb_header_is_refused(tmp_path: Path) -> None:
    # A few bytes that claim 100000 x 100000 pixels: refused from the header, nothing is decoded.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    bomb = tmp_path / "bomb.png"
    chunks = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    for limit in (32_000_000, 10**12):  # ours, and Pillow's own guard above it
        with pytest.raises(TooLarge):
            render(str(bomb), Box(32, 32, CROP), limit)


def test_content_that_is_not_an_allowed_image_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "x.png"
    text.write_bytes(b"<html>not an image</html>")
    with pytest.raises(NotAnImage):
        image_size(str(text), 10**8)
    bmp = _save(tmp_path, Image.new("RGB", (100, 100)), "x.bmp")  # Pillow reads BMP, but it is not allowed here
    with pytest.raises(NotAnImage):
        render(bmp, Box(32, 32, CROP), 10**8)
