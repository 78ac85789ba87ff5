"""Image files as one example: what is read equals the pixels written, what is converted without
asking loses nothing (checked against the source array), and every file that has no one right
8-bit reading, or is not a whole image, or is too large to decode, is a one-line DataError."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from tinyc.ir.errors import DataError
from tinyc.runtime.datasets.images import MAX_PIXELS, read_image

Image = pytest.importorskip("PIL.Image")

X = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
COLOUR = np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)


def save(path: Path, array: np.ndarray, **kw) -> str:
    Image.fromarray(array).save(path, **kw)
    return str(path)


def refusal(path: str, shape=(28, 28), **kw) -> str:
    with pytest.raises(DataError) as e:
        read_image(path, shape, **kw)
    assert "\n" not in e.value.message and e.value.message.startswith(f"{path}: ")
    return e.value.message[len(path) + 2:]


def png_header(path: Path, width: int, height: int) -> str:
    """A PNG whose header says width x height but whose pixel data is a few bytes: decoding it fails."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8))
                     + chunk(b"IEND", b""))
    return str(path)


def test_png_and_jpeg_read_as_their_pixels(tmp_path):
    np.testing.assert_array_equal(read_image(save(tmp_path / "x.png", X), (28, 28)), X)
    np.testing.assert_array_equal(read_image(save(tmp_path / "x.png", X), (28, 28, 1)), X[..., None])
    jpeg = save(tmp_path / "x.jpg", X, quality=90)
    np.testing.assert_array_equal(read_image(jpeg, (28, 28)), np.asarray(Image.open(jpeg)))
    np.testing.assert_array_equal(read_image(save(tmp_path / "c.png", COLOUR), (28, 28, 3)), COLOUR)


def test_lossless_conversions_give_the_source_pixels(tmp_path):
    grey_rgb = save(tmp_path / "grey_rgb.png", np.repeat(X[..., None], 3, axis=-1))  # grey, saved as RGB
    np.testing.assert_array_equal(read_image(grey_rgb, (28, 28)), X)
    np.testing.assert_array_equal(read_image(save(tmp_path / "g.png", X), (28, 28, 3)), np.repeat(X[..., None], 3, -1))
    opaque = np.dstack([COLOUR, np.full((28, 28), 255, np.uint8)])
    np.testing.assert_array_equal(read_image(save(tmp_path / "rgba.png", opaque), (28, 28, 3)), COLOUR)
    la = Image.fromarray(X).convert("LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(str(tmp_path / "la.png"), (28, 28)), X)
    bits = X > 127
    Image.fromarray(bits).save(tmp_path / "bw.png")  # mode "1"
    np.testing.assert_array_equal(read_image(str(tmp_path / "bw.png"), (28, 28)), np.where(bits, 255, 0))


def test_exif_rotation_is_applied_and_its_sides_swapped(tmp_path):
    wide = np.random.default_rng(2).integers(0, 256, (20, 28), dtype=np.uint8)  # 28 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    path = save(tmp_path / "turned.png", np.ascontiguousarray(np.rot90(wide)), exif=exif)  # stored 20 wide
    np.testing.assert_array_equal(read_image(path, (20, 28)), wide)


def test_colour_for_a_greyscale_input_needs_grey(tmp_path):
    path = save(tmp_path / "c.png", COLOUR)
    assert refusal(path) == "a colour image (Pillow mode RGB), but the input takes greyscale images"
    want = np.asarray(Image.fromarray(COLOUR).convert("L"))
    np.testing.assert_array_equal(read_image(path, (28, 28), grey=True), want)


def test_sizes_differ_unless_resize(tmp_path):
    one = save(tmp_path / "one.png", np.full((1, 1), 77, np.uint8))
    assert refusal(one) == "the image is 1x1 pixels, but the input takes 28x28"
    np.testing.assert_array_equal(read_image(one, (28, 28), resize=True), np.full((28, 28), 77))
    wide = save(tmp_path / "wide.png", np.full((30, 40), 9, np.uint8))
    assert refusal(wide, (28, 28)) == "the image is 40x30 pixels, but the input takes 28x28"


@pytest.mark.parametrize("kind", ["16-bit", "transparent", "truncated", "text", "empty", "corrupt"])
def test_files_without_one_right_reading_are_refused(tmp_path, kind):
    path = tmp_path / "bad.png"
    if kind == "16-bit":
        Image.fromarray(X.astype(np.uint16) * 257).save(path)
    elif kind == "transparent":
        Image.fromarray(np.dstack([COLOUR, np.where(X > 9, 255, 0).astype(np.uint8)])).save(path)
    elif kind in ("truncated", "corrupt"):
        Image.fromarray(X).save(path)
        data = bytearray(path.read_bytes())
        if kind == "corrupt":
            data[20] ^= 0xFF  # inside the header chunk: its checksum fails
        path.write_bytes(bytes(data[:len(data) // 2] if kind == "truncated" else data))
    else:
        path.write_text("" if kind == "empty" else "not an image\n")
    options = [{}, {"grey": True, "resize": True}]  # no option makes them readable
    for kw in options:
        message = refusal(str(path), **kw)
        assert message.startswith({"16-bit": "the image has 16-bit pixels (Pillow mode I;16",
                                   "transparent": "the image has transparent pixels",
                                   }.get(kind, "cannot read the image (")), message


def test_a_huge_image_is_refused_before_it_is_decoded(tmp_path):
    # each file's pixel data is 8 bytes: had it been decoded, the error would say it is truncated
    side = int(MAX_PIXELS ** 0.5) + 1
    for width, height in [(side, side), (10_000, 10_000), (20_000, 20_000)]:  # over ours; Pillow's warning; its error
        path = png_header(tmp_path / f"{width}.png", width, height)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing printed besides the one line
            messages = [refusal(path), refusal(path, resize=True)]
        if width * height > 2 * Image.MAX_IMAGE_PIXELS:  # Pillow refuses to open it: the size is not at hand
            too_many = f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels, more than the {MAX_PIXELS:,} pixels tinyc decodes"
            assert messages == [f"the image has more than {too_many}"] * 2
        else:
            assert messages == [f"the image is {width}x{height} pixels, but the input takes 28x28",
                                f"the image is {width}x{height} pixels, more than the {MAX_PIXELS:,} pixels tinyc decodes"]


def test_a_jpeg_too_large_to_decode_whole_is_read_at_a_reduced_scale(tmp_path):
    path = save(tmp_path / "big.jpg", np.full((5000, 9000), 30, np.uint8))  # 45 megapixels
    assert 9000 * 5000 > MAX_PIXELS
    got = read_image(path, (28, 28), resize=True)
    assert got.shape == (28, 28) and np.abs(got.astype(int) - 30).max() <= 1
