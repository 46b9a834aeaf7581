import torch
import torch.nn.functional as F

import clip


def test_inference_helpers_match_model_and_carry_no_grad():
    torch.manual_seed(0)
    model = clip.CLIP(**clip.tiny_clip_config("resnet")).eval()
    images = torch.randn(3, 3, 64, 64)
    texts = ["a photo of a cat", "two dogs", "a red square"]
    text = clip.text_embeddings(model, texts, batch_size=2)
    image = clip.image_embeddings(model, images, batch_size=2)
    grid = clip.grid_features(model, images, batch_size=2)
    assert not text.requires_grad and not image.requires_grad and not grid.requires_grad
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(3))
    with torch.no_grad():
        tokens = clip.tokenize(texts, context_length=32)
        torch.testing.assert_close(text, F.normalize(model.encode_text(tokens), dim=-1))
        torch.testing.assert_close(image, F.normalize(model.encode_image(images), dim=-1))
        expected_grid = model.visual_grid(images)
    assert grid.shape == (3, 2, 2, 512)
    torch.testing.assert_close(grid[:, 1, 0], expected_grid[:, :, 1, 0])  # (row, col) order
    raw = clip.text_embeddings(model, texts, normalize=False)
    torch.testing.assert_close(F.normalize(raw, dim=-1), text)
    batches = (chunk for chunk in images.split(2))                  # an iterable of batches, encoded as they come
    assert torch.equal(clip.image_embeddings(model, batches), image)
