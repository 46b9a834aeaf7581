"""The captioner can memorise a tiny batch: token-averaged NLL near zero, then greedy decoding
(cached and uncached) reproduces every training caption."""
import torch

from captioning.models import TransformerCaptioner, sample

V, C, N = 15, 12, 4
CAPTIONS = [[3, 7, 7, 2], [5, 1, 9, 12, 4, 4], [11, 6], [8, 3, 7, 2, 10], [14, 13, 15], [2, 9, 6, 5, 1]]


def labels_and_masks(captions, width):
    """Original loader layout: column 0 = BOS (0), words, then zeros; mask covers BOS + words + EOS."""
    labels = torch.zeros(len(captions), width, dtype=torch.long)
    masks = torch.zeros(len(captions), width)
    for i, c in enumerate(captions):
        labels[i, 1:1 + len(c)] = torch.tensor(c)
        masks[i, :len(c) + 2] = 1
    return labels, masks


def test_overfits_tiny_batch_and_greedy_reproduces_captions():
    torch.manual_seed(0)
    att = torch.randn(len(CAPTIONS), N, C)
    att_masks = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]] * 3)
    # two copies of each caption per image: exercises the per-caption repeat (rows i*S + j)
    labels, masks = labels_and_masks([c for c in CAPTIONS for _ in range(2)], 9)
    model = TransformerCaptioner(vocab_size=V, att_feat_size=C, d_model=32, d_ff=64, n_enc=2, n_dec=2,
                                 num_heads=4, dropout=0.0, drop_prob_lm=0.0, max_length=10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        logprobs = model(att, att_masks, labels[:, :-1])
        nll = -logprobs.gather(2, labels[:, 1:].unsqueeze(2))[..., 0]
        loss = (nll * masks[:, 1:]).sum() / masks[:, 1:].sum()  # token average over the batch
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02
    model.eval()
    with torch.no_grad():
        for use_cache in (True, False):
            seq = sample(model, att, att_masks, use_cache=use_cache).seq
            decoded = [row[:row.index(0)] if 0 in row else row for row in seq.tolist()]
            assert decoded == CAPTIONS
