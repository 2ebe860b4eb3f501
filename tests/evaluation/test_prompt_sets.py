"""The shipped prompt sets and prompt files: categories recorded, the smoke set, --limit spread over the
categories, and files that cannot be used refused naming the flag."""
from __future__ import annotations

import pytest

from pipeline.errors import InvalidParameter
from pipeline.evaluation import prompt_sets

CATEGORIES = ["counting", "colour-binding", "spatial", "text", "rare-words", "long", "styles", "people-hands"]


def test_the_shipped_set():
    items = prompt_sets.load_set("promptbeam-v1")
    assert 60 <= len(items) <= 100
    assert list(dict.fromkeys(item.category for item in items)) == CATEGORIES
    assert all(sum(1 for i in items if i.category == c) == 10 for c in CATEGORIES)
    assert len({item.prompt for item in items}) == len(items)
    assert all('"' in item.prompt for item in items if item.category == "text")     # the words to write, quoted
    import open_clip

    tokenizer = open_clip.tokenizer.SimpleTokenizer()       # CLIP's BPE, without the 77-token cut
    # "long" prompts are past CLIP's 77 tokens: they test the truncation and what CLIP cannot read.
    long = [item.prompt for item in items if item.category == "long"]
    assert all(len(tokenizer.encode(p)) > 77 and len(p.split()) >= 70 for p in long)


def test_the_smoke_set_is_one_prompt_per_category():
    smoke = prompt_sets.load_set("smoke")
    full = prompt_sets.load_set("promptbeam-v1")
    assert [item.category for item in smoke] == CATEGORIES
    assert smoke == [next(i for i in full if i.category == c) for c in CATEGORIES]
    assert prompt_sets.set_names() == ["promptbeam-v1", "smoke"]


def test_limit_spreads_over_categories():
    items = prompt_sets.load_set("promptbeam-v1")
    ten = prompt_sets.spread_limit(items, 10)
    assert [item.category for item in ten] == CATEGORIES + CATEGORIES[:2]
    assert ten[8] == [i for i in items if i.category == "counting"][1]
    assert prompt_sets.spread_limit(items, None) == items
    assert sorted(map(id, prompt_sets.spread_limit(items, 1000))) == sorted(map(id, items))     # all, once each
    with pytest.raises(InvalidParameter, match="^limit: must be a whole number >= 1"):
        prompt_sets.spread_limit(items, 0)


def test_prompt_files(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my prompts\n\na lighthouse at dusk\ncounting\tthree   red apples\n\n", encoding="utf-8")
    assert prompt_sets.load_prompt_file(str(path)) == [prompt_sets.PromptItem("a lighthouse at dusk"),
                                                       prompt_sets.PromptItem("three red apples", "counting")]
    assert prompt_sets.fingerprint(prompt_sets.load_prompt_file(str(path))) != prompt_sets.fingerprint([])
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    bad_tab = tmp_path / "bad.txt"
    bad_tab.write_text("counting\t \n", encoding="utf-8")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    for target, words in ((empty, "holds no prompt"), (bad_tab, "line 1: category 'counting' has no prompt"),
                          (binary, "cannot be read as UTF-8"), (tmp_path / "missing.txt", "is not a file"),
                          (tmp_path, "is not a file")):
        with pytest.raises(InvalidParameter, match=f"^prompts: .*{words}"):
            prompt_sets.load_prompt_file(str(target))
    with pytest.raises(InvalidParameter, match="^set: no shipped prompt set 'drawbench'; the sets are "
                                               "promptbeam-v1, smoke"):
        prompt_sets.load_set("drawbench")
