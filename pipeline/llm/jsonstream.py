"""Reading a JSON answer while the model is still writing it.

    reader = JsonEntries("children")
    for piece in pieces:                  # the answer, as Ollama streams it
        reader.feed(piece)
        reader.fields                     # top-level members complete so far: {"critique": "...", ...}
        reader.entries                    # complete entries of the "children" list so far: [{...}, {...}]
    reader.complete                       # the whole document has closed

`EntryTap` puts a reader behind an operation's own parser and hands each entry over the moment the part of the
answer read so far makes it usable, so a child can be rendered while its siblings are still being written.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional, Sequence

_SPACE = " \t\r\n"


class JsonEntries:
    """An incremental reader of one JSON document: its top-level fields and the entries of one list.

    The list is the member `key` of a top-level object, or the document itself when it is a list. Text before the
    document (a <think> block, a ``` fence, a sentence) is skipped: the document starts at the first { or [
    outside a <think> block. A value that is not valid JSON, or a bracket that does not match, stops the reading
    (`broken` says why); what was read before stays.
    """

    def __init__(self, key: str):
        self.key = key
        self.fields: dict[str, Any] = {}
        self.entries: list[Any] = []
        self.complete = False
        self.broken = ""
        self._before = ""              # text seen before the document started
        self._text = ""                # the document, from its first bracket
        self._stack: list[str] = []    # open containers, "{" or "["
        self._starts: list[int] = []   # where each open container began in _text
        self._expect_key: list[bool] = []
        self._member: Optional[str] = None    # the top-level member being read
        self._in_string = self._escape = self._reading_key = False
        self._string_start = 0
        self._scalar_start: Optional[int] = None

    def feed(self, text: str) -> None:
        if self.complete or self.broken:
            return
        if not self._text:
            self._before += text
            start = _document_start(self._before)
            if start is None:
                return
            text, self._before = self._before[start:], ""
        first = len(self._text)
        self._text += text
        for index in range(first, len(self._text)):
            self._step(self._text[index], index)
            if self.complete or self.broken:
                return

    # ---- the scanner: one character at a time, strings and escapes included ---------------------------------
    def _step(self, char: str, index: int) -> None:
        if self._in_string:
            if self._escape:
                self._escape = False
            elif char == "\\":
                self._escape = True
            elif char == '"':
                self._in_string = False
                if self._reading_key:
                    self._reading_key = False
                    if self._stack == ["{"]:
                        self._member = self._load(self._string_start, index + 1)
                else:
                    self._value_end(self._string_start, index + 1)
            return
        if self._scalar_start is not None and (char in _SPACE or char in ",}]"):
            self._value_end(self._scalar_start, index)
            self._scalar_start = None
        if char in _SPACE:
            return
        top = self._stack[-1] if self._stack else None
        if char == '"':
            self._in_string, self._string_start = True, index
            self._reading_key = top == "{" and self._expect_key[-1]
        elif char in "{[":
            self._stack.append(char)
            self._starts.append(index)
            self._expect_key.append(char == "{")
        elif char in "}]":
            if top != {"}": "{", "]": "["}[char]:
                self.broken = f"the JSON is malformed (an unmatched {char!r} at character {index})"
                return
            self._stack.pop()
            self._expect_key.pop()
            self._value_end(self._starts.pop(), index + 1)
        elif char == ":" and top == "{":
            self._expect_key[-1] = False
        elif char == "," and top == "{":
            self._expect_key[-1] = True
        elif char not in ":," and self._scalar_start is None:
            self._scalar_start = index

    def _value_end(self, start: int, end: int) -> None:
        """A value that began at `start` ends before `end`; its container is the top of the stack now."""
        if not self._stack:
            self.complete = True
        elif self._stack == ["{"]:
            value = self._load(start, end)
            if not self.broken and self._member is not None:
                self.fields[self._member] = value
        elif self._stack == ["["] or (self._stack == ["{", "["] and self._member == self.key):
            value = self._load(start, end)
            if not self.broken:
                self.entries.append(value)

    def _load(self, start: int, end: int) -> Any:
        try:
            return json.loads(self._text[start:end])
        except ValueError as exc:
            self.broken = f"the JSON is malformed ({exc.msg} in {self._text[start:end][:60]!r})"
            return None


def _document_start(text: str) -> Optional[int]:
    """Where the JSON document begins: the first { or [ outside <think>...</think>; None until it is seen."""
    lower, position = text.lower(), 0
    while True:
        brackets = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
        think = lower.find("<think>", position)
        if think >= 0 and (not brackets or think < min(brackets)):
            end = lower.find("</think>", think)
            if end < 0:
                return None
            position = end + len("</think>")
            continue
        return min(brackets) if brackets else None


class EntryTap:
    """An AnswerSink (llm.client) that reads the answer as it streams and hands over each usable entry at once.

    `parse` is the operation's own parser of a whole answer. It is applied to the part read so far (the complete
    top-level fields, and the complete entries under `key`), so an entry is handed over exactly when the whole
    answer would have kept it, in answer order, and never taken back: parse must keep earlier entries as they are
    when later ones arrive (it drops duplicates of earlier entries, never the earlier ones). `needs` names the
    fields that must be complete first (a review that is written before the entries and shared by them).
    `on_entry(value, index)` gets the parsed value so far and the position of the new entry in `entries_of(value)`.
    """

    def __init__(self, key: str, parse: Callable[[Any], Any], entries_of: Callable[[Any], Sequence],
                 on_entry: Optional[Callable[[Any, int], None]] = None, needs: Sequence[str] = ()):
        self.key = key
        self.parse = parse
        self.entries_of = entries_of
        self.on_entry = on_entry
        self.needs = tuple(needs)
        self.reader = JsonEntries(key)
        self.value: Any = None         # parse() of the part read so far, once it parses
        self.handed = 0                # entries handed over

    @property
    def used(self) -> bool:
        return self.handed > 0

    def feed(self, text: str) -> None:
        reader = self.reader
        seen = (len(reader.entries), len(reader.fields))
        reader.feed(text)
        if (len(reader.entries), len(reader.fields)) == seen or any(k not in reader.fields for k in self.needs):
            return
        try:
            value = self.parse({**reader.fields, self.key: list(reader.entries)})
        except ValueError:
            return                     # not usable yet (e.g. no usable entry so far)
        self.value = value
        entries = self.entries_of(value)
        while self.handed < len(entries):
            self.handed += 1
            if self.on_entry is not None:
                self.on_entry(value, self.handed - 1)

    def restart(self) -> bool:
        """The answer broke off: start over if nothing was handed over yet (see llm.client.AnswerSink)."""
        if self.used:
            return False
        self.reader, self.value = JsonEntries(self.key), None
        return True
