"""A thin wrapper over the `bm25s` library: index a list of texts once, then ask for the top-k document ids.

Both built-in text environments search with it (WebShop's product search, Search-QA's local retriever). Scores come
from `bm25s`; this module only fixes the tokenisation (lowercase, English stopwords, a light plural stemmer) and
makes ranking deterministic (ties broken by document id), which matters because environments must replay
identically for the same task id.
"""

from __future__ import annotations

from collections.abc import Sequence

import bm25s
import numpy as np


def light_stem(words: list[str]) -> list[str]:
    """Strip a plural "s" so that "shirts" finds "shirt" (PyStemmer is not a dependency of this project)."""
    out = []
    for word in words:
        if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
        out.append(word)
    return out


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Tokens as the index sees them; the same function is used for documents and queries."""
    return bm25s.tokenize(list(texts), stopwords="en", stemmer=light_stem, return_ids=False, show_progress=False)


class BM25Index:
    """BM25 (bm25s's Lucene variant; k1=1.5, b=0.75 unless given; Pyserini's Lucene searcher uses 0.9, 0.4) over a
    fixed list of texts."""

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        if not texts:
            raise ValueError("BM25Index needs at least one text to index.")
        self._num_docs = len(texts)
        self.k1, self.b = k1, b
        self._retriever = bm25s.BM25(k1=k1, b=b)
        self._retriever.index(tokenize(texts), show_progress=False)

    def __len__(self) -> int:
        return self._num_docs

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for `query` (all zeros when no query word is in the vocabulary)."""
        tokens = [t for t in tokenize([query])[0] if t in self._retriever.vocab_dict]
        if not tokens:  # bm25s rejects an empty token list
            return np.zeros(self._num_docs, dtype=np.float32)
        return np.asarray(self._retriever.get_scores(tokens), dtype=np.float32)

    def top_k(self, query: str, k: int) -> list[int]:
        """Ids of the k best documents with a positive score, best first; equal scores keep document order."""
        scores = self.scores(query)
        order = np.lexsort((np.arange(self._num_docs), -scores))  # primary key: -score, secondary: doc id
        return [int(i) for i in order[:k] if scores[i] > 0]
