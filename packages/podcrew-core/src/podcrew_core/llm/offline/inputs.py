"""How the offline model reads a conversation and fills a tool's input from its JSON schema.

The rules are written out in `podcrew_core.llm.offline`; this module carries them out. Only
the common keywords of a tool schema matter here (`type`, `properties`, `required`, `items`,
`$ref`/`$defs`, `anyOf`/`oneOf`/`allOf`, `const`, `default`, `enum`, `minItems`,
`maxItems`, `minLength`, `maxLength`, `minimum`, `format: uri`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

from podcrew_core.llm.offline.writing import excerpt, first_string, question_parts, terms
from podcrew_core.llm.types import LLMRequest, TextBlock, ToolResultBlock, ToolUseBlock

# Items an output list gets from the records: a terse model reports a few good ones.
MAX_ITEMS_FROM_RECORDS = 4
# A forced tool that needs a URL the conversation does not hold gets this reserved one.
EXAMPLE_URL = "https://example.com/"
_MAX_DEPTH = 8
_URL = re.compile(r"https?://[^\s\"'<>)\]]+")
# A text wholly inside one element (`<untrusted>…</untrusted>`): the element marks it, the
# content is what it says.
_ENCLOSED = re.compile(r"^\s*<([A-Za-z][\w-]*)>(.*)</\1>\s*$", re.DOTALL)
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


class _Missing:
    """A value the conversation cannot supply."""


MISSING = _Missing()


@dataclass
class Conversation:
    """What the offline model takes from a request's messages."""

    subject: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    called: set[str] = field(default_factory=set)
    urls: list[str] = field(default_factory=list)


def read_conversation(request: LLMRequest) -> Conversation:
    """The data and subject of the first user message, the records of the successful tool
    results, the tools already called, and the URLs the user's text holds."""
    talk = Conversation()
    first = next((m for m in request.messages if m.role == "user"), None)
    if first is not None:
        texts = [b.text for b in first.blocks() if isinstance(b, TextBlock)]
        talk.data = next((d for d in map(_json_object, texts) if d is not None), {})
        talk.subject = first_string(talk.data) or first.text().strip().split("\n", 1)[0]
    results: list[list[dict[str, Any]]] = []
    for message in request.messages:
        for block in message.blocks():
            if isinstance(block, ToolUseBlock):
                talk.called.add(block.name)
            elif isinstance(block, ToolResultBlock) and not block.is_error:
                results.append(list(_records(block.content)))
            elif isinstance(block, TextBlock) and message.role == "user":
                talk.urls += _URL.findall(block.text)
    # In turn from each result, as a model weighing two searches draws on both rather than
    # on the first alone.
    talk.records = [r for batch in zip_longest(*results) for r in batch if r is not None]
    return talk


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _records(content: str) -> Iterator[dict[str, Any]]:
    try:
        value: Any = json.loads(content)
    except json.JSONDecodeError:
        value = {"text": content}
    stack = [value]
    while stack:  # depth first, in document order
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


class Schema:
    """One tool's input schema, with its `$defs`, read against a conversation."""

    def __init__(self, schema: Mapping[str, Any], talk: Conversation, *, forced: bool) -> None:
        self.root = dict(schema)
        self.defs: Mapping[str, Any] = schema.get("$defs", {})
        self.talk = talk
        # A forced call must be made whatever is missing; an unprompted one is not.
        self.forced = forced

    def _ref(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        target: Mapping[str, Any] = self.defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
        return target

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        """`schema` with `$ref`s followed and the first non-null branch of a union taken."""
        for _ in range(_MAX_DEPTH):
            if "$ref" in schema:
                schema = self._ref(schema)
                continue
            branches = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
            if not branches:
                break
            schema = next((b for b in branches if b.get("type") != "null"), branches[0])
        return schema

    def is_output(self) -> bool:
        """Whether the tool takes a list of objects: how a model hands back what it found."""
        properties = self.resolve(self.root).get("properties", {})
        return any(
            self.resolve(p).get("type") == "array"
            and self.resolve(self.resolve(p).get("items", {})).get("type") == "object"
            for p in properties.values()
        )

    def fill(self) -> dict[str, Any] | None:
        """The tool's input, or `None` when an unprompted call lacks something it needs."""
        value = self.value(self.root, None, self.talk.data, None, 0)
        if isinstance(value, _Missing):
            return None
        return value if isinstance(value, dict) else {}

    def fits(self, value: Any, schema: Mapping[str, Any], depth: int = 0) -> bool:
        """Whether `value` is of the schema's types, with the properties it requires."""
        if depth > _MAX_DEPTH:
            return True
        if "$ref" in schema:
            return self.fits(value, self._ref(schema), depth + 1)
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            return any(self.fits(value, b, depth + 1) for b in branches)
        if not _is(value, schema.get("type")):
            return False
        if isinstance(value, dict):
            properties = schema.get("properties", {})
            return all(k in value for k in schema.get("required", [])) and all(
                self.fits(v, properties[k], depth + 1) for k, v in value.items() if k in properties
            )
        items = schema.get("items", {})
        return not isinstance(value, list) or all(self.fits(v, items, depth + 1) for v in value)

    def value(
        self,
        schema: Mapping[str, Any],
        name: str | None,
        source: Mapping[str, Any],
        record: Mapping[str, Any] | None,
        depth: int,
    ) -> Any:
        """The value of property `name` (`None` at the top): taken from `source` by name
        when it fits, else a fixed value of the schema, else made from the conversation
        (from `record` when an item is built from one)."""
        resolved = self.resolve(schema)
        given = self._given(schema, resolved, name, source)
        if not isinstance(given, _Missing):
            return given
        if depth > _MAX_DEPTH:
            return None
        return self._made(resolved, source if name is None else {}, record, depth)

    def _made(
        self,
        schema: Mapping[str, Any],
        source: Mapping[str, Any],
        record: Mapping[str, Any] | None,
        depth: int,
    ) -> Any:
        """A value of the schema's type, made from the conversation (or `record`)."""
        kinds = schema.get("type", "object" if "properties" in schema else "null")
        kind = next((k for k in kinds if k != "null"), "null") if isinstance(kinds, list) else kinds
        if kind == "object":
            return self._object(schema, source, record, depth)
        if kind == "array":
            return self._array(schema, record, depth)
        if kind == "string":
            return self._string(schema, record)
        if kind in ("integer", "number"):
            return schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return {"boolean": False}.get(kind)

    def _given(
        self,
        schema: Mapping[str, Any],
        resolved: Mapping[str, Any],
        name: str | None,
        source: Mapping[str, Any],
    ) -> Any:
        """What is given rather than made: the value named in `source`, a `const`, a
        `default`, the first of an `enum`; else `MISSING`."""
        if name is not None and name in source and self.fits(source[name], schema):
            return source[name]
        for key in ("const", "default"):
            for where in (schema, resolved):
                if key in where:
                    return where[key]
        enum = resolved.get("enum")
        return enum[0] if enum else MISSING

    def _object(
        self,
        schema: Mapping[str, Any],
        source: Mapping[str, Any],
        record: Mapping[str, Any] | None,
        depth: int,
    ) -> dict[str, Any] | _Missing:
        required = set(schema.get("required", []))
        out: dict[str, Any] = {}
        for name, prop in schema.get("properties", {}).items():
            wanted = name in required or name in source or "default" in prop
            if not wanted:
                continue
            value = self.value(prop, name, source, record, depth + 1)
            if isinstance(value, _Missing):
                return MISSING
            out[name] = value
        return out

    def _array(
        self, schema: Mapping[str, Any], record: Mapping[str, Any] | None, depth: int
    ) -> list[Any] | _Missing:
        items = schema.get("items", {})
        fewest = int(schema.get("minItems", 0))
        most = int(schema.get("maxItems", 1_000_000))
        kind = self.resolve(items).get("type")
        built: list[Any] = []
        if record is None and kind == "object":
            built = self._items_from_records(items, min(most, MAX_ITEMS_FROM_RECORDS))
        elif record is None and kind == "string":
            longest = int(self.resolve(items).get("maxLength", len(self.talk.subject) + 100))
            built = question_parts(self.talk.subject, fewest, most, longest)
        while len(built) < fewest:
            example = self.value(items, None, {}, record, depth + 1)
            if isinstance(example, _Missing):
                return MISSING
            built.append(example)
        return built

    def _string(
        self, schema: Mapping[str, Any], record: Mapping[str, Any] | None
    ) -> str | _Missing:
        if schema.get("format") == "uri":
            if self.talk.urls:
                return self.talk.urls[0]
            return EXAMPLE_URL if self.forced else MISSING
        if record is None:
            text = self.talk.subject
        else:
            longest = max((v for v in record.values() if isinstance(v, str)), key=len, default="")
            text = excerpt(_content(longest), self.talk.subject)
            if not text:
                return MISSING
        text = text[: int(schema.get("maxLength", len(text)))]
        return text.ljust(int(schema.get("minLength", 0)), ".")

    def _by_relevance(self) -> list[dict[str, Any]]:
        """The records in the order the tools ranked them, those whose longest text shares no
        word with the subject last: what one tool found that fits beats what another found
        that does not, and a search's own ranking is not second-guessed by counting words."""
        wanted = terms(self.talk.subject)

        def off_subject(record: Mapping[str, Any]) -> bool:
            longest = max((v for v in record.values() if isinstance(v, str)), key=len, default="")
            return not terms(longest) & wanted

        return sorted(self.talk.records, key=off_subject)

    def _items_from_records(self, items: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
        """Up to `limit` items, one from each record that supplies the item's required
        objects and lists by name and has text for its strings, the most relevant first; no
        two copy the same values."""
        schema = self.resolve(items)
        properties = schema.get("properties", {})
        needed = [
            n
            for n in schema.get("required", [])
            if self.resolve(properties.get(n, {})).get("type") in ("object", "array")
        ]
        built: list[dict[str, Any]] = []
        seen: set[str] = set()
        for record in self._by_relevance():
            if len(built) >= limit:
                break
            if not all(n in record for n in needed):
                continue
            item = self._object(schema, record, record, 1)
            # Copied, not made up: a record that does not fit gives no item.
            if isinstance(item, _Missing) or any(item[n] is not record[n] for n in needed):
                continue
            key = json.dumps({n: record[n] for n in needed} or item, sort_keys=True)
            if key not in seen:
                seen.add(key)
                built.append(item)
        return built


def _content(text: str) -> str:
    """`text` without the one element that wholly encloses it, if one does."""
    enclosed = _ENCLOSED.match(text)
    return enclosed.group(2) if enclosed else text


def _is(value: Any, kinds: str | list[str] | None) -> bool:
    """Whether `value` is of one of the JSON types `kinds` (of any type when none is named)."""
    if kinds is None:
        return True
    wanted = [kinds] if isinstance(kinds, str) else kinds
    if isinstance(value, bool):  # a bool is an int to Python, not to JSON schema
        return "boolean" in wanted
    return any(isinstance(value, _TYPES.get(k, (object,))) for k in wanted)
