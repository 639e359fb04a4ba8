"""The semantic cache's hit and false-hit rates, measured on hand-written questions about
the bundled corpus (Python's tutorial and reference), with the cache's own decision: the
embedding similarity at a threshold and the lexical guard (`same_subject`).

`uv run --frozen python -m bench.semcache [--threshold 0.7]`: in each pair (in
bench/data/semcache-pairs.json) the first question is "asked" first; a paraphrase should be
answered by it (a hit), a different question on a close topic should not (a false hit).
Prints both rates at a range of thresholds for the `tune` half, which the default threshold
was chosen on, and the `held_out` half, which only judges it; the default is marked, and the
rates of similarity alone are shown beside for comparison.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from podcrew_kb.embed import Embedder, load_embedder
from podcrew_orchestrator.semantic import same_subject
from podcrew_orchestrator.settings import OrchestratorSettings

PAIRS = Path(__file__).parent / "data" / "semcache-pairs.json"
THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
Pair = tuple[str, str]


def scored(embedder: Embedder, pairs: list[Pair]) -> list[tuple[float, bool]]:
    """Each pair's cosine similarity and whether the lexical guard lets it answer."""
    first = embedder.embed([a for a, _ in pairs])
    second = embedder.embed([b for _, b in pairs])
    return [
        (float(x @ y), same_subject(a, b))
        for x, y, (a, b) in zip(first, second, pairs, strict=True)
    ]


def rate(scores: list[tuple[float, bool]], threshold: float, guard: bool = True) -> float:
    """The share of pairs the cache would answer at `threshold` (with or without the guard)."""
    return sum(s >= threshold and (ok or not guard) for s, ok in scores) / len(scores)


def report(name: str, embedder: Embedder, half: dict[str, list[Pair]], default: float) -> None:
    hits = scored(embedder, half["paraphrases"])
    false_hits = scored(embedder, half["negatives"])
    print(f"\n{name}: {len(hits)} paraphrase pairs, {len(false_hits)} close-topic negatives")
    print("threshold  hit rate  false-hit rate   (similarity alone: hit, false hit)")
    for threshold in sorted({*THRESHOLDS, default}):
        mark = "  (default)" if threshold == default else ""
        print(
            f"{threshold:9.3f}  {rate(hits, threshold):8.0%}  {rate(false_hits, threshold):14.0%}"
            f"   ({rate(hits, threshold, False):.0%}, {rate(false_hits, threshold, False):.0%})"
            f"{mark}"
        )


def main() -> None:
    default = OrchestratorSettings.model_fields["semantic_cache_threshold"].default
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threshold", type=float, default=default, help="the default, marked")
    args = parser.parse_args()
    data = json.loads(PAIRS.read_text())
    embedder = load_embedder()
    for name in ("tune", "held_out"):
        report(name, embedder, data[name], args.threshold)


if __name__ == "__main__":
    main()
