"""The hybrid index: BM25 (bm25s) and dense vectors (`podcrew_kb.embed`) over the same chunks,
their rankings fused with reciprocal rank fusion.

BM25 finds the chunks that use the query's words; the dense vectors find those that say the
same thing in other words. Their scores are on unrelated scales, so they are not added:
each retriever ranks its best `CANDIDATES`, and a chunk scores `Σ 1 / (RRF_K + rank)` over
the rankings it appears in (Cormack et al., 2009), which rewards what both agree on without
tuning a weight. An index is immutable once built: a corpus that changes gets a new one.
"""

from __future__ import annotations

import keyword
from collections.abc import Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
import numpy.typing as npt
from bm25s.stopwords import STOPWORDS_EN
from bm25s.tokenization import Tokenizer
from Stemmer import Stemmer

from podcrew_kb.chunk import Chunk
from podcrew_kb.embed import Embedder, Vectors

# The constant of reciprocal rank fusion: 60, as in the paper and most systems since.
RRF_K = 60
# How deep each retriever ranks before fusion: well past any k a tool asks for (≤ 10), so a
# chunk ranked modestly by both can still rise to the top.
CANDIDATES = 50
# When no word of the query is in the corpus (BM25 finds nothing), the dense retriever's hits
# must be at least this similar to the query (cosine) to count. Any text has nearest
# neighbours; for a query of stopwords or of strings the model does not know they are noise,
# and an empty answer is the honest one. Chosen on the shipped corpus: queries of stopwords
# or gibberish reach 0.18 to 0.29, paraphrases with no word in common 0.45 and more.
DENSE_MIN_SIMILARITY = 0.4
# Python keywords are English stopwords too ("with", "if", "for", "in"); in documents about
# code they name statements, so they must stay searchable.
STOPWORDS = sorted(set(STOPWORDS_EN) - set(keyword.kwlist))


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk a search returned, with its fused score."""

    chunk: Chunk
    score: float


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of `rankings` (each a list of item numbers, best first): every
    item with its fused score, best first; ties keep the order of first appearance."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])


# The C Snowball stemmer (PyStemmer), as bm25s's own examples use: a query is stemmed on
# every search, so the pure-Python one would cost more than the search.
_STEMMER = Stemmer("english")


def new_tokenizer() -> Tokenizer:
    """The BM25 tokenizer: bm25s's word splitter, lower case, `STOPWORDS` dropped, each word
    reduced to its Snowball (Porter 2) stem, so "generators" finds "generator" and "works"
    finds "working" (without it the bundled corpus answered "How do Python generators work?"
    from the debugger's pages, which say "Python" most)."""
    return Tokenizer(stopwords=STOPWORDS, stemmer=_STEMMER.stemWord)


class Index:
    """Chunks with their BM25 index and vectors; searching never mutates it, so any number
    of searches may share one."""

    def __init__(
        self,
        chunks: list[Chunk],
        vectors: Vectors,
        *,
        bm25: bm25s.BM25,
        tokenizer: Tokenizer,
        embedder: Embedder,
        digest: str,
    ) -> None:
        if len(chunks) != vectors.shape[0]:
            raise ValueError(f"{len(chunks)} chunks but {vectors.shape[0]} vectors")
        self.chunks = chunks
        self.vectors = vectors
        self.bm25 = bm25
        self.tokenizer = tokenizer
        self.embedder = embedder
        self.digest = digest

    @classmethod
    def build(
        cls,
        chunks: list[Chunk],
        embedder: Embedder,
        *,
        digest: str,
        reuse: Sequence[Index] = (),
    ) -> Index:
        """Index `chunks`; the vectors of chunks the `reuse` indexes already hold are copied,
        so a re-index after an edit embeds only what changed."""
        tokenizer = new_tokenizer()
        texts = [c.indexed for c in chunks]
        ids = tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False)
        bm25 = bm25s.BM25()
        if chunks:  # bm25s cannot index nothing; an empty index is searched by no one
            bm25.index((ids, tokenizer.get_vocab_dict()), show_progress=False)
        return cls(
            chunks,
            _vectors(texts, embedder, reuse),
            bm25=bm25,
            tokenizer=tokenizer,
            embedder=embedder,
            digest=digest,
        )

    def __len__(self) -> int:
        return len(self.chunks)

    def bm25_ranking(self, query: str, depth: int = CANDIDATES) -> list[int]:
        """The chunks (by position) that share words with `query`, best first."""
        tokens = self.tokenizer.tokenize(
            [query], update_vocab=False, return_as="ids", show_progress=False
        )
        # Words the corpus never uses drop out in tokenizing, rather than growing the vocabulary.
        if not self.chunks or not any(tokens[0]):
            return []
        depth = min(depth, len(self.chunks))
        found, scores = self.bm25.retrieve(tokens, k=depth, show_progress=False, n_threads=0)
        return [int(i) for i, s in zip(found[0], scores[0], strict=True) if s > 0]

    def dense_ranking(
        self, query: str, depth: int = CANDIDATES
    ) -> tuple[list[int], npt.NDArray[np.float32]]:
        """The chunks (by position) nearest to `query` by cosine, best first, and every
        chunk's similarity."""
        vector = self.embedder.embed([query])[0]
        similarity: npt.NDArray[np.float32] = self.vectors @ vector
        depth = min(depth, len(self.chunks))
        if depth == 0 or not vector.any():
            return [], similarity
        top = np.argpartition(-similarity, depth - 1)[:depth]
        ranked = top[np.argsort(-similarity[top], kind="stable")]
        return [int(i) for i in ranked], similarity

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The `k` best chunks for `query` by both retrievers, fused; none when neither finds
        anything relevant."""
        lexical = self.bm25_ranking(query)
        dense, similarity = self.dense_ranking(query)
        if not lexical:
            dense = [i for i in dense if similarity[i] >= DENSE_MIN_SIMILARITY]
        return [Hit(self.chunks[i], score) for i, score in rrf([lexical, dense])[:k]]


def _vectors(texts: list[str], embedder: Embedder, reuse: Sequence[Index]) -> Vectors:
    vectors = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    known: dict[str, npt.NDArray[np.float32]] = {}
    for index in reuse:
        if index.embedder.model_id == embedder.model_id:
            known.update((c.indexed, index.vectors[row]) for row, c in enumerate(index.chunks))
    missing = []
    for row, text in enumerate(texts):
        old = known.get(text)
        if old is None:
            missing.append(row)
        else:
            vectors[row] = old
    if missing:
        vectors[missing] = embedder.embed([texts[row] for row in missing])
    return vectors
