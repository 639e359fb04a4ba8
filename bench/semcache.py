"""The semantic cache's hit and false-hit rates, measured on hand-written questions about
the bundled corpus (Python's tutorial and reference).

`uv run --frozen python -m bench.semcache [--threshold 0.9]`: each pair's first question is
"asked" first; a paraphrase should be answered by it (a hit), a different question on a
close topic should not (a false hit). Prints both rates at a range of thresholds, the
default marked, with the questions embedded by the cache's own model.
"""

from __future__ import annotations

import argparse

from podcrew_kb.embed import load_embedder

PARAPHRASES = [
    ("How do Python generators work?", "How does a generator function work in Python?"),
    ("What is a list comprehension?", "What are list comprehensions in Python?"),
    ("How do I open and read a file in Python?", "How can I read a file's contents in Python?"),
    ("What does the yield keyword do?", "What is the purpose of yield in Python?"),
    ("How do decorators work in Python?", "How does a Python decorator work?"),
    ("What is the difference between a list and a tuple?", "How do lists differ from tuples?"),
    ("How do I handle exceptions in Python?", "How does exception handling work in Python?"),
    ("What are Python virtual environments?", "What is a virtual environment in Python?"),
    ("How do I define a class in Python?", "How are classes defined in Python?"),
    ("What is a lambda expression?", "What are lambda functions in Python?"),
    ("How does the with statement work?", "What does Python's with statement do?"),
    ("How do I iterate over a dictionary?", "How can I loop over a dict's keys and values?"),
    ("What are keyword arguments?", "How do keyword arguments work in Python functions?"),
    ("How do modules and imports work?", "How does importing modules work in Python?"),
    ("What is the global interpreter lock?", "What is Python's GIL?"),
    ("How do I format strings in Python?", "What are the ways to format a string in Python?"),
    ("What are Python's built-in data types?", "Which data types are built into Python?"),
    ("How does inheritance work in Python classes?", "How do Python classes inherit?"),
    ("What is the difference between == and is?", "How is `is` different from `==`?"),
    ("How do I sort a list in Python?", "How can a list be sorted in Python?"),
    ("What are f-strings?", "How do formatted string literals work?"),
    ("How do sets work in Python?", "What is a set in Python and how is it used?"),
]
NEGATIVES = [
    ("How do Python generators work?", "How do Python coroutines and async functions work?"),
    ("What is a list comprehension?", "What is a dictionary comprehension?"),
    ("How do I open and read a file in Python?", "How do I write to a file in Python?"),
    ("What does the yield keyword do?", "What does the return keyword do?"),
    ("How do decorators work in Python?", "How do context managers work in Python?"),
    ("What is the difference between a list and a tuple?", "How do I copy a list?"),
    ("How do I handle exceptions in Python?", "How do I define my own exception class?"),
    ("What are Python virtual environments?", "How do I install a package with pip?"),
    ("How do I define a class in Python?", "How do I define a function in Python?"),
    ("What is a lambda expression?", "What is a generator expression?"),
    ("How does the with statement work?", "How does the for statement work?"),
    ("How do I iterate over a dictionary?", "How do I remove a key from a dictionary?"),
    ("What are keyword arguments?", "What are default argument values?"),
    ("How do modules and imports work?", "How do packages and __init__.py work?"),
    ("What is the global interpreter lock?", "How do threads work in Python?"),
    ("How do I format strings in Python?", "How do I split a string in Python?"),
    ("What are Python's built-in data types?", "What are Python's built-in functions?"),
    (
        "How does inheritance work in Python classes?",
        "How do class methods and static methods differ?",
    ),
    ("What is the difference between == and is?", "What is the difference between and and or?"),
    ("How do I sort a list in Python?", "How do I reverse a list in Python?"),
    ("What are f-strings?", "What are byte strings?"),
    ("How do sets work in Python?", "How do frozensets differ from sets?"),
]
THRESHOLDS = (0.8, 0.85, 0.875, 0.9, 0.925, 0.95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threshold", type=float, default=0.9, help="the default, marked")
    args = parser.parse_args()
    embedder = load_embedder()

    def similarities(pairs: list[tuple[str, str]]) -> list[float]:
        first = embedder.embed([a for a, _ in pairs])
        second = embedder.embed([b for _, b in pairs])
        return [float(x @ y) for x, y in zip(first, second, strict=True)]

    hits, false_hits = similarities(PARAPHRASES), similarities(NEGATIVES)
    print(f"{len(PARAPHRASES)} paraphrase pairs, {len(NEGATIVES)} close-topic negatives")
    print("threshold  hit rate  false-hit rate")
    for threshold in sorted({*THRESHOLDS, args.threshold}):
        hit = sum(s >= threshold for s in hits) / len(hits)
        false = sum(s >= threshold for s in false_hits) / len(false_hits)
        mark = "  (default)" if threshold == args.threshold else ""
        print(f"{threshold:9.3f}  {hit:8.0%}  {false:14.0%}{mark}")
    hits.sort()
    false_hits.sort()
    print(f"paraphrases: min {hits[0]:.3f} median {hits[len(hits) // 2]:.3f}")
    print(f"negatives:   max {false_hits[-1]:.3f} median {false_hits[len(false_hits) // 2]:.3f}")


if __name__ == "__main__":
    main()
