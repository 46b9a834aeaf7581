"""CIDEr and CIDEr-D."""
from cider.df_file import DFFileError, load_df
from cider.index_strings import index_strings
from cider.ngrams import document_frequency, ngram_counts
from cider.scorer import Cider, CiderD

__all__ = ["Cider", "CiderD", "DFFileError", "document_frequency", "index_strings", "load_df", "ngram_counts"]
