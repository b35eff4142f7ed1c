"""Loading images of every common kind, range conversions and saving."""
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import images


def check_model_image(x, size):
    assert x.shape == (1, 3, size, size)
    assert x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1


def save(array, path, mode=None, **kwargs):
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path, **kwargs)
    return path


def gradient(height, width, channels=None):
    ramp = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    if channels:
        ramp = np.stack([ramp, ramp[::-1], np.full_like(ramp, 128)][:channels], axis=2)
    return ramp.round().astype(np.uint8)


def test_grayscale_png_loads_as_rgb(tmp_path):
    x = images.load_image(save(gradient(20, 20), tmp_path / "gray.png"), size=8)
    check_model_image(x, 8)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])


def test_rgba_png_is_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # black, fully transparent
    rgba[:, :4, 3] = 255                         # left half opaque black
    x = images.load_image(save(rgba, tmp_path / "rgba.png"), size=8)
    check_model_image(x, 8)
    assert (x[..., :, 0] == -1).all() and (x[..., :, -1] == 1).all()


def test_16_bit_grayscale_png_keeps_its_brightness(tmp_path):
    array = np.zeros((8, 8), dtype=np.uint16)
    array[:, 4:] = 65000
    path = save(array, tmp_path / "gray16.png")
    with Image.open(path) as opened:
        assert opened.mode in ("I;16", "I")  # the file really is 16-bit
    x = images.load_image(path, size=8)
    check_model_image(x, 8)
    assert (x[..., 4:] > 0.95).all()
    assert (x[..., :4] == -1).all()


def test_palette_png_loads(tmp_path):
    x = images.load_image(save(gradient(12, 12, channels=3), tmp_path / "palette.png", mode="P"), size=8)
    check_model_image(x, 8)


def test_non_square_jpeg_is_centre_cropped_and_resized(tmp_path):
    x = images.load_image(save(gradient(30, 50, channels=3), tmp_path / "wide.jpg", quality=95), size=16)
    check_model_image(x, 16)


@pytest.mark.parametrize("name", list(images.NAMED_IMAGES))
def test_named_image_loads(name):
    check_model_image(images.load_image(name, size=16), 16)


def test_range_conversions_round_trip():
    x = torch.linspace(-1, 1, 3 * 4 * 4).reshape(1, 3, 4, 4)
    torch.testing.assert_close(images.to_model_range(images.to_unit_range(x)), x)
    assert images.to_unit_range(torch.tensor([-3.0, 3.0])).tolist() == [0.0, 1.0]  # clamped


@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 3, 5, 7)])
def test_to_uint8_gives_height_width_channels_bytes(shape):
    x = torch.zeros(shape)
    x[..., 0, 0] = 1
    x[..., 0, 1] = -1
    array = images.to_uint8(x)
    assert array.shape == (5, 7, 3) and array.dtype == np.uint8
    assert array[0, 0].tolist() == [255] * 3 and array[0, 1].tolist() == [0] * 3


def test_save_image_writes_a_png_that_reloads(tmp_path):
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = images.save_image(x, tmp_path / "sub" / "x.png")
    assert path.suffix == ".png" and path.is_file()
    torch.testing.assert_close(images.load_image(path, size=8), x, rtol=0, atol=1 / 255 + 1e-6)
    with Image.open(images.save_image(x, tmp_path / "big.png", scale=3)) as big:
        assert big.size == (24, 24)


# ---- bad inputs ----

def test_text_file_with_png_suffix_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ValueError, match="path_or_name: .* is not an image file"):
        images.load_image(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="path_or_name: no such file .*missing.png"):
        images.load_image(tmp_path / "missing.png")


def test_unknown_named_image_lists_the_names():
    with pytest.raises(ValueError, match=r"path_or_name must be one of the named images \['astronaut'"):
        images.load_image("astronot")


@pytest.mark.parametrize("size", [0, -8, 8.0, True, 100_000])
def test_bad_size_is_rejected(size):
    with pytest.raises(ValueError, match=rf"size must be an integer in \[1, {images.MAX_SIZE}\] .*; got {size!r}\."):
        images.load_image("astronaut", size=size)


def test_a_truncated_file_is_a_value_error_naming_it(tmp_path):
    path = save(gradient(64, 64, 3), tmp_path / "whole.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    with pytest.raises(ValueError, match="path_or_name: .*truncated.png' is a damaged image file"):
        images.load_image(truncated)


def test_a_folder_is_a_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="path_or_name must be an image file; got .*, which is a folder"):
        images.load_image(tmp_path)


@pytest.mark.parametrize("crop_box", [(0, 0, 100), (0, 0, 100.0, 100), "0,0,100,100", (0, 0, True, 100)])
def test_a_crop_box_that_is_not_four_integers_is_rejected(crop_box):
    with pytest.raises(ValueError, match=r"crop_box must be None or four integers \(left, top, right, bottom\)"):
        images.load_image("astronaut", crop_box=crop_box)


@pytest.mark.parametrize("convert", [images.to_model_range, images.to_unit_range])
@pytest.mark.parametrize("x, match", [(torch.zeros(3, 4, 4, dtype=torch.uint8), "floating-point tensor .* got dtype "
                                       "torch.uint8"), (np.zeros((3, 4, 4)), "x must be a torch.Tensor")])
def test_range_conversions_reject_integer_tensors_and_arrays(convert, x, match):
    with pytest.raises(ValueError, match=match):
        convert(x)


def test_crop_box_outside_the_image_is_rejected():
    with pytest.raises(ValueError, match="crop_box must lie inside the 512x512 image"):
        images.load_image("astronaut", crop_box=(0, 0, 600, 600))


def test_to_uint8_rejects_a_batch():
    with pytest.raises(ValueError, match=r"x must have shape \(3, H, W\) or \(1, 3, H, W\)"):
        images.to_uint8(torch.zeros(2, 3, 4, 4))
