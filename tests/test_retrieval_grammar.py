"""Short trainings on tiny data: the losses go down and the grammar head learns word order."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader

import clip
from captioning.fineshapes import reference_caption, sample_scene
from captioning.fineshapes.parser import tokenize
from retrieval.config import RetrievalConfig
from retrieval.data import Collate, Entry, GrammarDataset, PretrainDataset
from retrieval.module import GrammarModule, PretrainModule
from retrieval.perturb import shuffle

TINY = dict(embed_dim=32, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=8, vision_patch_size=None,
            context_length=48, vocab_size=49408, transformer_width=32, transformer_heads=1, transformer_layers=1)


def _config(**values):
    cfg = RetrievalConfig()
    for k, v in values.items():
        cfg.set(k, v)
    return cfg.to_flat_dict()


def _captions(n, seed):
    return [tuple(tokenize(reference_caption(sample_scene(np.random.default_rng([seed, k])),
                                             np.random.default_rng([seed, k, 1])))) for k in range(n)]


def _grammar_setup(n_images=256, batch_size=32):
    """Captions with image embeddings that the CLIP loss can fit: a fixed random projection of each
    caption's bag of words (random embeddings would make the CLIP loss fight the grammar loss)."""
    torch.manual_seed(0)
    captions = _captions(n_images, seed=1)
    vocab = sorted({w for c in captions for w in c})
    word_vec = {w: torch.randn(TINY["embed_dim"]) for w in vocab}
    feats = torch.nn.functional.normalize(torch.stack([sum(word_vec[w] for w in c) for c in captions]), dim=-1)
    data = GrammarDataset([Entry(k, "", (c,)) for k, c in enumerate(captions)],
                          {str(k): feats[k].numpy() for k in range(n_images)}, vocab, seed=0, train=True)
    module = GrammarModule(_config(lr=3e-3, weight_decay=0.0), clip.CLIP(**TINY))
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=Collate(TINY["context_length"]))
    return module, loader


def test_grammar_head_prefers_the_original_word_order_after_a_short_finetune():
    module, loader = _grammar_setup()
    opt = module.configure_optimizers()["optimizer"]
    first = None
    for _ in range(20):
        for batch in loader:
            out = module.losses(batch)
            first = first or {k: out[k].item() for k in ("clip_loss", "grammar_loss")}
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
    assert out["grammar_loss"].item() < 0.75 * first["grammar_loss"]
    assert out["clip_loss"].item() < first["clip_loss"]

    held_out = [c for c in _captions(200, seed=2) if len(set(c)) > 2][:100]
    rng = random.Random(0)
    shuffled = [shuffle(c, rng) for c in held_out]
    model = module.model.eval()
    with torch.no_grad():
        p_orig = model.grammar_prob(model.text_features(model.tokenize([" ".join(c) for c in held_out]))[0])
        p_shuf = model.grammar_prob(model.text_features(model.tokenize([" ".join(c) for c in shuffled]))[0])
    assert (p_orig > p_shuf).float().mean() >= 0.85
    assert p_orig.mean() > p_shuf.mean() + 0.25


def test_pretraining_steps_lower_the_contrastive_loss():
    torch.manual_seed(0)
    n = 32
    scenes = [sample_scene(np.random.default_rng([3, k])) for k in range(n)]
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    data = PretrainDataset(images, scenes, seed=0, train=False)  # fixed captions: a loss that can be fitted
    batch = Collate(TINY["context_length"])([data[k] for k in range(n)])
    cfg = _config(task="pretrain", hard_negatives=True, lr=2e-3, embed_dim=32, image_resolution=32, vision_width=8,
                  transformer_width=32, transformer_layers=1)
    module = PretrainModule(cfg)
    opt = module.configure_optimizers()["optimizer"]
    losses = []
    for _ in range(25):
        loss = module.losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # 32 images, 64 candidate texts: chance is about log(64) on the image side and log(32) on the text side
    assert losses[0] > 3.0 and losses[-1] < 0.5 * losses[0]
