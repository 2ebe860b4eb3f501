"""The incremental JSON reader: entries and fields come out exactly when complete, whatever the pieces' sizes."""
import json
import random

import pytest

from pipeline.llm.jsonstream import EntryTap, JsonEntries

ANSWER = {"critique": "flat \"grey\" light, {no} [depth]", "recommendation": "a warm rim light", "reason": "",
          "score": -1.5e3, "ok": True, "none": None,
          "children": [{"how": "oil paint, warm rim light", "prompt": "a fox \\ in snow"},
                       {"how": "ink wash, cold dawn", "prompt": "a fox at dawn", "tags": ["a", {"b": [1, 2]}]},
                       "a bare string entry", 7]}


def read(text, sizes):
    reader, position, seen = JsonEntries("children"), 0, []
    rng = random.Random(sizes)
    while position < len(text):
        step = rng.randint(1, 9) if sizes == "random" else sizes
        reader.feed(text[position:position + step])
        position += step
        seen.append(len(reader.entries))
    return reader, seen


@pytest.mark.parametrize("sizes", [1, 3, 64, "random"])
def test_entries_and_fields_equal_the_whole_parse_in_any_pieces(sizes):
    text = json.dumps(ANSWER)
    reader, seen = read(text, sizes)
    assert reader.complete and not reader.broken
    assert reader.entries == ANSWER["children"]
    assert {k: v for k, v in reader.fields.items() if k != "children"} == \
        {k: v for k, v in ANSWER.items() if k != "children"}
    assert seen == sorted(seen)


def test_an_entry_is_out_the_moment_its_object_closes():
    text = json.dumps(ANSWER)
    first_close = text.index("}, {") + 1
    reader = JsonEntries("children")
    reader.feed(text[:first_close - 1])
    assert reader.entries == [] and reader.fields["critique"] == ANSWER["critique"]
    reader.feed(text[first_close - 1])
    assert reader.entries == [ANSWER["children"][0]]


def test_text_around_the_document_is_skipped():
    reader = JsonEntries("pairs")
    for piece in ["<think>maybe {\"pairs\": [1]}", " hmm</think>\n```json\n", '{"pairs": [{"a', '": 1}, {"a": 2}]}',
                  "\n```"]:
        reader.feed(piece)
    assert reader.entries == [{"a": 1}, {"a": 2}] and reader.complete


def test_a_list_document_gives_its_elements():
    reader = JsonEntries("pairs")
    reader.feed('[{"what": "x"}, {"what": "y"}')
    assert reader.entries == [{"what": "x"}, {"what": "y"}] and not reader.complete


@pytest.mark.parametrize("text, why", [('{"children": [{"a": 1}, {"a": tru}]}', "malformed"),
                                       ('{"children": [{"a": 1}}', "unmatched")])
def test_a_malformed_answer_stops_the_reading_and_keeps_what_was_read(text, why):
    reader = JsonEntries("children")
    reader.feed(text)
    assert why in reader.broken and reader.entries == [{"a": 1}] and not reader.complete


def test_the_tap_hands_over_what_the_parser_keeps_once_the_review_is_in():
    handed = []

    def parse(data):
        if not data.get("critique"):
            raise ValueError("no critique")
        kept, seen = [], set()
        for item in data["children"]:
            if item["how"] not in seen:
                seen.add(item["how"])
                kept.append(item)
        return {"critique": data["critique"], "children": kept}
    tap = EntryTap("children", parse, lambda value: value["children"], lambda value, i: handed.append(
        value["children"][i]["how"]), needs=("critique", "reason"))
    text = json.dumps({"children": [{"how": "a"}], "critique": "c", "reason": "r"})
    for char in text:
        tap.feed(char)
    assert handed == ["a"]                 # the review came after the entry: handed over once it was complete
    tap = EntryTap("children", parse, lambda value: value["children"], lambda value, i: handed.append(
        value["children"][i]["how"]), needs=("critique",))
    handed.clear()
    for char in json.dumps({"critique": "c", "children": [{"how": "a"}, {"how": "a"}, {"how": "b"}]}):
        tap.feed(char)
    assert handed == ["a", "b"] and tap.used and not tap.restart()
    fresh = EntryTap("children", parse, lambda value: value["children"])
    fresh.feed('{"critique": "c", "chi')
    assert not fresh.used and fresh.restart() and fresh.reader.fields == {}
