"""Image files (PNG, JPEG, ...) as raw uint8 arrays shaped for one example of a program input.

Pillow reads them (the optional extra `tinyc[images]`, imported only here and only when used).
Nothing is changed silently: a colour image for a greyscale input, or an image of another size,
is refused naming the file and both sizes unless the caller asks to convert (`grey`, `resize`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyc.ir.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


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
    try:
        with Image.open(path) as img:
            img.load()
    except OSError as e:  # Pillow's UnidentifiedImageError is an OSError too
        raise DataError(f"{path}: cannot read the image ({e.strerror or e})") from None
    mode = "RGB" if channels == 3 else "L"
    if img.mode != mode:
        if mode == "L" and not grey:
            raise DataError(f"{path}: a {img.mode} image, but the input takes greyscale images",
                            hint="--grey converts it")
        img = img.convert(mode)
    height, width = shape[:2]
    if img.size != (width, height):
        if not resize:
            raise DataError(f"{path}: the image is {img.size[0]}x{img.size[1]} pixels, but the input takes "
                            f"{width}x{height}", hint="--resize scales it")
        img = img.resize((width, height), Image.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    return array.reshape(shape)
