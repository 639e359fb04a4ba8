"""What the offline model can do with words: split a question into parts, pick the sentences
of a text that answer a subject, and write a JSON document as a cited markdown report.

Plain English rules, deterministic, no knowledge of who is asking: `podcrew_core.llm.offline`
decides when each is used.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

_FACETS = (
    "What are the essentials of {t}?",
    "What are the mechanics of {t}?",
    "What are common pitfalls with {t}?",
    "How is {t} used in practice?",
    "What alternatives to {t} exist?",
    "How has {t} changed over time?",
)
# A plan of fewer parts than this is padded with facets of the topic, where allowed.
_PREFERRED_PARTS = 3
# Clauses end at "?" or ";", or at "and" when a new question starts after it.
_CLAUSE_SPLIT = re.compile(
    r"\s*(?:\?|;|,?\s+and\s+(?=(?:how|what|why|when|where|which|who|is|are|do|does|can)\b))\s*",
    re.IGNORECASE,
)
_QUESTION_FRAME = re.compile(
    r"^(?:what|how|why|when|where|which|who)\s+(?:is|are|do|does|can)\s+|\s+(?:work|works)$",
    re.IGNORECASE,
)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
# A sentence shorter than this rarely states anything ("New in version 3.5.").
_MIN_CLAIM_WORDS = 6
_MAX_EXCERPT_CHARS = 400
# A footnote mark as a passage carries it (" [1]", "[2]:"), the form a report's citation takes.
_FOOTNOTE_MARK = re.compile(r"(?:(?<=\s)|^)\[\d+\]:?")
_WORD = re.compile(r"[a-z0-9_]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "does",
        "do",
        "for",
        "from",
        "how",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "the",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
        "work",
        "works",
        # How a question is framed says nothing of its subject: "when may X happen" is X.
        "can",
        "could",
        "may",
        "might",
        "should",
        "would",
        "happen",
        "happens",
        # Nor does the verb that asks for an account: "how does X describe Y" is X and Y.
        "describe",
        "describes",
        "explain",
        "explains",
        "say",
        "says",
        "tell",
    ]
)


@functools.lru_cache(maxsize=4096)
def terms(text: str) -> frozenset[str]:
    """The words of `text` that say what it is about (no stopwords, none under 3 letters)."""
    # Cached: the same passages are read again and again across a run's research calls.
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 2)


def question_parts(question: str, fewest: int, most: int, longest: int = 10**6) -> list[str]:
    """Split a question into questions: its clauses first, then facets of its topic (the
    first clause without its question words), `fewest` to `most` of them, three when the
    bounds allow, none longer than `longest` characters (a clause or topic that would be is
    cut at a word, as a model asked for short questions shortens them)."""
    clauses = [c.strip(" ,.") for c in _CLAUSE_SPLIT.split(question) if len(c.split()) >= 3]
    topic = _QUESTION_FRAME.sub("", clauses[0] if clauses else question.strip(" ?."))
    parts = list(dict.fromkeys(_shorten(c[0].upper() + c[1:], longest - 1) + "?" for c in clauses))
    target = max(fewest, min(most, max(len(parts), _PREFERRED_PARTS)))
    for facet in _FACETS:
        if len(parts) >= target:
            break
        candidate = facet.format(t=_shorten(topic, longest - len(facet) + len("{t}")))
        if candidate not in parts:
            parts.append(candidate)
    return parts[:target]


def _shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, at the last space before the cut if any."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(" ,.") or text[:limit]


def _stems(words: frozenset[str]) -> frozenset[str]:
    """`words` with a plural's `s` dropped, so "generators" meets "generator"."""
    return frozenset(w[:-1] if len(w) > 3 and w[-1] == "s" and w[-2] != "s" else w for w in words)


def is_about(text: str, subject: str) -> bool:
    """Whether `text` holds at least half of the words that say what `subject` is about.

    A search returns its best passages even when none is relevant; a passage that misses
    most of the subject (a question about France answered from documents about Python) is
    no answer, and quoting it would put a citation on a statement that answers nothing."""
    wanted = _stems(terms(subject))
    return not wanted or len(_stems(terms(text)) & wanted) * 2 >= len(wanted)


def excerpt(text: str, subject: str) -> str:
    """The sentence of `text` that best matches `subject`, with the one after it; empty
    when `text` is not about `subject` (`is_about`) or has no sentence long enough to state
    something. Bracketed numbers the text carries (its own footnote marks, `[1]`) are left
    out: in a report they would read as citations of its sources."""
    if not is_about(text, subject):
        return ""
    plain = _FOOTNOTE_MARK.sub("", " ".join(text.split()))
    sentences = [s.strip() for s in _SENTENCE_SPLIT.split(plain) if s.strip()]
    sentences = [s for s in sentences if len(s.split()) >= _MIN_CLAIM_WORDS]
    if not sentences:
        return ""
    wanted = _stems(terms(subject))
    best = max(range(len(sentences)), key=lambda i: (len(_stems(terms(sentences[i])) & wanted), -i))
    claim = " ".join(sentences[best : best + 2])
    if len(claim) > _MAX_EXCERPT_CHARS:
        claim = claim[: _MAX_EXCERPT_CHARS - 3].rsplit(" ", 1)[0] + "…"
    return claim


def first_string(data: Mapping[str, Any]) -> str:
    """The first string value of `data`: what a document is about."""
    return next((v for v in data.values() if isinstance(v, str)), "")


def _first_number(data: Mapping[str, Any]) -> int | None:
    return next((v for v in data.values() if isinstance(v, int) and not isinstance(v, bool)), None)


def _objects(value: Any) -> list[Mapping[str, Any]] | None:
    if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
        return value
    return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def write_document(data: Mapping[str, Any]) -> str | None:
    """`data` as a markdown report, or `None` when it holds no list to write.

    The first string is the title. The first non-empty list of objects holds the parts:
    each is a section titled by its first string, whose first list of objects is written as
    bullets, each item's first string followed by its number as a citation (`[n]`). A
    sentence already written (in this part or an earlier one) is not written again: a
    bullet with nothing new is referred to ("see also [n] above"; a part with nothing new
    says it is answered above). Every non-empty list of strings follows as a section titled
    by its key.
    """
    lists = [(key, value) for key, value in data.items() if isinstance(value, list)]
    if not lists:
        return None
    parts = next((found for _, v in lists if v and (found := _objects(v)) is not None), [])
    items = [_objects(next((v for v in p.values() if isinstance(v, list)), [])) for p in parts]
    cited = {n for found in items for i in found or [] if (n := _first_number(i)) is not None}
    lines = [f"# {first_string(data)}", ""]
    if cited:
        lines.append(
            f"This report answers the question in {_count(len(parts), 'part')}, drawing on "
            f"{_count(len(cited), 'source')}."
        )
    else:
        lines.append("No sources could be found for this question.")
    written: set[str] = set()
    for part, found in zip(parts, items, strict=True):
        lines += ["", f"## {first_string(part)}", "", *_bullets(found or [], written)]
    for key, value in lists:
        if value and all(isinstance(v, str) for v in value):
            lines += ["", f"## {key.replace('_', ' ').capitalize()}", ""]
            lines += [f"- {v}" for v in value]
    return "\n".join(lines) + "\n"


def _new_sentences(text: str, written: set[str]) -> str:
    """The sentences of `text` not in `written` (which then holds them too), as one text.

    Passages repeat one another word for word (a loop's `else` clause is described for `for`
    and again for `while`); writing such a sentence twice only makes the report longer."""
    fresh = []
    for sentence in _SENTENCE_SPLIT.split(text):
        key = " ".join(sentence.lower().split())
        if key and key not in written:
            written.add(key)
            fresh.append(sentence)
    return " ".join(fresh)


def _bullets(items: Sequence[Mapping[str, Any]], written: set[str]) -> list[str]:
    """One part's bullets; sentences already written are left out, and an item with none
    left is referred to, not repeated."""
    if not items:
        return ["Nothing relevant was found for this part."]
    bullets: list[str] = []
    repeated: list[str] = []
    for item in items:
        number = _first_number(item)
        cite = f" [{number}]" if number is not None else ""
        text = _new_sentences(first_string(item), written)
        if not text:
            repeated.append(cite.strip())
            continue
        bullets.append(f"- {text}{cite}")
    cites = ", ".join(dict.fromkeys(c for c in repeated if c))
    if repeated and not bullets:
        return [f"This part is answered above{': ' + cites if cites else ''}."]
    if cites:
        bullets += ["", f"See also {cites} above."]
    return bullets
