import io

import numpy as np
import pytest
from PIL import Image

from shuffle_r1_jax.processing.image_io import ImageDecodeError, decode_image


def _png_bytes(mode="RGB", size=(12, 9)):
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decodes_bytes_path_record_and_pil(tmp_path):
    data = _png_bytes()
    path = tmp_path / "x.png"
    path.write_bytes(data)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    for source in (
        data,
        bytearray(data),
        str(path),
        path,
        {"bytes": data, "path": None},
        {"bytes": None, "path": str(path)},
        Image.open(io.BytesIO(data)),
    ):
        image = decode_image(source)
        assert image.mode == "RGB" and image.size == (12, 9)
        np.testing.assert_array_equal(np.asarray(image), expected)


def test_transparency_composited_on_white():
    pixels = np.zeros((2, 2, 4), np.uint8)  # fully transparent black
    image = decode_image(Image.fromarray(pixels, mode="RGBA"))
    assert np.asarray(image).min() == 255


def test_corrupt_bytes_raise_decode_error_naming_source():
    with pytest.raises(ImageDecodeError, match=r"<12 bytes>"):
        decode_image(b"not an image")


def test_truncated_png_raises_decode_error():
    data = _png_bytes(size=(64, 64))
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 2])


def test_missing_file_and_empty_record(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageDecodeError, match="missing.png"):
        decode_image(str(missing))
    with pytest.raises(ImageDecodeError, match="neither bytes nor path"):
        decode_image({"bytes": None, "path": None})


def test_unsupported_type_is_a_type_error():
    with pytest.raises(TypeError):
        decode_image(12345)
