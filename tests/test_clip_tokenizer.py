import hashlib
from pathlib import Path

import pytest
import torch

import clip
from clip.tokenizer import DEFAULT_BPE_PATH

# Ids computed with OpenAI's own tokenizer.
REFERENCE = {
    "A photo depicts a small red circle left of a large blue square.":
        [49406, 320, 1125, 29340, 320, 2442, 736, 7117, 1823, 539, 320, 3638, 1746, 3999, 269, 49407],
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "Café &amp; crème brûlée!!  two   dogs":
        [49406, 15304, 261, 1075, 12138, 614, 711, 127, 119, 75, 13489, 748, 1237, 3255, 49407],
    "don't STOP 123 😀": [49406, 847, 713, 1691, 272, 273, 274, 7334, 49407],
}


def test_packaged_vocabulary_is_openais():
    digest = hashlib.sha256(Path(DEFAULT_BPE_PATH).read_bytes()).hexdigest()
    assert digest == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
    tok = clip.SimpleTokenizer()
    assert len(tok.encoder) == 49408
    assert (tok.sot_token, tok.eot_token) == (49406, 49407)


@pytest.mark.parametrize("text", list(REFERENCE))
def test_reference_ids(text):
    ids = REFERENCE[text]
    tokens = clip.tokenize(text)
    assert tokens.shape == (1, 77) and tokens.dtype == torch.long
    assert tokens[0, :len(ids)].tolist() == ids
    assert tokens[0, len(ids):].eq(0).all()


def test_batch_matches_single_texts():
    texts = list(REFERENCE)
    batch = clip.tokenize(texts, context_length=20)
    for row, text in zip(batch, texts):
        ids = REFERENCE[text]
        assert row.tolist() == ids + [0] * (20 - len(ids))


def test_too_long_text_raises_with_the_text():
    text = "a photo of a cat"  # 7 tokens with SOT/EOT
    with pytest.raises(ValueError, match="a photo of a cat"):
        clip.tokenize([text], context_length=6)


def test_truncation_keeps_eot_last():
    ids = REFERENCE["A photo depicts a small red circle left of a large blue square."]
    text = "A photo depicts a small red circle left of a large blue square."
    tokens = clip.tokenize(text, context_length=8, truncate=True)
    assert tokens[0].tolist() == ids[:7] + [49407]
    exact = clip.tokenize("a photo of a cat", context_length=7, truncate=True)
    assert exact[0].tolist() == REFERENCE["a photo of a cat"]


def test_decode():
    tok = clip.SimpleTokenizer()
    assert tok.decode(REFERENCE["a photo of a cat"][1:-1]) == "a photo of a cat "
    row = clip.tokenize("Café &amp; crème brûlée!!  two   dogs")[0]
    assert tok.decode(row, skip_special=True) == "café & crème brûlée !! two dogs"
    assert tok.decode(REFERENCE["don't STOP 123 😀"], skip_special=True) == "don 't stop 1 2 3 😀"


def test_text_cleaning():
    # case folded; HTML entities unescaped twice even where ftfy leaves them (text with tags)
    assert torch.equal(clip.tokenize("Fish &amp;amp; \t chips\n"), clip.tokenize("fish & chips"))
    assert torch.equal(clip.tokenize("<b>fish &amp;amp; chips</b>"), clip.tokenize("<b>fish & chips</b>"))
