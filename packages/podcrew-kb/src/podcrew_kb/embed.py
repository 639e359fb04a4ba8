"""Dense embeddings from the model that ships inside the `wordllama` wheel.

`l2_supercat` at 256 dimensions (16 MB of token embeddings, average-pooled) is loaded from
the package's own files. wordllama's `load()` looks for the tokenizer under a folder name
the wheel does not use and would then fetch it from the network; pointing its cache at the
package folder, with downloads disabled, makes it find both files where the wheel put them
and refuse, rather than download, if they are ever missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MODEL_NAME = "l2_supercat"
MODEL_DIM = 256
MODEL_ID = f"wordllama/{MODEL_NAME}_{MODEL_DIM}"

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Embedder:
    """Texts to unit vectors (`embed`), with where the weights were read from."""

    model: Any
    weights_path: Path
    model_id: str = MODEL_ID

    @property
    def dim(self) -> int:
        return MODEL_DIM

    def embed(self, texts: list[str], batch_size: int = 32) -> Vectors:
        """One L2-normalised float32 row per text (zeros for a text with no known token).

        A batch is padded to its longest text: 32 embeds as fast as 256 on 2 cores and holds
        a sixth of the memory (about 165 MB at the peak instead of 540 for 3,000 long texts).
        """
        if not texts:
            return np.zeros((0, MODEL_DIM), dtype=np.float32)
        vectors = np.asarray(
            self.model.embed(texts, norm=False, batch_size=batch_size), dtype=np.float32
        )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # A row of zeros (nothing known in the text) stays zeros: it matches nothing.
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        return vectors


def package_dir() -> Path:
    """The folder of the installed `wordllama` package, where its wheel put the model."""
    import wordllama

    return Path(wordllama.__file__).resolve().parent


def load_embedder() -> Embedder:
    """The shipped model (about a second and 35 MB to load; load it once and share it: it is
    read-only), never downloaded: a missing file raises `FileNotFoundError`."""
    from wordllama import WordLlama

    root = package_dir()
    model = WordLlama.load(MODEL_NAME, dim=MODEL_DIM, cache_dir=root, disable_download=True)
    weights = root / "weights" / WordLlama.get_filename(MODEL_NAME, MODEL_DIM)
    return Embedder(model=model, weights_path=weights)
