"""CLIP speed on this machine, measured side by side in one run (random weights, fp32, about a minute).

1. RN50 layer4 grid extraction at 448 px (images/s): the default channels_last weights vs contiguous NCHW.
2. encode_text on 24-token captions: running to the longest caption vs OpenAI's full 77-token context.

Rounds alternate the two variants so that load from other processes hits both alike; the reported
ratio is the median of the per-round ratios.

    .venv/bin/python bench/bench_clip.py [--batch 2] [--texts 64] [--rounds 3]
"""
import argparse
import statistics
import time

import torch

import clip
from clip.model import tiny_clip_config

RN50 = dict(tiny_clip_config("resnet"), embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3),
            vision_width=64, context_length=77, transformer_width=512, transformer_heads=8, transformer_layers=12)


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def full_context_text(model: clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """OpenAI's encode_text: every one of the 77 positions goes through the transformer."""
    x = model.token_embedding(tokens) + model.positional_embedding
    x = model.ln_final(model.transformer(x, causal=True))
    return x[torch.arange(len(tokens)), tokens.argmax(dim=-1)] @ model.text_projection


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="images per grid batch")
    parser.add_argument("--texts", type=int, default=64, help="captions per text batch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = clip.CLIP(**RN50).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, RN50 CLIP with random weights, fp32")

    images = torch.randn(args.batch, 3, 448, 448)
    grid_ratios, cl_rates, nchw_rates = [], [], []
    for _ in range(args.rounds):
        model.visual.to(memory_format=torch.channels_last)
        cl = args.batch / seconds(lambda: model.visual_grid(images), 1)
        model.visual.to(memory_format=torch.contiguous_format)
        nchw = args.batch / seconds(lambda: model.visual_grid(images), 1)
        cl_rates.append(cl)
        nchw_rates.append(nchw)
        grid_ratios.append(cl / nchw)
    model.visual.to(memory_format=torch.channels_last)
    grid = model.visual_grid(images[:1])
    print(f"grid features at 448 px, batch {args.batch}: output {tuple(grid.shape)}")
    print(f"  channels_last (default) {statistics.median(cl_rates):6.2f} images/s | "
          f"NCHW {statistics.median(nchw_rates):6.2f} images/s | "
          f"speed-up x{statistics.median(grid_ratios):.2f} (per round: {', '.join(f'{r:.2f}' for r in grid_ratios)})")

    caption = ("a photo depicts a small red circle left of a large blue square and a green triangle"
               " below a tiny yellow star")
    tokens = clip.tokenize([caption] * args.texts)  # 24 tokens with SOT and EOT
    length = int(tokens.argmax(dim=-1).max()) + 1
    fast_out, full_out = model.encode_text(tokens), full_context_text(model, tokens)
    text_ratios, fast_times, full_times = [], [], []
    for _ in range(args.rounds):
        fast = seconds(lambda: model.encode_text(tokens), 1)
        full = seconds(lambda: full_context_text(model, tokens), 1)
        fast_times.append(fast)
        full_times.append(full)
        text_ratios.append(full / fast)
    print(f"encode_text, {args.texts} captions of {length} tokens (context 77):")
    print(f"  truncated {args.texts / statistics.median(fast_times):7.1f} texts/s | "
          f"full context {args.texts / statistics.median(full_times):7.1f} texts/s | "
          f"speed-up x{statistics.median(text_ratios):.2f} | max |difference| {(fast_out - full_out).abs().max():.1e}")


if __name__ == "__main__":
    main()
