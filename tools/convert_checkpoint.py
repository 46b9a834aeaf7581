"""Convert the original's released artefacts (and Hugging Face CLIP weights) to this project's formats.

    python tools/convert_checkpoint.py captioner save/clipRN50_cider/clipRN50_cider-last.ckpt \
        save/clipRN50_cider/converted.ckpt
    python tools/convert_checkpoint.py grammar-clip retrieval/save/clip_negative_text-last.ckpt \
        save/grammar_clip.pt
    python tools/convert_checkpoint.py hf-clip path/to/clip-vit-base-patch32 save/ViT-B-32-hf.pt

captioner:    an original captioner .ckpt (or one of ours) -> our checkpoint (state_dict 'model.*',
              hyper_parameters {config, vocab}); --init_from, EVALUATE=1 and tools/caption.py read it.
              Reading needs no conversion: those tools accept the original file too.
grammar-clip: the original's grammar CLIP (retrieval/train_pl.py checkpoint) -> a grammar-CLIP file
              for clip_load_path (CLIP-S + grammar reward and evaluation).
hf-clip:      a Hugging Face CLIPModel folder (config.json + model.safetensors or pytorch_model.bin,
              ViT models) -> an OpenAI-layout state dict that clip.load reads. clip.load also reads
              the folder itself.

No code from the files is run (see captioning/checkpoints.py). --verbose lists the original
options that were carried over, left at our defaults, or ignored.
"""
from __future__ import annotations

import logging
import sys

import torch

import clip
from captioning.checkpoints import convert_captioner_checkpoint, read_captioner_checkpoint
from captioning.cli import ArgumentParser, entry_point
from captioning.utils.io import atomic_path
from clip.hf import read_hf_folder
from retrieval.convert import convert_grammar_checkpoint


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["captioner", "grammar-clip", "hf-clip"], help="what src is (see above)")
    parser.add_argument("src", help="the file (or, for hf-clip, the folder) to convert")
    parser.add_argument("dst", help="the file to write (written atomically)")
    parser.add_argument("--verbose", action="store_true", help="log what was carried over and what was ignored")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    try:
        if args.kind == "captioner":
            convert_captioner_checkpoint(args.src, args.dst)
            state, vocab, config = read_captioner_checkpoint(args.dst)
            sizes = ", ".join(f"{k} {config[k]}" for k in ("N_enc", "N_dec", "d_model", "d_ff", "num_att_heads",
                                                          "att_feat_size", "max_length"))
            print(f"captioner: {len(vocab)} words, {sum(v.numel() for v in state.values()):,} values; {sizes}")
        elif args.kind == "grammar-clip":
            model = convert_grammar_checkpoint(args.src, args.dst)
            print(f"grammar CLIP: {model.clip.config['vision_layers']}-layer ViT, text width "
                  f"{model.clip.transformer.width}, grammar head included")
        else:
            state = read_hf_folder(args.src)
            model = clip.build_model(state)  # proves the mapped weights load strictly
            with atomic_path(args.dst) as tmp:
                torch.save(state, tmp)
            print(f"CLIP: {model.config['vision_layers']}-layer ViT/{model.config['vision_patch_size']} at "
                  f"{model.visual.input_resolution} px, embed_dim {model.config['embed_dim']}")
    except (FileNotFoundError, ValueError, KeyError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"-> {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
