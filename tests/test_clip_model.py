"""CLIP model math against independent computations (torch.nn reference layers, functional code)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clip
from clip.layers import resize_pos_embed
from clip.model import default_heads, infer_config

TINY_RN = clip.tiny_clip_config("resnet")
TINY_VIT = clip.tiny_clip_config("vit")
SMALL_RN = dict(TINY_RN, vision_layers=(2, 1, 3, 1), vision_width=32, image_resolution=96, embed_dim=96,
                transformer_width=192, transformer_heads=3, transformer_layers=2, context_length=24)

# Published architectures of OpenAI's checkpoints.
OFFICIAL = {
    "RN50": dict(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                 vision_patch_size=None, transformer_width=512, transformer_heads=8, transformer_layers=12),
    "RN101": dict(embed_dim=512, image_resolution=224, vision_layers=(3, 4, 23, 3), vision_width=64,
                  vision_patch_size=None, transformer_width=512, transformer_heads=8, transformer_layers=12),
    "RN50x4": dict(embed_dim=640, image_resolution=288, vision_layers=(4, 6, 10, 6), vision_width=80,
                   vision_patch_size=None, transformer_width=640, transformer_heads=10, transformer_layers=12),
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=32, transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=16, transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-L/14": dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024,
                     vision_patch_size=14, transformer_width=768, transformer_heads=12, transformer_layers=12),
}


def randomized(config: dict, seed: int = 0) -> clip.CLIP:
    """A model in eval mode whose every parameter and BatchNorm statistic is random (nothing zero-initialised)."""
    torch.manual_seed(seed)
    model = clip.CLIP(**config)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")) \
                    or ".bn" in name and name.endswith("weight") or name.endswith("downsample.1.weight"):
                t.uniform_(0.5, 1.5)
            elif name != "logit_scale":
                t.normal_(0, 0.05)
    return model.eval()


def tokens_for(model: clip.CLIP, texts: list[str]) -> torch.Tensor:
    return clip.tokenize(texts, context_length=model.context_length)


TEXTS = ["a photo of a cat", "A photo depicts a small red circle left of a large blue square.", "dogs"]


# ---- architecture inference -------------------------------------------------------------------

@pytest.mark.parametrize("name", list(OFFICIAL))
def test_infer_config_official_architectures(name):
    config = dict(OFFICIAL[name], context_length=77, vocab_size=49408)
    with torch.device("meta"):
        model = clip.CLIP(**config)
    assert infer_config(model.state_dict()) == config


def test_heads_rule_matches_openai_and_stays_valid():
    for width in (512, 640, 768, 1024, 2048, 2560, 3072, 4096):
        assert default_heads(width) == width // 64
    for width in (8, 16, 48, 100, 128, 200, 320):
        heads = default_heads(width)
        assert heads >= 1 and width % heads == 0
    assert default_heads(16) == 1 and default_heads(128) == 2 and default_heads(200) == 2


@pytest.mark.parametrize("config", [TINY_RN, TINY_VIT, SMALL_RN], ids=["tiny-resnet", "tiny-vit", "small-resnet"])
def test_build_model_round_trip(config):
    model = randomized(config)
    state = model.state_dict()
    state_copy = dict(state)
    rebuilt = clip.build_model(state)
    assert state.keys() == state_copy.keys()
    assert rebuilt.config == config
    assert not rebuilt.training
    images = torch.randn(2, 3, config["image_resolution"], config["image_resolution"])
    tokens = tokens_for(model, TEXTS)
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), rebuilt.encode_image(images))
        assert torch.equal(model.encode_text(tokens), rebuilt.encode_text(tokens))


def test_build_model_ignores_torchscript_scalars_and_rejects_other_dicts():
    model = randomized(TINY_RN)
    state = dict(model.state_dict(), input_resolution=torch.tensor(64), context_length=torch.tensor(32),
                 vocab_size=torch.tensor(49408))
    clip.build_model(state)
    with pytest.raises(KeyError, match="text_projection"):
        clip.build_model({"weight": torch.zeros(3)})


# ---- independent references --------------------------------------------------------------------

def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def reference_layers(sd: dict, prefix: str, width: int, heads: int) -> list[nn.TransformerEncoderLayer]:
    """torch.nn pre-LN encoder layers carrying the weights of `prefix`.resblocks.*"""
    layers, i = [], 0
    while f"{prefix}.resblocks.{i}.ln_1.weight" in sd:
        p = f"{prefix}.resblocks.{i}"
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation=quick_gelu,
                                           batch_first=True, norm_first=True).eval()
        layer.load_state_dict({
            "self_attn.in_proj_weight": sd[f"{p}.attn.in_proj_weight"],
            "self_attn.in_proj_bias": sd[f"{p}.attn.in_proj_bias"],
            "self_attn.out_proj.weight": sd[f"{p}.attn.out_proj.weight"],
            "self_attn.out_proj.bias": sd[f"{p}.attn.out_proj.bias"],
            "linear1.weight": sd[f"{p}.mlp.c_fc.weight"], "linear1.bias": sd[f"{p}.mlp.c_fc.bias"],
            "linear2.weight": sd[f"{p}.mlp.c_proj.weight"], "linear2.bias": sd[f"{p}.mlp.c_proj.bias"],
            "norm1.weight": sd[f"{p}.ln_1.weight"], "norm1.bias": sd[f"{p}.ln_1.bias"],
            "norm2.weight": sd[f"{p}.ln_2.weight"], "norm2.bias": sd[f"{p}.ln_2.bias"],
        })
        layers.append(layer)
        i += 1
    return layers


def reference_encode_text(model: clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """Full-context text encoder: embeddings, causal nn layers, ln_final, EOT row, projection."""
    sd = model.state_dict()
    width = sd["ln_final.weight"].shape[0]
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"][:tokens.shape[1]]
    mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1])
    for layer in reference_layers(sd, "transformer", width, model.config["transformer_heads"]):
        x = layer(x, src_mask=mask)
    x = F.layer_norm(x, (width,), sd["ln_final.weight"], sd["ln_final.bias"])
    eot = (tokens == 49407).float().argmax(dim=1)
    return x[torch.arange(len(tokens)), eot] @ sd["text_projection"]


def reference_vit(model: clip.CLIP, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens after ln_post, projected CLS embedding) of a ViT tower."""
    sd = model.state_dict()
    width, _, patch, _ = sd["visual.conv1.weight"].shape
    x = F.conv2d(images, sd["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.class_embedding"].expand(len(images), 1, width), x], dim=1)
    x = x + sd["visual.positional_embedding"]
    x = F.layer_norm(x, (width,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"])
    for layer in reference_layers(sd, "visual.transformer", width, width // 64):
        x = layer(x)
    x = F.layer_norm(x, (width,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"])
    return x, x[:, 0] @ sd["visual.proj"]


def reference_resnet_grid(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """Functional ModifiedResNet trunk: 3-conv stem + avgpool, then anti-aliased bottleneck stages."""
    def bn(y, p):
        return F.batch_norm(y, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"])

    def block(y, p, stride):
        out = F.relu(bn(F.conv2d(y, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
        out = F.relu(bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), f"{p}.bn2"))
        out = F.avg_pool2d(out, stride) if stride > 1 else out
        out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
        if f"{p}.downsample.0.weight" in sd:
            y = F.avg_pool2d(y, stride) if stride > 1 else y
            y = bn(F.conv2d(y, sd[f"{p}.downsample.0.weight"]), f"{p}.downsample.1")
        return F.relu(out + y)

    x = F.relu(bn(F.conv2d(x, sd["visual.conv1.weight"], stride=2, padding=1), "visual.bn1"))
    x = F.relu(bn(F.conv2d(x, sd["visual.conv2.weight"], padding=1), "visual.bn2"))
    x = F.relu(bn(F.conv2d(x, sd["visual.conv3.weight"], padding=1), "visual.bn3"))
    x = F.avg_pool2d(x, 2)
    for stage, stride in zip((1, 2, 3, 4), (1, 2, 2, 2)):
        i = 0
        while f"visual.layer{stage}.{i}.conv1.weight" in sd:
            x = block(x, f"visual.layer{stage}.{i}", stride if i == 0 else 1)
            i += 1
    return x


def reference_attnpool(sd: dict, grid: torch.Tensor, pos: torch.Tensor, heads: int) -> torch.Tensor:
    """OpenAI's attention pool written with F.multi_head_attention_forward (sequence-first)."""
    p = "visual.attnpool"
    x = grid.flatten(2).permute(2, 0, 1)
    x = torch.cat([x.mean(dim=0, keepdim=True), x]) + pos[:, None, :]
    out, _ = F.multi_head_attention_forward(
        query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=heads,
        q_proj_weight=sd[f"{p}.q_proj.weight"], k_proj_weight=sd[f"{p}.k_proj.weight"],
        v_proj_weight=sd[f"{p}.v_proj.weight"], in_proj_weight=None,
        in_proj_bias=torch.cat([sd[f"{p}.q_proj.bias"], sd[f"{p}.k_proj.bias"], sd[f"{p}.v_proj.bias"]]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=sd[f"{p}.c_proj.weight"], out_proj_bias=sd[f"{p}.c_proj.bias"],
        use_separate_proj_weight=True, training=False, need_weights=False)
    return out[0]


# ---- model vs references -----------------------------------------------------------------------

@pytest.mark.parametrize("config", [TINY_RN, SMALL_RN], ids=["tiny", "small"])
def test_resnet_grid_and_attention_pool_match_reference(config):
    model = randomized(config)
    sd = model.state_dict()
    res = config["image_resolution"]
    images = torch.randn(2, 3, res, res)
    with torch.no_grad():
        grid = model.visual_grid(images)
        ref_grid = reference_resnet_grid(sd, images)
        assert grid.shape == (2, config["vision_width"] * 32, res // 32, res // 32)
        torch.testing.assert_close(grid, ref_grid, rtol=1e-4, atol=1e-4)
        heads = config["vision_width"] * 32 // 64
        ref_pool = reference_attnpool(sd, ref_grid, sd["visual.attnpool.positional_embedding"], heads)
        torch.testing.assert_close(model.encode_image(images), ref_pool, rtol=1e-4, atol=1e-4)


def test_vit_tokens_and_embedding_match_reference():
    model = randomized(TINY_VIT)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref_tokens, ref_embedding = reference_vit(model, images)
        tokens = model.visual.forward_tokens(images)
        assert tokens.shape == (2, 1 + 4 * 4, 64)
        torch.testing.assert_close(tokens, ref_tokens, rtol=1e-4, atol=1e-4)
        grid = model.visual_grid(images)  # channels first, like the ResNet grid; token 1 + r*4 + c is cell (r, c)
        assert grid.shape == (2, 64, 4, 4)
        torch.testing.assert_close(grid[:, :, 2, 3], ref_tokens[:, 1 + 2 * 4 + 3], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.encode_image(images), ref_embedding, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("config", [TINY_RN, SMALL_RN], ids=["tiny", "small"])
def test_encode_text_truncated_matches_full_context_reference(config):
    model = randomized(config)
    tokens = tokens_for(model, TEXTS)
    assert int(tokens.argmax(dim=1).max()) + 1 < model.context_length  # the fast path really truncates
    with torch.no_grad():
        expected = reference_encode_text(model, tokens)
        torch.testing.assert_close(model.encode_text(tokens), expected, rtol=1e-5, atol=1e-5)
        # a batch runs to its longest text; each row equals that row encoded alone
        alone = torch.cat([model.encode_text(row[None]) for row in tokens])
        torch.testing.assert_close(model.encode_text(tokens), alone, rtol=1e-5, atol=1e-5)
        # shorter token tensors (less than the context length) are accepted
        torch.testing.assert_close(model.encode_text(tokens[:, :20]), alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="context length"):
        model.encode_text(torch.zeros(1, model.context_length + 1, dtype=torch.long))


def test_forward_logits_are_scaled_cosines():
    model = randomized(TINY_RN)
    images, tokens = torch.randn(2, 3, 64, 64), tokens_for(model, TEXTS)
    with torch.no_grad():
        per_image, per_text = model(images, tokens)
        a, b = model.encode_image(images), model.encode_text(tokens)
    cos = torch.tensor([[torch.dot(u, v) / (u.norm() * v.norm()) for v in b] for u in a])
    torch.testing.assert_close(per_image, 100.0 / 7.0 * cos, rtol=1e-4, atol=1e-4)  # logit_scale = log(1/0.07)
    torch.testing.assert_close(per_text, per_image.t())


# ---- grids at other resolutions ----------------------------------------------------------------

def test_grid_at_448_and_at_twice_training_resolution():
    model = randomized(TINY_RN)
    with torch.no_grad():
        assert model.visual_grid(torch.randn(1, 3, 448, 448)).shape == (1, 512, 14, 14)
        images = torch.randn(2, 3, 128, 128)
        grid = model.visual_grid(images)
        assert grid.shape == (2, 512, 4, 4)
        sd = model.state_dict()
        pos = sd["visual.attnpool.positional_embedding"]                      # 1 + 2x2 rows
        spatial = pos[1:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2)
        spatial = F.interpolate(spatial, size=(4, 4), mode="bicubic", align_corners=False)
        pos4 = torch.cat([pos[:1], spatial.permute(0, 2, 3, 1).reshape(16, -1)])
        expected = reference_attnpool(sd, grid, pos4, heads=8)
        torch.testing.assert_close(model.encode_image(images), expected, rtol=1e-4, atol=1e-4)


def test_visual_grid_leaves_encode_image_unchanged():
    model = randomized(TINY_RN)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model.encode_image(images)
        model.visual_grid(images)
        assert torch.equal(model.encode_image(images), before)
        assert before.shape == (2, TINY_RN["embed_dim"])


def test_resize_pos_embed():
    pos = torch.randn(1 + 7 * 7, 32)
    assert resize_pos_embed(pos, (7, 7)) is pos
    const = torch.cat([torch.randn(1, 8), torch.ones(49, 8) * 3.0])
    out = resize_pos_embed(const, (14, 10))
    assert out.shape == (1 + 140, 8)
    torch.testing.assert_close(out[1:], torch.full((140, 8), 3.0))
    assert torch.equal(out[0], const[0])
    with pytest.raises(ValueError, match="square"):
        resize_pos_embed(torch.randn(1 + 12, 8), (4, 4))


def test_vit_interpolates_positions_at_other_resolutions():
    model = randomized(TINY_VIT)
    with torch.no_grad():
        assert model.visual_grid(torch.randn(1, 3, 128, 96)).shape == (1, 64, 8, 6)
        assert model.encode_image(torch.randn(1, 3, 128, 128)).shape == (1, TINY_VIT["embed_dim"])


def test_convert_to_fp16_follows_openai_layout():
    model = randomized(TINY_RN)
    tokens = tokens_for(model, TEXTS)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        text32, image32 = model.encode_text(tokens), model.encode_image(images)
        clip.convert_to_fp16(model)
        half = {n for n, p in model.named_parameters() if p.dtype == torch.float16}
        expected = {n for n in model.state_dict() if n.endswith(("conv1.weight", "conv2.weight", "conv3.weight",
                    "downsample.0.weight", "_proj.weight", "_proj.bias", "c_fc.weight", "c_fc.bias", "in_proj_weight",
                    "in_proj_bias", "text_projection"))}
        assert half == expected
        assert model.dtype == torch.float16
        torch.testing.assert_close(model.encode_text(tokens).float(), text32, rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(model.encode_image(images).float(), image32, rtol=2e-2, atol=2e-2)
