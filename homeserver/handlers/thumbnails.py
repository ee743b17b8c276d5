"""Thumbnails: which configured box serves a request (pure), and making one with Pillow (blocking: run it
in a thread).

The spec's rules ("Thumbnails" in the content repository module): never upscale; never return a thumbnail
smaller than asked for unless the original makes that impossible; when the original is no bigger than
asked for, return the original. "crop" fills the box and cuts what overflows; "scale" keeps the whole
image inside the box. A client letterboxes a scaled thumbnail into the box it asked for, so a scaled one
is big enough when it is at least as wide or at least as tall as asked; a cropped one must be both.
"""

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

CROP, SCALE = "crop", "scale"
# Pillow opens only these, whatever type the uploader claimed: each is a decoder exposed to anyone who
# can upload, so the list is kept short.
THUMBNAIL_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
THUMBNAILABLE_TYPES = frozenset(THUMBNAIL_FORMATS.values())
JPEG_QUALITY = 80
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_ORIENTATION_TAG = 0x0112

# The pixel limit is checked explicitly once the header is read (TooLarge), so Pillow's own warning for
# large images only adds noise; its DecompressionBombError (twice its limit) is still caught.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class NotAnImage(Exception):
    """The content is not an image Pillow may open here."""


class TooLarge(Exception):
    """The image has more pixels than the configured limit."""


@dataclass(frozen=True)
class Box:
    width: int
    height: int
    method: str


def output_size(width: int, height: int, box: Box) -> tuple[int, int]:
    """The size of `box`'s thumbnail of a `width` x `height` image, never larger than the image."""
    if box.method == SCALE:
        factor = min(box.width / width, box.height / height, 1.0)
        return max(1, round(width * factor)), max(1, round(height * factor))
    # The largest region of the box's shape inside the image, shrunk to the box if it is bigger.
    region_w = min(width, height * box.width / box.height)
    region_h = region_w * box.height / box.width
    factor = min(box.width / region_w, 1.0)
    return max(1, round(region_w * factor)), max(1, round(region_h * factor))


def choose(width: int, height: int, want_w: int, want_h: int, method: str, boxes: list[Box]) -> Box | None:
    """The box whose thumbnail serves a request for `want_w` x `want_h` by `method`: the smallest that is
    big enough, preferring the method asked for (a crop request may be served by a scaled thumbnail that
    covers it, never the reverse: a crop would cut what the client wants to see). None: serve the original."""
    if width <= want_w and height <= want_h:
        return None

    def big_enough(box: Box) -> bool:
        w, h = output_size(width, height, box)
        if (w, h) == (width, height):
            return False  # no smaller than the original: serve that
        if method == SCALE:
            return w >= want_w or h >= want_h
        return w >= want_w and h >= want_h

    for kind in (method, SCALE) if method == CROP else (SCALE,):
        fits = [box for box in boxes if box.method == kind and big_enough(box)]
        if fits:
            return min(fits, key=lambda box: _area(output_size(width, height, box)))
    return None


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _open(path: str, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(path, formats=list(THUMBNAIL_FORMATS))
    except Image.DecompressionBombError:
        raise TooLarge() from None
    except (OSError, SyntaxError, ValueError):  # what Pillow raises for content it cannot read
        raise NotAnImage() from None
    if image.width * image.height > max_pixels:
        image.close()
        raise TooLarge()
    return image


def image_size(path: str, max_pixels: int) -> tuple[int, int]:
    """Width and height as displayed (EXIF rotation applied), from the header alone."""
    with _open(path, max_pixels) as image:
        return _displayed_size(image)


def _displayed_size(image: Image.Image) -> tuple[int, int]:
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG)
    except Exception:  # a broken EXIF block is ignored, as viewers ignore it
        orientation = None
    return (image.height, image.width) if orientation in _ROTATED else (image.width, image.height)


def render(path: str, box: Box, max_pixels: int) -> tuple[bytes, str]:
    """The thumbnail of the image at `path` for `box`: (bytes, content type). JPEG stays JPEG; the other
    formats (which may be transparent) become PNG; an animation gives its first frame."""
    with _open(path, max_pixels) as image:
        jpeg = image.format == "JPEG"
        try:
            size = output_size(*_displayed_size(image), box)
            if jpeg:
                side = max(size)
                image.draft("RGB", (side, side))  # decode at a reduced scale, still at least this big
            upright = ImageOps.exif_transpose(image)
            transparent = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
            # Palette images are converted first: Pillow resizes them without interpolation.
            upright = upright.convert("RGBA" if transparent and not jpeg else "RGB")
            if box.method == CROP:
                thumb = ImageOps.fit(upright, size, Image.Resampling.LANCZOS)
            else:
                thumb = upright.resize(size, Image.Resampling.LANCZOS)
        except (OSError, SyntaxError, ValueError):
            raise NotAnImage() from None
    out = io.BytesIO()
    if jpeg:
        thumb.save(out, "JPEG", quality=JPEG_QUALITY)
        return out.getvalue(), "image/jpeg"
    thumb.save(out, "PNG")
    return out.getvalue(), "image/png"
