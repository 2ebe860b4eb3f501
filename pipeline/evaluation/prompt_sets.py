"""Prompt sets for `eval`: a user's file (`--prompts FILE`) or a set shipped with the pack (`--set NAME`).

A file holds one prompt a line; a line may start with a category and a tab (`counting<TAB>three red apples`);
blank lines and lines starting with `#` are skipped. The shipped sets live in `sets/` beside this module:

    promptbeam-v1   80 prompts, 10 in each of counting, colour-binding, spatial, text, rare-words, long, styles
                    and people-hands, written for this project
    smoke           the first prompt of each category of promptbeam-v1: a whole eval in minutes, to check a setup

`--limit N` takes N prompts spread over the categories (round robin, in file order), so a short run still
covers every kind of prompt.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import InvalidParameter

SETS_DIR = Path(__file__).with_name("sets")
MAIN_SET = "promptbeam-v1"
DERIVED_SETS = {"smoke": MAIN_SET}          # one prompt per category of the named set


@dataclass(frozen=True)
class PromptItem:
    prompt: str
    category: str = ""


def parse_prompt_lines(text: str, source: str, flag: str = "prompts") -> list[PromptItem]:
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        category, tab, prompt = line.partition("\t")
        if not tab:
            category, prompt = "", line
        prompt, category = " ".join(prompt.split()), category.strip()
        if not prompt:
            raise InvalidParameter(flag, f"{source} line {number}: category {category!r} has no prompt after its tab")
        items.append(PromptItem(prompt, category))
    if not items:
        raise InvalidParameter(flag, f"{source} holds no prompt (one a line; # starts a comment)")
    return items


def load_prompt_file(path: str, flag: str = "prompts") -> list[PromptItem]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidParameter(flag, f"{path} is not a file (one prompt a line)")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidParameter(flag, f"{path} cannot be read as UTF-8 text ({exc})") from None
    return parse_prompt_lines(text, str(file), flag)


def set_names() -> list[str]:
    return sorted([path.stem for path in SETS_DIR.glob("*.tsv")] + list(DERIVED_SETS))


def load_set(name: str, flag: str = "set") -> list[PromptItem]:
    name = (name or "").strip()
    if name in DERIVED_SETS:
        firsts: dict[str, PromptItem] = {}
        for item in load_set(DERIVED_SETS[name], flag):
            firsts.setdefault(item.category, item)
        return list(firsts.values())
    path = SETS_DIR / f"{name}.tsv"
    if not name or "/" in name or not path.is_file():
        raise InvalidParameter(flag, f"no shipped prompt set {name!r}; the sets are {', '.join(set_names())} (or "
                                     "give your own file with --prompts FILE)")
    return parse_prompt_lines(path.read_text(encoding="utf-8"), f"set {name}", flag)


def spread_limit(items: Sequence[PromptItem], limit: Optional[int], flag: str = "limit") -> list[PromptItem]:
    """At most `limit` prompts, taken round robin over the categories in the order they first appear."""
    if limit is None:
        return list(items)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidParameter(flag, f"must be a whole number >= 1, got {limit!r}")
    queues: dict[str, list[PromptItem]] = {}
    for item in items:
        queues.setdefault(item.category, []).append(item)
    chosen: list[PromptItem] = []
    while len(chosen) < min(limit, len(items)):
        for queue in queues.values():
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return chosen


def fingerprint(items: Sequence[PromptItem]) -> str:
    """sha256 of the prompts and categories, in order: which prompts an eval ran, whatever file they came from."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.category}\t{item.prompt}\n".encode("utf-8"))
    return digest.hexdigest()
