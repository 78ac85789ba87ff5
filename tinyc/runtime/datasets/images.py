"""Image files (PNG, JPEG, ...) as raw uint8 arrays shaped for one example of a program input.

Pillow reads them (the optional extra `tinyc[images]`, imported only here and only when used).
Nothing is changed silently: an image of another size, or a colour image for a greyscale input,
is refused naming the file and both sizes unless the caller asks to convert (`resize`, `grey`).
What is converted without asking loses nothing: a colour image whose pixels are all grey, a
black-and-white image, a grey image for an RGB input (its value in each channel), an alpha
channel that is opaque everywhere, the rotation a camera records in EXIF. What has no one right
8-bit reading is refused: transparent pixels (their colour is undefined) and 16-bit or float
pixels (their range is the writer's choice). A file that is not a whole image is a one-line error.

Memory stays bounded: the size is read from the file's header, so an image of the wrong size is
refused before it is decoded, and with `resize` one of more than `MAX_PIXELS` pixels is refused
too (a JPEG is first decoded at a reduced scale, as close as it can to the size asked for).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from tinyc.ir.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_PIXELS = 40_000_000  # at most 160 MB decoded (RGBA); a 48-megapixel JPEG still reads (reduced)
_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that turn the image a quarter: width and height swap
_ORIENTATION = 0x0112
_GREY_MODES = ("1", "L")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image files needs Pillow", hint="pip install 'tinyc[images]'") from None
    return Image


def read_image(path: str, shape: Sequence[int], resize: bool = False, grey: bool = False) -> np.ndarray:
    """The image at `path` as uint8 of `shape`: (H, W) or (H, W, 1) greyscale, (H, W, 3) RGB."""
    Image = _pillow()
    shape = tuple(shape)
    channels = shape[2] if len(shape) == 3 else None
    if len(shape) not in (2, 3) or channels not in (None, 1, 3) or not all(isinstance(d, int) for d in shape):
        raise DataError(f"{path}: the program's input takes examples of shape {list(shape)}, not an image "
                        "(height x width, with 1 or 3 channels)")
    height, width = shape[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower, limit says it in one line
        img = _open(Image, path)
        try:
            w, h = img.size
            orientation = _orientation(img, loaded=False)
            if orientation in _SWAPS_SIDES:
                w, h = h, w
            # a JPEG to be scaled is decoded at 1/2, 1/4 or 1/8 scale, still at least the size asked
            if _check_size(path, (w, h), (width, height), resize) and img.format in ("JPEG", "MPO"):
                img.draft(img.mode, (height, width) if orientation in _SWAPS_SIDES else (width, height))
            if img.size[0] * img.size[1] > MAX_PIXELS:
                raise DataError(f"{path}: the image is {w}x{h} pixels, more than the {MAX_PIXELS:,} pixels "
                                "tinyc decodes", hint="scale it down first")
            _load(img, path)
            return _pixels(Image, img, path, (width, height), channels, resize, grey).reshape(shape)
        finally:
            img.close()


def _open(Image: Any, path: str) -> Any:
    """The image's header (Pillow decodes lazily), or a one-line error for a file that is not one."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError:
        raise DataError(f"{path}: the image has more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, "
                        f"more than the {MAX_PIXELS:,} pixels tinyc decodes", hint="scale it down first") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # UnidentifiedImageError is an OSError
        raise DataError(f"{path}: cannot read the image ({getattr(e, 'strerror', None) or e})") from None


def _load(img: Any, path: str) -> None:
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt data after the header
        raise DataError(f"{path}: cannot read the image ({getattr(e, 'strerror', None) or e})") from None


def _check_size(path: str, size: tuple[int, int], want: tuple[int, int], resize: bool) -> bool:
    """Whether the image must be scaled; an error when it must and the caller did not ask."""
    if size == want:
        return False
    if not resize:
        raise DataError(f"{path}: the image is {size[0]}x{size[1]} pixels, but the input takes {want[0]}x{want[1]}",
                        hint="--resize scales it")
    return True


def _orientation(img: Any, loaded: bool = True) -> int:
    """The EXIF orientation (1: as stored); before loading, from the header only (a PNG's EXIF may
    follow its pixels, and Pillow would decode them to find it)."""
    if not loaded and img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        return int(img.getexif().get(_ORIENTATION, 1))
    except (OSError, SyntaxError, ValueError, TypeError):  # unreadable EXIF: as stored
        return 1


def _pixels(Image: Any, img: Any, path: str, size: tuple[int, int], channels: int | None,
            resize: bool, grey: bool) -> np.ndarray:
    """The decoded image as uint8 [H, W] or [H, W, 3]: upright, opaque, in the input's colours and size."""
    if _orientation(img) != 1:
        from PIL import ImageOps

        img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I") or img.mode == "F":
        depth = "32-bit float" if img.mode == "F" else "16-bit" if img.mode.startswith("I;16") else "32-bit"
        raise DataError(f"{path}: the image has {depth} pixels (Pillow mode {img.mode}), but the input takes "
                        "8-bit pixels", hint="save it with 8 bits per channel (tinyc does not guess its range)")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        img = img.convert("LA" if img.mode in _GREY_MODES + ("LA", "La") else "RGBA")
        if np.asarray(img.getchannel("A")).min() < 255:
            raise DataError(f"{path}: the image has transparent pixels, and their colour is undefined",
                            hint="flatten it onto its background first")
        img = img.convert("L" if img.mode == "LA" else "RGB")
    if channels == 3:
        img = img.convert("RGB")  # a grey image: its value in all three channels
    elif img.mode not in _GREY_MODES:
        rgb = img.convert("RGB")
        a = np.asarray(rgb)
        if not grey and not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
            raise DataError(f"{path}: a colour image (Pillow mode {img.mode}), but the input takes greyscale images",
                            hint="--grey converts it")
        img = rgb.convert("L")  # exact where R = G = B: the weights of L sum to one
    elif img.mode != "L":
        img = img.convert("L")
    if _check_size(path, img.size, size, resize):
        img = img.resize(size, Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)
