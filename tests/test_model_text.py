"""Index sequences -> caption strings, and the bad-ending helpers."""
import pytest
import torch

from captioning.models import DECODE_BAD_ENDINGS, bad_ending_ids, decode_sequence, strip_bad_endings

IX_TO_WORD = {"1": "a", "2": "dog", "3": "on", "4": "the", "5": "gr@@", "6": "ass", "7": "UNK", "8": "near"}


def test_words_up_to_first_zero_and_bpe_joined():
    seq = torch.tensor([[1, 2, 3, 4, 5, 6, 0, 2, 2],
                        [2, 7, 0, 0, 0, 0, 0, 0, 0],
                        [0, 2, 2, 2, 2, 2, 2, 2, 2],
                        [1, 2, 1, 2, 1, 2, 1, 2, 1]])
    assert decode_sequence(IX_TO_WORD, seq) == ["a dog on the grass", "dog UNK", "", "a dog a dog a dog a dog a"]


def test_bad_endings_stripped_only_when_asked():
    seq = torch.tensor([[1, 2, 3, 4, 0], [1, 2, 8, 1, 0], [4, 1, 3, 0, 0]])
    assert decode_sequence(IX_TO_WORD, seq) == ["a dog on the", "a dog near a", "the a on"]
    # 'near' is a decode-time bad ending but not a text one; a caption of bad endings only is kept whole
    assert decode_sequence(IX_TO_WORD, seq, remove_bad_endings=True) == ["a dog", "a dog near", "the a on"]
    assert strip_bad_endings("a dog near a", bad_endings=["a", "near"]) == "a dog"
    assert strip_bad_endings("") == ""


def test_bad_ending_ids_from_vocabulary():
    assert bad_ending_ids(IX_TO_WORD) == [1, 3, 4, 8]
    assert set(DECODE_BAD_ENDINGS) >= {"a", "an", "the", "near", "am"}
    assert bad_ending_ids(IX_TO_WORD, ["dog"]) == [2]


def test_unknown_index_raises():
    with pytest.raises(ValueError, match="not in ix_to_word"):
        decode_sequence(IX_TO_WORD, torch.tensor([[1, 99, 0]]))
