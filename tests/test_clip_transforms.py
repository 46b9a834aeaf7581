import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from clip.transforms import clip_preprocess, grid_preprocess, resize_shorter_side

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def normalized(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> the expected CLIP input, written out by hand."""
    return (torch.tensor(array, dtype=torch.float32).permute(2, 0, 1) / 255.0 - MEAN) / STD


def random_image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_uniform_image_gives_normalised_colour():
    image = Image.new("RGB", (300, 200), (10, 128, 250))
    cases = ((clip_preprocess(224), 224), (grid_preprocess(), 448), (grid_preprocess(keep_aspect=True), 448))
    for transform, n in cases:
        x = transform(image)
        assert x.shape == (3, n, n) and x.dtype == torch.float32
        expected = (torch.tensor([10, 128, 250]).view(3, 1, 1) / 255.0 - MEAN) / STD
        torch.testing.assert_close(x, expected.expand(3, n, n), rtol=0, atol=1e-6)


def test_extreme_pixel_values():
    image = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]] * 2, dtype=np.uint8))  # 2x2
    x = clip_preprocess(2)(image)
    torch.testing.assert_close(x[:, 0, 0], (-MEAN / STD).flatten())
    torch.testing.assert_close(x[:, 0, 1], ((1 - MEAN) / STD).flatten())


def test_shorter_side_resize_sizes():
    assert resize_shorter_side(random_image(333, 200), 224).size == (372, 224)   # int(224 * 333 / 200)
    assert resize_shorter_side(random_image(200, 333), 224).size == (224, 372)
    assert resize_shorter_side(random_image(50, 50), 224).size == (224, 224)


def test_resize_then_center_crop():
    image = random_image(300, 200)
    expected = np.array(image.resize((150, 100), Image.BICUBIC))[:, 25:125]   # crop offset (150 - 100) / 2
    torch.testing.assert_close(clip_preprocess(100)(image), normalized(expected))


@pytest.mark.parametrize("w, h, left, top",
                         [(201, 100, 50, 0), (203, 100, 52, 0), (100, 201, 0, 50), (100, 203, 0, 52)])
def test_center_crop_offsets_round_like_torchvision(w, h, left, top):
    # the shorter side is already 100, so no resize; offset = round((L - 100) / 2), half to even
    image = random_image(w, h)
    torch.testing.assert_close(clip_preprocess(100)(image), normalized(np.array(image)[top:top + 100, left:left + 100]))


def test_grid_preprocess_square_and_aspect_options():
    image = random_image(300, 200)
    expected = np.array(image.resize((448, 448), Image.BICUBIC))
    torch.testing.assert_close(grid_preprocess()(image), normalized(expected))
    torch.testing.assert_close(grid_preprocess(keep_aspect=True)(image), clip_preprocess(448)(image))
    assert grid_preprocess(64)(image).shape == (3, 64, 64)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_non_rgb_images_are_converted_first(mode):
    rgb = random_image(40, 30)
    image = rgb.convert(mode)
    expected = np.array(image.convert("RGB").resize((32, 32), Image.BICUBIC))
    torch.testing.assert_close(grid_preprocess(32)(image), normalized(expected))
    expected = np.array(image.convert("RGB").resize((42, 32), Image.BICUBIC))[:, 5:37]  # int(32 * 40 / 30) = 42
    torch.testing.assert_close(clip_preprocess(32)(image), normalized(expected))


def test_transforms_pickle():
    for transform in (clip_preprocess(224), grid_preprocess()):
        assert pickle.loads(pickle.dumps(transform)) == transform
