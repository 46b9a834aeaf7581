"""CIDEr and CIDEr-D."""
from cider.ngrams import document_frequency, ngram_counts

__all__ = ["document_frequency", "ngram_counts"]
